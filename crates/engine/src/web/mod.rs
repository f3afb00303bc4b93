//! The browser backend: the room driver is a future on the page's event loop
//! (`spawn_local`); signaling goes over the browser's WebSocket, media over its
//! RTCPeerConnection, and the browser captures, encodes and decodes. Pictures reach the same
//! latest-frame slots as on the desktop and sound the same audio buffers, so the app above
//! is the same code.
//!
//! Publish and play quality come from the connection's `getStats` every 2 s. Not yet here:
//! reconnecting after a dropped connection (the room ends in ReconnectFailed).

mod capture;
mod media;
mod signaling;
mod util;

use std::collections::HashMap;
use std::rc::Rc;

use futures_channel::mpsc;
use futures_util::StreamExt;
use holoroom_protocol::{
    ErrorCode, Event, LoginConfig, LoginResponse, Request, RoomId, RoomStateReason, StreamId, UserInfo,
};

pub(crate) use capture::{close_camera, open_camera, set_track_enabled};
use media::MediaSession;
pub(crate) use media::audio_context;
use signaling::Signaling;
pub(crate) use util::describe;

use crate::engine::{
    Command, EngineConfig, EngineError, EngineEvent, MediaError, PlayerState, PublisherState, RequestKind, RoomError,
};
use crate::room_view::RoomView;
use crate::signaling::SignalingEvent;

#[derive(Debug)]
pub(crate) struct Backend {
    commands: mpsc::UnboundedSender<Command>,
}

impl Backend {
    pub fn start(config: EngineConfig, events: crossbeam_channel::Sender<EngineEvent>) -> Result<Backend, EngineError> {
        let (commands, command_rx) = mpsc::unbounded();
        let driver = Driver {
            url: config.server_url,
            events,
        };
        wasm_bindgen_futures::spawn_local(driver.run(command_rx));
        Ok(Backend { commands })
    }

    pub fn send(&self, command: Command) {
        let _ = self.commands.unbounded_send(command);
    }
}

struct Driver {
    url: String,
    events: crossbeam_channel::Sender<EngineEvent>,
}

struct InRoom {
    room_id: RoomId,
    signaling: Signaling,
    view: RoomView,
    publishing: HashMap<StreamId, Rc<MediaSession>>,
    playing: HashMap<StreamId, Rc<MediaSession>>,
}

enum Input {
    Command(Command),
    Server(SignalingEvent),
}

impl Driver {
    fn emit(&self, event: EngineEvent) {
        let _ = self.events.send(event);
    }

    fn state(&self, room_id: &RoomId, reason: RoomStateReason, error: Option<RoomError>) {
        self.emit(EngineEvent::RoomStateChanged {
            room_id: room_id.clone(),
            reason,
            error,
            kickout: None,
        });
    }

    async fn run(self, mut commands: mpsc::UnboundedReceiver<Command>) {
        while let Some(command) = commands.next().await {
            match command {
                Command::Login {
                    room_id,
                    token,
                    user,
                    config,
                } => {
                    self.state(&room_id, RoomStateReason::Logining, None);
                    match self.connect(&room_id, token, user, config).await {
                        Ok((signaling, server_events, response)) => {
                            self.state(&room_id, RoomStateReason::Logined, None);
                            let mut in_room = InRoom {
                                room_id,
                                signaling,
                                view: RoomView::default(),
                                publishing: HashMap::new(),
                                playing: HashMap::new(),
                            };
                            self.take_snapshot(&mut in_room, &response);
                            self.in_room(&mut in_room, &mut commands, server_events).await;
                            for session in in_room.publishing.values().chain(in_room.playing.values()) {
                                session.close();
                            }
                            in_room.signaling.close();
                        }
                        Err(err) => self.state(&room_id, RoomStateReason::LoginFailed, Some(err)),
                    }
                }
                other => self.outside_a_room(other),
            }
        }
    }

