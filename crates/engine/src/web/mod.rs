//! The browser backend: the room driver is a future on the page's event loop
//! (`spawn_local`); signaling goes over the browser's WebSocket, media over its
//! RTCPeerConnection, and the browser captures, encodes and decodes. Pictures reach the same
//! latest-frame slots as on the desktop and sound the same audio buffers, so the app above
//! is the same code.
//!
//! Publish and play quality come from the connection's `getStats` every 2 s. A dropped
//! signaling connection is resumed as on the desktop (Reconnecting, retries with back-off,
//! Reconnected with only the differences, media started again), or ends in ReconnectFailed.

mod capture;
mod media;
mod signaling;
mod util;

use std::collections::HashMap;
use std::rc::Rc;

use futures_channel::mpsc;
use futures_util::StreamExt;
use holoroom_protocol::{Event, LoginConfig, LoginResponse, Request, RoomId, RoomStateReason, StreamId, UserInfo};

pub(crate) use capture::{close_camera, open_camera, set_track_enabled};
use media::MediaSession;
pub(crate) use media::audio_context;
use signaling::Signaling;
pub(crate) use util::describe;

use crate::engine::{
    Command, EngineConfig, EngineError, EngineEvent, MediaError, PlayerState, PublisherState, ReconnectPolicy,
    RemoteStream, RequestKind, RoomError,
};
use crate::room_view::{Followed, RoomView};
use crate::signaling::SignalingEvent;
use crate::stream::LocalStream;

#[derive(Debug)]
pub(crate) struct Backend {
    commands: mpsc::UnboundedSender<Command>,
}

