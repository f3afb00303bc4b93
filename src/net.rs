//! The bridge to the engine: drains the engine's channel into Messages once per frame and
//! carries the app's intents back. Nothing here waits on the network.

use std::sync::Arc;
use std::time::Duration;

use bevy::prelude::*;
use holoroom_engine::protocol::{
    ChatMessage, KickoutReason, LoginConfig, Pose, RoomId, RoomStateReason, StreamId, StreamInfo, UpdateType, UserId,
    UserInfo,
};
use holoroom_engine::{
    Engine, EngineEvent, LocalStream, MediaError, PlayerState, PublisherState, RequestKind, RoomError, StreamQuality,
};

use crate::RoomSystems;

/// Mints a token for (room, user, name, spectator), with keys this process holds.
pub type MintToken = Arc<dyn Fn(&str, &str, &str, bool) -> Option<String> + Send + Sync>;

/// How this client gets its tokens. The engine asks again before each one expires.
#[derive(Clone)]
pub enum TokenSource {
    /// A token given on the command line (not renewed).
    Fixed(String),
    /// Minted here with the embedded server's keys.
    Mint(MintToken),
    /// Asked of the room server at this signaling URL (its guest endpoint, dev mode).
    Guest(String),
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Fixed(_) => f.write_str("TokenSource::Fixed"),
            TokenSource::Mint(_) => f.write_str("TokenSource::Mint"),
            TokenSource::Guest(url) => write!(f, "TokenSource::Guest({url})"),
        }
    }
}

impl TokenSource {
    /// The engine's token source for joining as a participant or (`spectate`) a spectator.
    pub fn for_join(&self, spectate: bool) -> holoroom_engine::TokenSource {
        match self {
            TokenSource::Fixed(token) => holoroom_engine::TokenSource::Fixed(token.clone()),
            TokenSource::Mint(mint) => {
                let mint = mint.clone();
                holoroom_engine::TokenSource::mint(move |request: &holoroom_engine::TokenRequest| {
                    let (room, user) = (request.room_id.as_str(), request.user.user_id.as_str());
                    mint(room, user, &request.user.user_name, spectate)
                        .ok_or_else(|| format!("no token for {user} in room {room}"))
                })
            }
            TokenSource::Guest(server_url) => holoroom_engine::TokenSource::Guest {
                server_url: server_url.clone(),
                spectator: spectate,
            },
        }
    }
}

/// Who is speaking in the room, loudest first, as the server last said (absent outside a room).
#[derive(Resource, Debug, Clone, Default, PartialEq)]
pub struct ActiveSpeakers(pub Vec<UserId>);

/// The room's chat as this client has it, oldest first (emptied on leaving).
#[derive(Resource, Debug, Clone, Default, PartialEq)]
pub struct ChatLog {
    pub messages: Vec<ChatMessage>,
    /// Messages from others since the chat was last seen.
    pub unread: usize,
    /// What is typed and not sent yet (it stays with the room).
    pub draft: String,
}

impl ChatLog {
    /// How many messages are kept; older ones scroll away.
    pub const KEPT: usize = 500;

    /// Adds a message; `seen` ones (yours, or what the room had said before you came) are
    /// not news.
    fn add(&mut self, message: ChatMessage, seen: bool) {
        if !seen {
            self.unread += 1;
        }
        self.messages.push(message);
        if self.messages.len() > Self::KEPT {
            self.messages.remove(0);
        }
    }
}

/// The engine, shared by the systems that talk to it.
#[derive(Resource, Clone)]
pub struct EngineBridge {
    pub engine: Arc<Engine>,
    pub tokens: TokenSource,
}

impl std::fmt::Debug for EngineBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBridge")
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

/// Something to tell the person, typed; the overlay turns it into a sentence
/// (`crate::ui::sentence`).
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// The room server refused, or could not be reached.
    Room(RoomError),
    /// Getting back into the room: an attempt failed, the next is in `retry_in`.
    Retrying { error: RoomError, retry_in: Duration },
    /// Removed from the room.
    Kickout(KickoutReason),
    /// A room or user ID that no room server would take.
    BadId(String),
    /// Your own stream failed (or is being set up again).
    Publish { stream_id: StreamId, error: MediaError },
    /// Someone else's stream failed for you (or is being set up again).
    Play { stream_id: StreamId, error: MediaError },
    /// A request without a state of its own failed (a pose, a token renewal).
    Request { request: RequestKind, error: RoomError },
    /// Your stream could not be started.
    Stream(String),
}

/// The room's state changed (Logining, Logined, Kickout, ...).
#[derive(Message, Debug, Clone)]
pub struct RoomStateChanged {
    pub reason: RoomStateReason,
    /// Why, when something went wrong.
    pub error: Option<Problem>,
}

