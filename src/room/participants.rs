//! Participants as entities: a user ADD spawns one in a free seat, DELETE despawns it; a
//! stream ADD starts playing and attaches the feed and the voice, DELETE stops and detaches them. Feeds are
//! polled once per frame: a feed only changes when its slot holds a newer frame.

use bevy::prelude::*;
use holoroom_engine::media::{AudioBuffer, FrameSlot, SlotFrame};
use holoroom_engine::protocol::{Pose, RoomStateReason, StreamId, StreamMute, UserId, UserInfo};
use holoroom_engine::{AudioSource, LocalStream, StreamConfig, StreamError, VideoSource};

use super::seating;
use crate::RoomSystems;
use crate::net::{EngineBridge, FeedState, Me, MediaTrouble, OwnStream, Problem, RoomStateChanged, RoomUpdate};

/// Where the app is.
#[derive(States, Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AppState {
    #[default]
    Login,
    Connecting,
    InCall,
}

/// The last thing that went wrong, for the overlay.
#[derive(Resource, Debug, Default, Clone)]
pub struct LastError(pub Option<Problem>);

/// The connection to the room dropped and the engine is getting it back (the call goes on
/// with what was playing).
#[derive(Resource, Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reconnecting(pub bool);

/// A person in the room (an entity with a place in it: their screen and figure hang off it).
#[derive(Component, Debug, Clone)]
#[require(Transform, Visibility)]
pub struct Participant {
    pub user_id: UserId,
    pub name: String,
}

/// This client's own entity.
#[derive(Component, Debug)]
pub struct LocalParticipant;

/// Which seat a participant holds; kept while others come and go.
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seat(pub usize);

/// A video stream shown on a participant's panel.
#[derive(Component, Debug, Clone)]
pub struct VideoFeed {
    /// The played stream, or None for the local preview.
    pub stream_id: Option<StreamId>,
    pub slot: FrameSlot,
    /// Sequence number of the newest frame taken from the slot.
    pub seen: u64,
    /// The newest frame not yet shown, if one arrived since the last upload.
    pub fresh: Option<SlotFrame>,
    /// Frames taken from the slot so far.
    pub frames_taken: u64,
    /// The stream's media path failed and is being set up again (the last frame stays up).
    pub reconnecting: bool,
}

/// Which of a participant's played stream's media its publisher switched off: a muted
/// microphone shows on their plate, a camera that is off as their initials instead of a
/// picture.
#[derive(Component, Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MediaMute(pub StreamMute);

/// The sound of the stream a participant's entity plays; the audio module makes it a voice
/// heard from where the entity is.
#[derive(Component, Debug, Clone)]
pub struct PlayedAudio {
    pub stream_id: StreamId,
    pub buffer: AudioBuffer,
}

impl VideoFeed {
    pub fn new(stream_id: Option<StreamId>, slot: FrameSlot) -> Self {
        Self {
            stream_id,
            slot,
            seen: 0,
            fresh: None,
            frames_taken: 0,
            reconnecting: false,
        }
    }
}

pub fn plugin(app: &mut App) {
    app.init_state::<AppState>()
        .init_resource::<LastError>()
        .init_resource::<Reconnecting>()
        .init_resource::<MediaChoice>()
        .add_systems(
            Update,
            (
                follow_room_state,
                apply_room_updates,
                follow_media_choice,
                finish_own_stream,
            )
                .chain()
                .in_set(RoomSystems::Participants),
        )
        .add_systems(
            Update,
            (follow_feed_states, poll_feeds, send_pose).in_set(RoomSystems::Feeds),
        );
}

/// What this client publishes: which camera and microphone (or stand-ins).
#[derive(Resource, Debug, Clone, PartialEq)]
pub struct MediaChoice {
    pub video: VideoSource,
    pub audio: AudioSource,
    /// The microphone for [`AudioSource::Microphone`]; None for the default one.
    pub microphone: Option<String>,
}

impl Default for MediaChoice {
    fn default() -> Self {
        MediaChoice {
            video: VideoSource::Camera(0),
            audio: AudioSource::Microphone,
            microphone: None,
        }
    }
}

/// Your stream while its devices open (off the frame), and the mute state it starts with.
#[derive(Resource, Debug)]
struct OpeningStream {
    stream: crossbeam_channel::Receiver<Result<LocalStream, StreamError>>,
    muted: (bool, bool),
}