impl Backend {
    pub fn start(config: EngineConfig, events: crossbeam_channel::Sender<EngineEvent>) -> Result<Backend, EngineError> {
        let (commands, command_rx) = mpsc::unbounded();
        let driver = Driver {
            url: config.server_url,
            policy: config.reconnect,
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
    policy: ReconnectPolicy,
    events: crossbeam_channel::Sender<EngineEvent>,
}

struct InRoom {
    room_id: RoomId,
    token: String,
    user: UserInfo,
    config: LoginConfig,
    session_id: String,
    signaling: Signaling,
    view: RoomView,
    publishing: HashMap<StreamId, (LocalStream, Rc<MediaSession>)>,
    playing: HashMap<StreamId, (RemoteStream, Rc<MediaSession>)>,
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
                    match self.connect(&room_id, &token, &user, &config, None).await {
                        Ok((signaling, server_events, response)) => {
                            self.state(&room_id, RoomStateReason::Logined, None);
                            let mut in_room = InRoom {
                                room_id,
                                token,
                                user,
                                config,
                                session_id: response.session_id.clone(),
                                signaling,
                                view: RoomView::default(),
                                publishing: HashMap::new(),
                                playing: HashMap::new(),
                            };
                            self.take_snapshot(&mut in_room, &response);
                            self.in_room(&mut in_room, &mut commands, server_events).await;
                            let sessions = in_room.publishing.values().map(|(_, s)| s);
                            for session in sessions.chain(in_room.playing.values().map(|(_, s)| s)) {
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
        if let Some(event) = command.outside_a_room() {
            self.emit(event);
        }
    }

    async fn connect(
        &self,
        room_id: &RoomId,
        token: &str,
        user: &UserInfo,
        config: &LoginConfig,
        resume: Option<String>,
    ) -> Result<(Signaling, mpsc::UnboundedReceiver<SignalingEvent>, LoginResponse), RoomError> {
        let (signaling, server_events) = Signaling::connect(&self.url).await?;
        let request = crate::signaling::login_request(room_id, token, user, config, resume);
        match signaling.login(request).await {
            Ok(response) => Ok((signaling, server_events, response)),
            Err(err) => {
                signaling.close();
                Err(err.into())
            }
        }
    }

    fn take_snapshot(&self, in_room: &mut InRoom, response: &LoginResponse) {
        for event in in_room.view.snapshot_events(&in_room.room_id, response) {
            self.emit(event);
        }
    }

    /// Runs the room until logout, a kick-out, or a connection that cannot be resumed.
    async fn in_room(
        &self,
        in_room: &mut InRoom,
        commands: &mut mpsc::UnboundedReceiver<Command>,
        mut server_events: mpsc::UnboundedReceiver<SignalingEvent>,
    ) {
        loop {
            let input = {
                let mut inputs = futures_util::stream::select(
                    commands.by_ref().map(Input::Command),
                    server_events.by_ref().map(Input::Server),
                );
                inputs.next().await
            };
            let leave = match input {
                None => true,
                Some(Input::Server(SignalingEvent::Event { event, .. })) => self.server_event(in_room, event),
                Some(Input::Server(SignalingEvent::Closed { code, reason })) => {
                    tracing::warn!(?code, %reason, "the connection to the room server dropped");
                    let (events, deferred) = self.reconnect(in_room, commands).await;
                    let mut leave = events.is_none();
                    if let Some(events) = events {
                        server_events = events;
                    }
                    // Commands that came in meanwhile: run in the room, or answered as outside it.
                    for command in deferred {
                        if leave {
                            self.outside_a_room(command);
                        } else {
                            leave = self.command(in_room, command).await;
                        }
                    }
                    leave
                }
                Some(Input::Command(command)) => self.command(in_room, command).await,
            };
            if leave {
                return;
            }
        }
    }

    /// Resumes the session after a drop: retries with back-off until the policy gives up or a
    /// refusal says retrying is useless. Commands that arrive meanwhile are returned to be run
    /// afterwards (a logout ends it at once).
    async fn reconnect(
        &self,
        in_room: &mut InRoom,
        commands: &mut mpsc::UnboundedReceiver<Command>,
    ) -> (Option<mpsc::UnboundedReceiver<SignalingEvent>>, Vec<Command>) {
        self.state(&in_room.room_id, RoomStateReason::Reconnecting, None);
        let give_up = js_sys::Date::now() + self.policy.give_up_after.as_secs_f64() * 1000.0;
        let mut delay = self.policy.first_delay;
        let mut deferred = Vec::new();
        loop {
            let attempt = self
                .connect(
                    &in_room.room_id,
                    &in_room.token,
                    &in_room.user,
                    &in_room.config,
                    Some(in_room.session_id.clone()),
                )
                .await;
            let error = match attempt {
                Ok((signaling, server_events, response)) => {
                    in_room.signaling.close();
                    in_room.signaling = signaling;
                    in_room.session_id = response.session_id.clone();
                    self.state(&in_room.room_id, RoomStateReason::Reconnected, None);
                    self.take_snapshot(in_room, &response);
                    self.restart_media(in_room);
                    return (Some(server_events), deferred);
                }
                Err(error) => error,
            };
            let refused = matches!(error, RoomError::Refused(_));
            if refused || js_sys::Date::now() + delay.as_secs_f64() * 1000.0 > give_up {
                self.state(&in_room.room_id, RoomStateReason::ReconnectFailed, Some(error));
                in_room.view.clear();
                return (None, deferred);
            }
            tracing::debug!(%error, ?delay, "reconnect attempt failed");
            let mut pause = Box::pin(util::sleep(delay));
            loop {
                match futures_util::future::select(pause, commands.next()).await {
                    futures_util::future::Either::Left(((), _)) => break,
                    futures_util::future::Either::Right((Some(Command::Logout) | None, _)) => {
                        self.state(&in_room.room_id, RoomStateReason::Logout, None);
                        in_room.view.clear();
                        return (None, deferred);
                    }
                    futures_util::future::Either::Right((Some(other), rest)) => {
                        deferred.push(other);
                        pause = rest;
                    }
                }
            }
            delay = (delay * 2).min(self.policy.max_delay);
        }
    }

    /// Starts every publication and playback again on the resumed connection; streams that
    /// ended meanwhile are not played again.
    fn restart_media(&self, in_room: &mut InRoom) {
        // A publication that had failed (say, no camera) stays failed.
        in_room.publishing.retain(|_, (_, session)| !session.is_closed());
        for (stream_id, (local, session)) in in_room.publishing.iter_mut() {
            session.close_connection();
            *session = Rc::new(MediaSession::default());
            wasm_bindgen_futures::spawn_local(media::publish(
                in_room.signaling.clone(),
                stream_id.clone(),
                local.clone(),
                self.events.clone(),
                session.clone(),
            ));
        }
        let playing = std::mem::take(&mut in_room.playing);
        for (stream_id, (remote, session)) in playing {
            if !in_room.view.streams().any(|s| s.stream_id == stream_id) {
                session.close();
                continue;
            }
            // The app keeps reading the same slot; only the connection is new.
            session.close_connection();
            let session = Rc::new(MediaSession::for_slot(remote.video.clone()));
            in_room
                .playing
                .insert(stream_id.clone(), (remote.clone(), session.clone()));
            wasm_bindgen_futures::spawn_local(media::play(
                in_room.signaling.clone(),
                stream_id,
                remote,
                self.events.clone(),
                session,
            ));
        }
    }

    fn server_event(&self, in_room: &mut InRoom, event: Event) -> bool {
        match in_room.view.follow(event) {
            Followed::Report { event, kicked } => {
                if let Some(event) = event {
                    self.emit(event);
                }
                kicked
            }
            Followed::Contradicts => false,
        }
    }

    async fn command(&self, in_room: &mut InRoom, command: Command) -> bool {
        let signaling = in_room.signaling.clone();
        match command {
            Command::Login { room_id, .. } => {
                self.emit(Command::already_in(room_id, &in_room.room_id));
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
                let request = Request::RenewToken { token: token.clone() };
                let event = match signaling.request(request).await {
                    Ok(holoroom_protocol::ResponseBody::TokenRenewed { expires_at }) => {
                        // A later reconnect presents the renewed token.
                        in_room.token = token;
                        EngineEvent::TokenRenewed {
                            room_id: in_room.room_id.clone(),
                            expires_at,
                        }
                    }
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
                if in_room.publishing.get(&stream_id).is_some_and(|(_, s)| !s.is_closed()) {
                    self.emit(EngineEvent::PublisherStateUpdate {
                        stream_id,
                        state: PublisherState::NoPublish,
                        error: Some(MediaError::Duplicate("publishing")),
                    });
                    return false;
                }
                let session = Rc::new(MediaSession::default());
                in_room
                    .publishing
                    .insert(stream_id.clone(), (local.clone(), session.clone()));
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
                if let Some((_, session)) = in_room.publishing.remove(&stream_id) {
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
                if let Some((_, old)) = in_room.playing.remove(&stream_id) {
                    old.close();
                }
                let session = Rc::new(MediaSession::for_slot(remote.video.clone()));
                in_room
                    .playing
                    .insert(stream_id.clone(), (remote.clone(), session.clone()));
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
                if let Some((_, session)) = in_room.playing.remove(&stream_id) {
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
