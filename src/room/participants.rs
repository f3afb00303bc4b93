//! Participants as entities: a user ADD spawns one in a free seat, DELETE despawns it; a
//! stream ADD starts playing and attaches the feed, DELETE stops and detaches it. Feeds are
//! polled once per frame: a feed only changes when its slot holds a newer frame.

use bevy::prelude::*;
use holoroom_engine::media::{FrameSlot, SlotFrame};
use holoroom_engine::protocol::{RoomStateReason, StreamId, UserId};
use holoroom_engine::{StreamConfig, VideoSource};

use super::seating;
use crate::RoomSystems;
use crate::net::{
    EngineBridge, Me, MediaTrouble, OwnStream, PoseChanged, RoomStateChanged, StreamAdded, StreamRemoved, UserJoined,
    UserLeft,
};

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
pub struct LastError(pub Option<String>);

/// A person in the room.
#[derive(Component, Debug, Clone)]
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
}

impl VideoFeed {
    pub fn new(stream_id: Option<StreamId>, slot: FrameSlot) -> Self {
        Self {
            stream_id,
            slot,
            seen: 0,
            fresh: None,
            frames_taken: 0,
        }
    }
}

pub fn plugin(app: &mut App) {
    app.init_state::<AppState>()
        .init_resource::<LastError>()
        .add_systems(
            Update,
            (
                follow_room_state,
                users_join_and_leave,
                streams_come_and_go,
                follow_poses,
            )
                .chain()
                .in_set(RoomSystems::Participants),
        )
        .add_systems(Update, poll_feeds.in_set(RoomSystems::Feeds));
}

/// The place of a seat as a transform: a panel 1.3 m up, facing the table.
pub fn seat_transform(seat: usize) -> Transform {
    let place = seating::seat(seat);
    Transform::from_xyz(place.x, 1.3, place.z).with_rotation(Quat::from_rotation_y(place.yaw))
}

fn free_seat(taken: &Query<&Seat>) -> usize {
    seating::first_free(taken.iter().map(|s| s.0))
}

#[allow(clippy::too_many_arguments)]
fn follow_room_state(
    mut commands: Commands,
    mut messages: MessageReader<RoomStateChanged>,
    mut trouble: MessageReader<MediaTrouble>,
    mut next: ResMut<NextState<AppState>>,
    mut last_error: ResMut<LastError>,
    bridge: Option<Res<EngineBridge>>,
    me: Option<Res<Me>>,
    participants: Query<Entity, With<Participant>>,
    seats: Query<&Seat>,
) {
    for message in trouble.read() {
        last_error.0 = Some(message.0.clone());
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
                // Yourself, in a seat, with your camera (or the test pattern when there is none).
                let config = StreamConfig {
                    video: VideoSource::Camera(0),
                    ..StreamConfig::test_pattern(640, 360, 30.0)
                };
                match bridge.engine.create_stream(config) {
                    Ok(local) => {
                        if let Some(note) = local.note() {
                            last_error.0 = Some(note.to_owned());
                        }
                        let stream_id = StreamId::new(format!("{}-cam", me.user.user_id));
                        if let Ok(stream_id) = stream_id {
                            bridge.engine.start_publishing_stream(stream_id.clone(), &local);
                            commands.insert_resource(OwnStream {
                                stream_id,
                                local: local.clone(),
                            });
                        }
                        commands.spawn((
                            Name::new(format!("You ({})", me.user.user_id)),
                            Participant {
                                user_id: me.user.user_id.clone(),
                                name: me.user.user_name.clone(),
                            },
                            LocalParticipant,
                            Seat(free_seat(&seats)),
                            seat_transform(free_seat(&seats)),
                            VideoFeed::new(None, local.preview().clone()),
                        ));
                    }
                    Err(err) => last_error.0 = Some(format!("can't capture video: {err}")),
                }
            }
            RoomStateReason::Reconnecting | RoomStateReason::Reconnected => {}
            RoomStateReason::LoginFailed
            | RoomStateReason::Kickout
            | RoomStateReason::Logout
            | RoomStateReason::LogoutFailed
            | RoomStateReason::ReconnectFailed => {
                next.set(AppState::Login);
                if message.error.is_some() {
                    last_error.0.clone_from(&message.error);
                }
                for entity in &participants {
                    commands.entity(entity).despawn();
                }
                commands.remove_resource::<OwnStream>();
            }
        }
    }
}