/// Asks the engine for your stream as `choice` says; it is published once it has opened.
fn open_own_stream(commands: &mut Commands, bridge: &EngineBridge, choice: &MediaChoice, muted: (bool, bool)) {
    let config = StreamConfig {
        video: choice.video.clone(),
        audio: choice.audio,
        microphone: choice.microphone.clone(),
        ..StreamConfig::test_pattern(640, 360, 30.0)
    };
    commands.insert_resource(OpeningStream {
        stream: bridge.engine.create_stream_later(config),
        muted,
    });
}

/// Your stream opened (or fell back to a stand-in, saying why; or failed): it is published
/// and shown in your seat. One that opens after you left is let go.
fn finish_own_stream(
    mut commands: Commands,
    opening: Option<Res<OpeningStream>>,
    bridge: Option<Res<EngineBridge>>,
    me: Option<Res<Me>>,
    mut last_error: ResMut<LastError>,
    local: Query<Entity, With<LocalParticipant>>,
) {
    let Some(opening) = opening else {
        return;
    };
    let result = match opening.stream.try_recv() {
        Ok(result) => result,
        Err(crossbeam_channel::TryRecvError::Empty) => return,
        Err(crossbeam_channel::TryRecvError::Disconnected) => {
            commands.remove_resource::<OpeningStream>();
            return;
        }
    };
    commands.remove_resource::<OpeningStream>();
    let (Some(bridge), Some(me), Ok(entity)) = (bridge, me, local.single()) else {
        if let Ok(stream) = result {
            stream.destroy();
        }
        return;
    };
    let stream_id = match StreamId::new(format!("{}-cam", me.user.user_id)) {
        Ok(id) => id,
        Err(err) => {
            last_error.0 = Some(Problem::Stream(format!("no stream ID for you: {err}")));
            return;
        }
    };
    match result {
        Ok(stream) => {
            stream.set_video_muted(opening.muted.0);
            stream.set_audio_muted(opening.muted.1);
            bridge.engine.start_publishing_stream(stream_id.clone(), &stream);
            // A stand-in for a missing device is not a problem: the call bar says it, from
            // the stream's own note.
            commands
                .entity(entity)
                .insert(VideoFeed::new(None, stream.preview().clone()));
            commands.insert_resource(OwnStream {
                stream_id,
                local: stream,
            });
        }
        Err(err) => last_error.0 = Some(Problem::Stream(err.to_string())),
    }
}

/// A new camera or microphone chosen during a call: the stream is replaced under the same ID
/// (everyone sees DELETE then ADD), keeping camera-off and mute as they were.
fn follow_media_choice(
    mut commands: Commands,
    choice: Res<MediaChoice>,
    bridge: Option<Res<EngineBridge>>,
    me: Option<Res<Me>>,
    own: Option<Res<OwnStream>>,
    opening: Option<Res<OpeningStream>>,
    mut last_error: ResMut<LastError>,
    local: Query<Entity, With<LocalParticipant>>,
) {
    if !choice.is_changed() || choice.is_added() {
        return;
    }
    let (Some(bridge), Some(_), Ok(_)) = (bridge, me, local.single()) else {
        return;
    };
    // Muting carries over; a stream that failed earlier is simply started afresh.
    let mut muted = opening.map_or((false, false), |o| o.muted);
    if let Some(own) = &own {
        bridge.engine.stop_publishing_stream(own.stream_id.clone());
        bridge.engine.destroy_stream(&own.local);
        muted = (own.local.is_video_muted(), own.local.is_audio_muted());
        commands.remove_resource::<OwnStream>();
    }
    last_error.0 = None;
    open_own_stream(&mut commands, &bridge, &choice, muted);
}

/// The place of a seat as a transform: a panel 1.3 m up, facing the table.
pub fn seat_transform(seat: usize) -> Transform {
    let place = seating::seat(seat);
    Transform::from_xyz(place.x, place.floor + 1.3, place.z).with_rotation(Quat::from_rotation_y(place.yaw))
}

fn free_seat(taken: &Query<&Seat>) -> usize {
    seating::first_free(taken.iter().map(|s| s.0))
}