    fn outside_a_room(&self, command: Command) {
        match command {
            Command::Login { .. } | Command::Logout => {}
            Command::RenewToken(_) => self.emit(EngineEvent::RequestFailed {
                request: RequestKind::RenewToken,
                error: RoomError::NotInRoom,
            }),
            Command::SetPose(_) => self.emit(EngineEvent::RequestFailed {
                request: RequestKind::SetPose,
                error: RoomError::NotInRoom,
            }),
            Command::StartPublishing(stream_id, _) | Command::StopPublishing(stream_id) => {
                self.emit(EngineEvent::PublisherStateUpdate {
                    stream_id,
                    state: PublisherState::NoPublish,
                    error: Some(MediaError::NotInRoom),
                });
            }
            Command::StartPlaying(stream_id, remote) => {
                remote.video.close();
                self.emit(EngineEvent::PlayerStateUpdate {
                    stream_id,
                    state: PlayerState::NoPlay,
                    error: Some(MediaError::NotInRoom),
                });
            }
            Command::StopPlaying(stream_id) => self.emit(EngineEvent::PlayerStateUpdate {
                stream_id,
                state: PlayerState::NoPlay,
                error: Some(MediaError::NotInRoom),
            }),
        }
    }

    async fn connect(
        &self,
        room_id: &RoomId,
        token: String,
        user: UserInfo,
        config: LoginConfig,
    ) -> Result<(Signaling, mpsc::UnboundedReceiver<SignalingEvent>, LoginResponse), RoomError> {
        let (signaling, server_events) = Signaling::connect(&self.url).await?;
        match signaling.login(room_id.clone(), token, user, config).await {
            Ok(response) => Ok((signaling, server_events, response)),
            Err(err) => {
                signaling.close();
                Err(err.into())
            }
        }
    }

    fn take_snapshot(&self, in_room: &mut InRoom, response: &LoginResponse) {
        for event in in_room
            .view
            .reset_to(&in_room.room_id, &response.users, &response.streams)
        {
            if let Some(event) = EngineEvent::from_server(event) {
                self.emit(event);
            }
        }
        for user_pose in &response.poses {
            self.emit(EngineEvent::PoseUpdate {
                room_id: in_room.room_id.clone(),
                user_id: user_pose.user_id.clone(),
                pose: user_pose.pose,
            });
        }
    }

    /// Runs the room until logout, a kick-out or a lost connection.
    async fn in_room(
        &self,
        in_room: &mut InRoom,
        commands: &mut mpsc::UnboundedReceiver<Command>,
        server_events: mpsc::UnboundedReceiver<SignalingEvent>,
    ) {
        let mut inputs =
            futures_util::stream::select(commands.by_ref().map(Input::Command), server_events.map(Input::Server));
        while let Some(input) = inputs.next().await {
            let leave = match input {
                Input::Server(SignalingEvent::Event { event, .. }) => self.server_event(in_room, event),
                Input::Server(SignalingEvent::Closed { code, reason }) => {
                    tracing::warn!(?code, %reason, "the room server closed the connection");
                    self.state(
                        &in_room.room_id,
                        RoomStateReason::ReconnectFailed,
                        Some(RoomError::Closed),
                    );
                    true
                }
                Input::Command(command) => self.command(in_room, command).await,
            };
            if leave {
                return;
            }
        }
    }

    fn server_event(&self, in_room: &mut InRoom, event: Event) -> bool {
        let kicked = matches!(
            event,
            Event::RoomStateChanged {
                reason: RoomStateReason::Kickout,
                ..
            }
        );
        if !in_room.view.apply(&event) {
            tracing::warn!(?event, "event contradicts the room view; ignored");
            return false;
        }
        if let Some(event) = EngineEvent::from_server(event) {
            self.emit(event);
        }
        kicked
    }