fn users_join_and_leave(
    mut commands: Commands,
    mut joined: MessageReader<UserJoined>,
    mut left: MessageReader<UserLeft>,
    participants: Query<(Entity, &Participant)>,
    seats: Query<&Seat>,
) {
    // Departures first: a user who left and came back within one frame (a second login)
    // must end up present.
    let mut gone = Vec::new();
    for UserLeft(user_id) in left.read() {
        for (entity, participant) in &participants {
            if participant.user_id == *user_id {
                commands.entity(entity).despawn();
                gone.push(entity);
            }
        }
    }
    let mut taken: Vec<usize> = seats.iter().map(|s| s.0).collect();
    for UserJoined(user) in joined.read() {
        if participants
            .iter()
            .any(|(e, p)| p.user_id == user.user_id && !gone.contains(&e))
        {
            continue;
        }
        let seat = seating::first_free(taken.iter().copied());
        taken.push(seat);
        commands.spawn((
            Name::new(format!("Participant {}", user.user_id)),
            Participant {
                user_id: user.user_id.clone(),
                name: user.user_name.clone(),
            },
            Seat(seat),
            seat_transform(seat),
        ));
    }
}

fn streams_come_and_go(
    mut commands: Commands,
    bridge: Option<Res<EngineBridge>>,
    mut added: MessageReader<StreamAdded>,
    mut removed: MessageReader<StreamRemoved>,
    participants: Query<(Entity, &Participant, Option<&VideoFeed>), Without<LocalParticipant>>,
    seats: Query<&Seat>,
) {
    let Some(bridge) = bridge else {
        return;
    };
    // Removals first, so a stream deleted and added again in one frame ends up playing.
    for StreamRemoved(stream) in removed.read() {
        bridge.engine.stop_playing_stream(stream.stream_id.clone());
        for (entity, _, feed) in &participants {
            if feed.is_some_and(|f| f.stream_id.as_ref() == Some(&stream.stream_id)) {
                commands.entity(entity).remove::<VideoFeed>();
            }
        }
    }
    let mut taken: Vec<usize> = seats.iter().map(|s| s.0).collect();
    for StreamAdded(stream) in added.read() {
        let remote = bridge.engine.start_playing_stream(stream.stream_id.clone());
        let feed = VideoFeed::new(Some(stream.stream_id.clone()), remote.video);
        let owner = participants.iter().find(|(_, p, _)| p.user_id == stream.user.user_id);
        match owner {
            Some((entity, _, _)) => {
                commands.entity(entity).insert(feed);
            }
            None => {
                // Without user updates (or before the user's ADD) the stream brings its publisher.
                let seat = seating::first_free(taken.iter().copied());
                taken.push(seat);
                commands.spawn((
                    Name::new(format!("Participant {}", stream.user.user_id)),
                    Participant {
                        user_id: stream.user.user_id.clone(),
                        name: stream.user.user_name.clone(),
                    },
                    Seat(seat),
                    seat_transform(seat),
                    feed,
                ));
            }
        }
    }
}

fn follow_poses(mut poses: MessageReader<PoseChanged>, mut participants: Query<(&Participant, &mut Transform)>) {
    for change in poses.read() {
        for (participant, mut transform) in &mut participants {
            if participant.user_id == change.user_id {
                let [x, y, z] = change.pose.position;
                let [qx, qy, qz, qw] = change.pose.orientation;
                transform.translation = Vec3::new(x, y, z);
                transform.rotation = Quat::from_xyzw(qx, qy, qz, qw).normalize();
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