/// A change to who is in the room, what they publish and where they are, in the order the
/// server reported it. One ordered stream, so "joined then left" and "left then joined" within a
/// single frame both end where the server ended.
#[derive(Message, Debug, Clone)]
pub enum RoomUpdate {
    UserJoined(UserInfo),
    UserLeft(UserId),
    StreamAdded(StreamInfo),
    StreamRemoved(StreamInfo),
    /// A stream's microphone or camera went off or on (its `mute` is the new state).
    StreamMuted(StreamInfo),
    Moved {
        user_id: UserId,
        pose: Pose,
    },
}

/// A publish or play quality report.
#[derive(Message, Debug, Clone)]
pub struct QualityUpdated {
    pub stream_id: StreamId,
    pub publishing: bool,
    pub quality: StreamQuality,
}

/// A publisher, player or request problem worth showing began, or a stream's is over (its
/// media flows again): one ordered stream of news, so the last word stands.
#[derive(Message, Debug, Clone, PartialEq)]
pub enum MediaTrouble {
    Began(Problem),
    Over(StreamId),
}

/// Whether a played stream's media path failed and is being set up again.
#[derive(Message, Debug, Clone)]
pub struct FeedState {
    pub stream_id: StreamId,
    pub reconnecting: bool,
}

/// Ask to join a room.
#[derive(Message, Debug, Clone)]
pub struct JoinRoom {
    pub room: String,
    pub user: String,
    pub name: String,
    pub spectate: bool,
}

/// Ask to leave the room.
#[derive(Message, Debug, Clone, Default)]
pub struct LeaveRoom;

/// Who this client is in the room: present from Logined until the room is left.
#[derive(Resource, Debug, Clone)]
pub struct Me {
    pub room_id: RoomId,
    pub user: UserInfo,
    pub spectator: bool,
}

/// Who this client asked to be, until the login is answered.
#[derive(Resource, Debug, Clone)]
struct Joining(Me);

/// This client's own camera stream while in a room as a participant.
#[derive(Resource, Debug, Clone)]
pub struct OwnStream {
    pub stream_id: StreamId,
    pub local: LocalStream,
}

pub fn plugin(app: &mut App) {
    app.add_message::<RoomStateChanged>()
        .init_resource::<ChatLog>()
        .add_message::<RoomUpdate>()
        .add_message::<QualityUpdated>()
        .add_message::<MediaTrouble>()
        .add_message::<FeedState>()
        .add_message::<JoinRoom>()
        .add_message::<LeaveRoom>()
        .add_systems(
            Update,
            (handle_intents, drain_engine).chain().in_set(RoomSystems::Network),
        );
}

/// Turns the app's intents into engine calls.
fn handle_intents(
    mut commands: Commands,
    bridge: Option<Res<EngineBridge>>,
    mut joins: MessageReader<JoinRoom>,
    mut leaves: MessageReader<LeaveRoom>,
    mut states: MessageWriter<RoomStateChanged>,
    own: Option<Res<OwnStream>>,
) {
    let Some(bridge) = bridge else {
        return;
    };
    let mut failed = |error: String| {
        states.write(RoomStateChanged {
            reason: RoomStateReason::LoginFailed,
            error: Some(Problem::BadId(error)),
        });
    };
    for join in joins.read() {
        // Bad IDs are named as such before any token is asked for.
        if let Err(error) = RoomId::new(join.room.clone())
            .map(drop)
            .and_then(|()| UserId::new(join.user.clone()).map(drop))
        {
            failed(error.to_string());
            continue;
        }
        login(&mut commands, &bridge, join).unwrap_or_else(&mut failed);
    }
    for _ in leaves.read() {
        if let Some(own) = &own {
            bridge.engine.stop_publishing_stream(own.stream_id.clone());
            bridge.engine.destroy_stream(&own.local);
            commands.remove_resource::<OwnStream>();
        }
        bridge.engine.logout_room();
    }
}

/// Logs in as `join` says; the engine gets its token from the app's source.
fn login(commands: &mut Commands, bridge: &EngineBridge, join: &JoinRoom) -> Result<(), String> {
    let room_id = RoomId::new(join.room.clone()).map_err(|e| e.to_string())?;
    let user_id = UserId::new(join.user.clone()).map_err(|e| e.to_string())?;
    let user = UserInfo {
        user_id,
        user_name: join.name.clone(),
    };
    commands.insert_resource(Joining(Me {
        room_id: room_id.clone(),
        user: user.clone(),
        spectator: join.spectate,
    }));
    let tokens = bridge.tokens.for_join(join.spectate);
    bridge
        .engine
        .login_room(room_id, tokens, user, LoginConfig { user_update: true });
    Ok(())
}