fn follow_room_state(
    mut commands: Commands,
    mut messages: MessageReader<RoomStateChanged>,
    mut trouble: MessageReader<MediaTrouble>,
    mut next: ResMut<NextState<AppState>>,
    mut last_error: ResMut<LastError>,
    mut reconnecting: ResMut<Reconnecting>,
    bridge: Option<Res<EngineBridge>>,
    me: Option<Res<Me>>,
    participants: Query<Entity, With<Participant>>,
    seats: Query<&Seat>,
    choice: Res<MediaChoice>,
) {
    for news in trouble.read() {
        match news {
            MediaTrouble::Began(problem) => last_error.0 = Some(problem.clone()),
            // A stream's trouble is over once its media flows again.
            MediaTrouble::Over(stream_id) => {
                if let Some(Problem::Play { stream_id: failed, .. } | Problem::Publish { stream_id: failed, .. }) =
                    &last_error.0
                    && failed == stream_id
                {
                    last_error.0 = None;
                }
            }
        }
    }
    for message in messages.read() {
        match message.reason {
            RoomStateReason::Logining => next.set(AppState::Connecting),
            RoomStateReason::Logined => {
                next.set(AppState::InCall);
                last_error.0 = None;
                let (Some(bridge), Some(me)) = (&bridge, &me) else {
                    continue;
                };
                if me.spectator {
                    continue;
                }
                // Yourself, in a seat; your camera (or the test pattern when there is none)
                // joins once it has opened.
                let seat = free_seat(&seats);
                commands.spawn((
                    Name::new(format!("You ({})", me.user.user_id)),
                    Participant {
                        user_id: me.user.user_id.clone(),
                        name: me.user.user_name.clone(),
                    },
                    LocalParticipant,
                    Seat(seat),
                    seat_transform(seat),
                ));
                open_own_stream(&mut commands, bridge, &choice, (false, false));
            }
            RoomStateReason::Reconnecting => reconnecting.0 = true,
            RoomStateReason::Reconnected => {
                reconnecting.0 = false;
                if matches!(last_error.0, Some(Problem::Retrying { .. })) {
                    last_error.0 = None;
                }
            }
            RoomStateReason::LoginFailed
            | RoomStateReason::Kickout
            | RoomStateReason::Logout
            | RoomStateReason::LogoutFailed
            | RoomStateReason::ReconnectFailed => {
                next.set(AppState::Login);
                reconnecting.0 = false;
                if message.error.is_some() {
                    last_error.0.clone_from(&message.error);
                }
                for entity in &participants {
                    commands.entity(entity).despawn();
                }
                commands.remove_resource::<OwnStream>();
                commands.remove_resource::<OpeningStream>();
            }
        }
    }
}

/// Applies the room's updates in the order they came: users spawn and despawn, streams start
/// playing on their publisher's entity (spawning it when the stream came first) and stop.
fn apply_room_updates(
    mut commands: Commands,
    bridge: Option<Res<EngineBridge>>,
    mut updates: MessageReader<RoomUpdate>,
    participants: Query<(Entity, &Participant, &Seat, Option<&VideoFeed>)>,
    local: Query<Entity, With<LocalParticipant>>,
) {
    if updates.is_empty() {
        return;
    }
    let local = local.single().ok();
    // The room as this frame's commands will leave it, so that later updates in the same
    // frame see the effects of earlier ones.
    let mut present: Vec<(UserId, Entity, usize)> = participants
        .iter()
        .map(|(entity, p, seat, _)| (p.user_id.clone(), entity, seat.0))
        .collect();
    let mut feeds: Vec<(Entity, StreamId)> = participants
        .iter()
        .filter_map(|(entity, _, _, feed)| Some((entity, feed?.stream_id.clone()?)))
        .collect();
    let find = |present: &[(UserId, Entity, usize)], user_id: &UserId| {
        present.iter().find(|(id, _, _)| id == user_id).map(|(_, e, _)| *e)
    };
    let spawn = |commands: &mut Commands, present: &mut Vec<(UserId, Entity, usize)>, user: &UserInfo| {
        let seat = seating::first_free(present.iter().map(|(_, _, s)| *s));
        let entity = commands
            .spawn((
                Name::new(format!("Participant {}", user.user_id)),
                Participant {
                    user_id: user.user_id.clone(),
                    name: user.user_name.clone(),
                },
                Seat(seat),
                seat_transform(seat),
            ))
            .id();
        present.push((user.user_id.clone(), entity, seat));
        entity
    };
    for update in updates.read() {
        match update {
            RoomUpdate::UserJoined(user) => {
                if find(&present, &user.user_id).is_none() {
                    spawn(&mut commands, &mut present, user);
                }
            }
            RoomUpdate::UserLeft(user_id) => {
                if let Some(entity) = find(&present, user_id) {
                    commands.entity(entity).despawn();
                    present.retain(|(_, e, _)| *e != entity);
                    feeds.retain(|(e, _)| *e != entity);
                }
            }
            RoomUpdate::StreamAdded(stream) => {
                let Some(bridge) = &bridge else { continue };
                if local.is_some() && find(&present, &stream.user.user_id) == local {
                    continue; // your own stream: the self-view shows it already
                }
                let remote = bridge.engine.start_playing_stream(stream.stream_id.clone());
                // Without user updates (or before the user's ADD) the stream brings its publisher.
                let entity = match find(&present, &stream.user.user_id) {
                    Some(entity) => entity,
                    None => spawn(&mut commands, &mut present, &stream.user),
                };
                // A new playback starts at the full layer: the view decides again.
                commands.entity(entity).remove::<crate::quality::ViewQuality>();
                commands.entity(entity).insert((
                    MediaMute(stream.mute),
                    VideoFeed::new(Some(stream.stream_id.clone()), remote.video),
                    PlayedAudio {
                        stream_id: stream.stream_id.clone(),
                        buffer: remote.audio,
                    },
                ));
                feeds.retain(|(e, _)| *e != entity);
                feeds.push((entity, stream.stream_id.clone()));
            }
            RoomUpdate::StreamRemoved(stream) => {
                if let Some(bridge) = &bridge {
                    bridge.engine.stop_playing_stream(stream.stream_id.clone());
                }
                if let Some(at) = feeds.iter().position(|(_, id)| *id == stream.stream_id) {
                    let (entity, _) = feeds.swap_remove(at);
                    commands
                        .entity(entity)
                        .remove::<(VideoFeed, PlayedAudio, MediaMute, crate::quality::ViewQuality)>();
                }
            }
            RoomUpdate::StreamMuted(stream) => {
                if let Some((entity, _)) = feeds.iter().find(|(_, id)| *id == stream.stream_id) {
                    commands.entity(*entity).insert(MediaMute(stream.mute));
                }
            }
            RoomUpdate::Moved { user_id, pose } => {
                if let Some((_, entity, seat)) = present.iter().find(|(id, _, _)| id == user_id)
                    && Some(*entity) != local
                {
                    commands
                        .entity(*entity)
                        .insert(seat_transform(*seat) * pose_transform(pose));
                }
            }
        }
    }
}