    async fn command(&self, in_room: &mut InRoom, command: Command) -> bool {
        let signaling = in_room.signaling.clone();
        match command {
            Command::Login { room_id, .. } => {
                let error = RoomError::Refused(holoroom_protocol::ErrorBody::new(
                    ErrorCode::AlreadyLoggedIn,
                    format!("already in room {}; log out first", in_room.room_id),
                ));
                self.state(&room_id, RoomStateReason::LoginFailed, Some(error));
                false
            }
            Command::Logout => {
                match signaling.request(Request::Logout {}).await {
                    Ok(_) | Err(crate::signaling::SignalingError::Closed) => {
                        self.state(&in_room.room_id, RoomStateReason::Logout, None);
                    }
                    Err(err) => self.state(&in_room.room_id, RoomStateReason::LogoutFailed, Some(err.into())),
                }
                true
            }
            Command::RenewToken(token) => {
                let event = match signaling.request(Request::RenewToken { token }).await {
                    Ok(holoroom_protocol::ResponseBody::TokenRenewed { expires_at }) => EngineEvent::TokenRenewed {
                        room_id: in_room.room_id.clone(),
                        expires_at,
                    },
                    Ok(other) => EngineEvent::RequestFailed {
                        request: RequestKind::RenewToken,
                        error: RoomError::Protocol(format!("renewal answered with {other:?}")),
                    },
                    Err(err) => EngineEvent::RequestFailed {
                        request: RequestKind::RenewToken,
                        error: err.into(),
                    },
                };
                self.emit(event);
                false
            }
            Command::SetPose(pose) => {
                // Fire and forget: a pose is superseded by the next one.
                let events = self.events.clone();
                wasm_bindgen_futures::spawn_local(async move {
                    if let Err(err) = signaling.request(Request::SetPose { pose }).await {
                        let _ = events.send(EngineEvent::RequestFailed {
                            request: RequestKind::SetPose,
                            error: err.into(),
                        });
                    }
                });
                false
            }
            Command::StartPublishing(stream_id, local) => {
                if in_room.publishing.get(&stream_id).is_some_and(|s| !s.is_closed()) {
                    self.emit(EngineEvent::PublisherStateUpdate {
                        stream_id,
                        state: PublisherState::NoPublish,
                        error: Some(MediaError::Duplicate("publishing")),
                    });
                    return false;
                }
                let session = Rc::new(MediaSession::default());
                in_room.publishing.insert(stream_id.clone(), session.clone());
                wasm_bindgen_futures::spawn_local(media::publish(
                    signaling,
                    stream_id,
                    local,
                    self.events.clone(),
                    session,
                ));
                false
            }
            Command::StopPublishing(stream_id) => {
                if let Some(session) = in_room.publishing.remove(&stream_id) {
                    session.close();
                    let _ = signaling
                        .request(Request::StopPublishing {
                            stream_id: stream_id.clone(),
                        })
                        .await;
                }
                self.emit(EngineEvent::PublisherStateUpdate {
                    stream_id,
                    state: PublisherState::NoPublish,
                    error: None,
                });
                false
            }
            Command::StartPlaying(stream_id, remote) => {
                if let Some(old) = in_room.playing.remove(&stream_id) {
                    old.close();
                }
                let session = Rc::new(MediaSession::for_slot(remote.video.clone()));
                in_room.playing.insert(stream_id.clone(), session.clone());
                wasm_bindgen_futures::spawn_local(media::play(
                    signaling,
                    stream_id,
                    remote,
                    self.events.clone(),
                    session,
                ));
                false
            }
            Command::StopPlaying(stream_id) => {
                if let Some(session) = in_room.playing.remove(&stream_id) {
                    session.close();
                    let _ = signaling
                        .request(Request::StopPlaying {
                            stream_id: stream_id.clone(),
                        })
                        .await;
                }
                self.emit(EngineEvent::PlayerStateUpdate {
                    stream_id,
                    state: PlayerState::NoPlay,
                    error: None,
                });
                false
            }
        }
    }
}