/// Drains every engine event that arrived since the last frame into Messages.
fn drain_engine(
    mut commands: Commands,
    joining: Option<Res<Joining>>,
    bridge: Option<Res<EngineBridge>>,
    mut states: MessageWriter<RoomStateChanged>,
    mut updates: MessageWriter<RoomUpdate>,
    mut quality: MessageWriter<QualityUpdated>,
    mut trouble: MessageWriter<MediaTrouble>,
    mut feeds: MessageWriter<FeedState>,
    (me, mut chat): (Option<Res<Me>>, ResMut<ChatLog>),
) {
    let Some(bridge) = bridge else {
        return;
    };
    for event in bridge.engine.events().try_iter() {
        match event {
            EngineEvent::RoomStateChanged {
                reason, error, kickout, ..
            } => {
                let error = match (error, kickout) {
                    (Some(e), _) => Some(Problem::Room(e)),
                    (None, Some(k)) => Some(Problem::Kickout(k)),
                    (None, None) => None,
                };
                match reason {
                    RoomStateReason::Logined => {
                        if let Some(joining) = &joining {
                            commands.insert_resource(joining.0.clone());
                        }
                        commands.remove_resource::<Joining>();
                    }
                    RoomStateReason::LoginFailed
                    | RoomStateReason::Logout
                    | RoomStateReason::LogoutFailed
                    | RoomStateReason::Kickout
                    | RoomStateReason::ReconnectFailed => {
                        commands.remove_resource::<Me>();
                        commands.remove_resource::<Joining>();
                        commands.remove_resource::<ActiveSpeakers>();
                        *chat = ChatLog::default();
                    }
                    RoomStateReason::Logining | RoomStateReason::Reconnecting | RoomStateReason::Reconnected => {}
                }
                states.write(RoomStateChanged { reason, error });
            }
            EngineEvent::RoomUserUpdate { update, users, .. } => {
                updates.write_batch(users.into_iter().map(|user| match update {
                    UpdateType::Add => RoomUpdate::UserJoined(user),
                    UpdateType::Delete => RoomUpdate::UserLeft(user.user_id),
                }));
            }
            EngineEvent::RoomStreamUpdate { update, streams, .. } => {
                updates.write_batch(streams.into_iter().map(|stream| match update {
                    UpdateType::Add => RoomUpdate::StreamAdded(stream),
                    UpdateType::Delete => RoomUpdate::StreamRemoved(stream),
                }));
            }
            EngineEvent::StreamMuteUpdate { streams, .. } => {
                updates.write_batch(streams.into_iter().map(RoomUpdate::StreamMuted));
            }
            EngineEvent::PoseUpdate { user_id, pose, .. } => {
                updates.write(RoomUpdate::Moved { user_id, pose });
            }
            EngineEvent::PublishQualityUpdate { stream_id, quality: q } => {
                quality.write(QualityUpdated {
                    stream_id,
                    publishing: true,
                    quality: q,
                });
            }
            EngineEvent::PlayQualityUpdate { stream_id, quality: q } => {
                quality.write(QualityUpdated {
                    stream_id,
                    publishing: false,
                    quality: q,
                });
            }
            // Not in a room: the answer to a stop that raced the app's own leaving.
            EngineEvent::PublisherStateUpdate {
                error: Some(MediaError::NotInRoom),
                ..
            } => {}
            EngineEvent::PublisherStateUpdate {
                stream_id,
                error: Some(error),
                ..
            } => {
                trouble.write(MediaTrouble::Began(Problem::Publish { stream_id, error }));
            }
            EngineEvent::PublisherStateUpdate {
                stream_id,
                state: PublisherState::Publishing,
                error: None,
            } => {
                trouble.write(MediaTrouble::Over(stream_id));
            }
            EngineEvent::PlayerStateUpdate {
                stream_id,
                state,
                error,
            } => {
                let reconnecting = state == PlayerState::Requesting && error.is_some();
                if state == PlayerState::Playing && error.is_none() {
                    trouble.write(MediaTrouble::Over(stream_id.clone()));
                }
                if let Some(error) = error.filter(|e| *e != MediaError::NotInRoom) {
                    trouble.write(MediaTrouble::Began(Problem::Play {
                        stream_id: stream_id.clone(),
                        error,
                    }));
                }
                feeds.write(FeedState {
                    stream_id,
                    reconnecting,
                });
            }
            EngineEvent::ReconnectRetry { error, retry_in, .. } => {
                trouble.write(MediaTrouble::Began(Problem::Retrying { error, retry_in }));
            }
            EngineEvent::RequestFailed { request, error } => {
                trouble.write(MediaTrouble::Began(Problem::Request { request, error }));
            }
            EngineEvent::RoomMessage { message, earlier, .. } => {
                // Who you are is settled by now or about to be (`Me` arrives with the commands).
                let you = me.as_deref().or(joining.as_deref().map(|j| &j.0));
                let mine = you.is_some_and(|me| me.user.user_id == message.from.user_id);
                chat.add(message, mine || earlier);
            }
            EngineEvent::ActiveSpeakers { speakers, .. } => {
                commands.insert_resource(ActiveSpeakers(speakers.into_iter().map(|s| s.user_id).collect()));
            }
            _ => {}
        }
    }
}