/// A pose from the wire as a transform relative to the participant's seat (orientation
/// normalised). Poses are seat-relative because every viewer seats the room around themselves.
pub fn pose_transform(pose: &Pose) -> Transform {
    let [x, y, z] = pose.position;
    let [qx, qy, qz, qw] = pose.orientation;
    Transform::from_xyz(x, y, z).with_rotation(Quat::from_xyzw(qx, qy, qz, qw).normalize())
}

/// A transform relative to the participant's seat, as a pose for the wire.
pub fn transform_pose(transform: &Transform) -> Pose {
    let q = transform.rotation;
    Pose {
        position: transform.translation.to_array(),
        orientation: [q.x, q.y, q.z, q.w],
    }
}

/// How often a moving participant's pose goes out, at most.
pub const POSE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(66);

/// Sends the local participant's pose (relative to their seat) when it changed, at most every
/// [`POSE_INTERVAL`]; the last pose of a move always goes out.
fn send_pose(
    time: Res<Time<Real>>,
    bridge: Option<Res<EngineBridge>>,
    me: Query<(&Seat, Ref<Transform>), With<LocalParticipant>>,
    mut last: Local<Option<(std::time::Duration, Transform)>>,
) {
    let (Some(bridge), Ok((seat, transform))) = (bridge, me.single()) else {
        *last = None;
        return;
    };
    let now = time.elapsed();
    let relative = seat_transform(seat.0).compute_affine().inverse() * transform.compute_affine();
    let relative = Transform::from_matrix(relative.into());
    match *last {
        Some((_, sent)) if sent == relative => return,
        Some((at, _)) if now.saturating_sub(at) < POSE_INTERVAL => return,
        // A fresh seat is the identity pose everyone assumes: nothing to say.
        None if transform.is_added() && relative.translation.length() < 1e-4 => {
            *last = Some((now, relative));
            return;
        }
        _ => {}
    }
    bridge.engine.set_pose(transform_pose(&relative));
    *last = Some((now, relative));
}

/// Marks feeds whose media is being set up again, and clears the mark once it plays.
fn follow_feed_states(mut states: MessageReader<FeedState>, mut feeds: Query<&mut VideoFeed>) {
    for state in states.read() {
        for mut feed in &mut feeds {
            if feed.stream_id.as_ref() == Some(&state.stream_id) && feed.reconnecting != state.reconnecting {
                feed.reconnecting = state.reconnecting;
            }
        }
    }
}

/// Takes each feed's newest frame, if there is one it has not seen.
fn poll_feeds(mut feeds: Query<&mut VideoFeed>) {
    for mut feed in &mut feeds {
        if let Some(frame) = feed.slot.newer_than(feed.seen) {
            feed.seen = frame.sequence;
            feed.frames_taken += 1;
            feed.fresh = Some(frame);
        }
    }
}
