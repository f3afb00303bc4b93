//! The client's room, as a state machine without IO: written once, driven by the desktop
//! backend (tokio) and the browser backend (the page's event loop) alike.
//!
//! The shape is str0m's: the driver feeds [`Input`]s (the app's commands, the signaling
//! connection's answers and events, media tasks that came up or ended, tokens fetched) and
//! the clock ([`RoomMachine::handle_timeout`] at [`RoomMachine::poll_timeout`]); it performs
//! the [`Action`]s the machine hands out ([`RoomMachine::poll_action`]): events for the app,
//! connections to open and close, requests to send, media to start and stop, tokens to fetch.
//! Nothing here waits: requests run side by side, and poses are latest-wins (one in flight,
//! the newest waiting).
//!
//! The machine owns the session's rules: reconnecting (resume first; a fresh token when the
//! old one ran out), commands given meanwhile, the media table with a generation per media
//! connection (a withdraw names the generation it ends, so it cannot remove a newer one),
//! setting media up again after a reconnect or after its path failed (with back-off), and
//! renewing the token before it expires.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use holoroom_protocol::{
    ErrorBody, ErrorCode, Event, LoginConfig, LoginResponse, Pose, Request, ResponseBody, RoomId, RoomStateReason,
    StreamId, UserInfo, VideoLayer,
};
use web_time::Instant;

use crate::engine::{
    Command, EngineEvent, MediaError, MediaPhase, PublisherState, ReconnectPolicy, RemoteStream, RequestKind,
    RoomError, media_state_event,
};
use crate::room_view::{Followed, RoomView};
use crate::signaling::{SignalingError, SignalingEvent};
use crate::stream::LocalStream;
use crate::token::{TokenError, TokenRequest, TokenSource};

/// After a media path failed, the first wait before setting it up again; it doubles up to
/// [`MEDIA_RETRY_MAX`] and starts over once media flows again.
pub(crate) const MEDIA_RETRY_FIRST: Duration = Duration::from_millis(250);
/// The longest wait between two attempts: a path that comes back is used within about this.
pub(crate) const MEDIA_RETRY_MAX: Duration = Duration::from_secs(2);
/// How long a polite logout may take when the engine is dropped.
pub(crate) const LOGOUT_ON_DROP: Duration = Duration::from_secs(1);

/// One signaling connection attempt, numbered by the machine.
pub(crate) type ConnectionId = u64;
/// One request, numbered by the machine.
pub(crate) type RequestId = u64;
/// One token fetch, numbered by the machine.
pub(crate) type FetchId = u64;

/// Whether a media connection sends or receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Direction {
    Publish,
    Play,
}

/// A publication or playback: one per direction and stream ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct MediaKey {
    pub direction: Direction,
    pub stream_id: StreamId,
}

/// What a media connection works on.
#[derive(Debug, Clone)]
pub(crate) enum MediaWork {
    Publish(LocalStream),
    Play(RemoteStream),
}

/// What happened, for the machine.
#[derive(Debug)]
pub(crate) enum Input {
    Command(Command),
    /// A connection attempt ended: the login's answer, or why there is none. On success the
    /// driver keeps the connection as the current one (closing any other).
    Connected {
        connection: ConnectionId,
        /// Boxed: a login's answer is large, and inputs are many.
        result: Result<Box<LoginResponse>, RoomError>,
    },
    /// A server event on a connection.
    ServerEvent {
        connection: ConnectionId,
        event: Event,
    },
    /// A connection closed (or dropped).
    Closed {
        connection: ConnectionId,
        reason: String,
    },
    /// A request's answer.
    Response {
        request: RequestId,
        result: Result<ResponseBody, SignalingError>,
    },
    /// A media connection is up and media flows.
    MediaUp {
        key: MediaKey,
        generation: u64,
    },
    /// A media connection ended: stopped (no error) or failed.
    MediaEnded {
        key: MediaKey,
        generation: u64,
        error: Option<MediaError>,
    },
    /// A token fetch ended.
    Token {
        fetch: FetchId,
        result: Result<String, TokenError>,
    },
    /// The engine is going away: log out politely (briefly) and finish.
    Shutdown,
}

impl Input {
    /// What a signaling connection's event is for the machine.
    pub fn from_signaling(connection: ConnectionId, event: SignalingEvent) -> Input {
        match event {
            SignalingEvent::Event { event, .. } => Input::ServerEvent { connection, event },
            SignalingEvent::Closed { code, reason } => Input::Closed {
                connection,
                reason: format!("{reason} ({code:?})"),
            },
        }
    }
}

/// What the driver is to do.
#[derive(Debug)]
pub(crate) enum Action {
    Emit(EngineEvent),
    /// Get a token from `source` and answer with [`Input::Token`].
    FetchToken {
        fetch: FetchId,
        source: TokenSource,
        request: TokenRequest,
    },
    /// Open a signaling connection, log in with `login`, answer with [`Input::Connected`].
    Connect {
        connection: ConnectionId,
        login: holoroom_protocol::LoginRequest,
    },
    /// Close this connection (if it is open or still opening).
    Disconnect {
        connection: ConnectionId,
    },
    /// Send a request on `connection` and answer with [`Input::Response`] (`Closed` when
    /// that connection is gone).
    Send {
        connection: ConnectionId,
        request: RequestId,
        body: Request,
    },
    /// Start a media connection; it reports [`Input::MediaUp`] and [`Input::MediaEnded`].
    /// Its publish or play request carries `generation` as its media ID.
    StartMedia {
        connection: ConnectionId,
        key: MediaKey,
        generation: u64,
        work: MediaWork,
    },
    /// Stop a media connection (no withdraw: the machine sends that itself when due).
    StopMedia {
        key: MediaKey,
        generation: u64,
    },
}

/// What a request in flight is for.
#[derive(Debug, Clone)]
enum Purpose {
    Pose,
    Logout,
    Renew {
        token: String,
    },
    /// A publication's or playback's end, told to the server (sent again after a reconnect
    /// if the connection dropped before its answer).
    Withdraw(Request),
    /// The logout of a connection that logged in after it was no longer wanted; it closes
    /// once answered.
    Abandon(ConnectionId),
    /// A played stream's video layer (not sent again after a reconnect: the stream's next
    /// media connection starts with the layer last chosen).
    Layer,
    /// A chat message, queued again if its connection drops before the answer and sent once
    /// more if the answer is late (its nonce makes the server say it once however often it
    /// arrives); `retried` once it was.
    Message {
        body: Request,
        retried: bool,
    },
    /// A published stream's mute state (not sent again after a reconnect: the stream's next
    /// media connection starts with the state it has then).
    Mute,
}

/// Why a token is being fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FetchFor {
    Login,
    Renew,
    /// A reconnect refused because the token ran out.
    Reconnect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MediaState {
    /// Setting up (a media task runs).
    Starting,
    /// Media flows.
    Running,
    /// The path failed; set up again at this time.
    Retrying(Instant),
    /// No signaling connection: set up again once there is one.
    Parked,
}

#[derive(Debug)]
struct Media {
    work: MediaWork,
    generation: u64,
    state: MediaState,
    /// The next wait after a failed path.
    wait: Duration,
}

/// Where the session is.
#[derive(Debug)]
enum Phase {
    Idle,
    /// Fetching the token for the first login.
    Fetching(FetchId),
    LoggingIn(ConnectionId),
    /// Connected (`connection`), in the room.
    InRoom(ConnectionId),
    Reconnecting(Reconnect),
    LoggingOut {
        connection: ConnectionId,
    },
}

#[derive(Debug)]
struct Reconnect {
    give_up: Instant,
    delay: Duration,
    /// What is under way: an attempt, a token fetch, or a pause until the next attempt.
    step: ReconnectStep,
    /// A fresh token was already fetched for this reconnect.
    refetched: bool,
}

#[derive(Debug)]
enum ReconnectStep {
    Connecting(ConnectionId),
    Fetching(FetchId),
    Waiting(Instant),
}

/// The session's facts while in (or rejoining) a room.
#[derive(Debug)]
struct Room {
    room_id: RoomId,
    user: UserInfo,
    config: LoginConfig,
    source: TokenSource,
    token: String,
    session_id: Option<String>,
    view: RoomView,
    media: BTreeMap<MediaKey, Media>,
    /// The pose request in flight (and its pose, sent again if its connection drops before
    /// the answer), and the newest pose waiting behind it.
    pose_in_flight: Option<(RequestId, Pose)>,
    pose_next: Option<Pose>,
    /// Requests waiting for a connection, in order.
    queued: VecDeque<(Request, Purpose)>,
    renewing: Option<FetchId>,
}

/// The client's room state machine.
#[derive(Debug)]
pub(crate) struct RoomMachine {
    policy: ReconnectPolicy,
    phase: Phase,
    room: Option<Room>,
    pending: HashMap<RequestId, Purpose>,
    fetches: HashMap<FetchId, FetchFor>,
    actions: VecDeque<Action>,
    next_id: u64,
    shutting_down: Option<Instant>,
}

impl RoomMachine {
    pub fn new(policy: ReconnectPolicy) -> RoomMachine {
        RoomMachine {
            policy,
            phase: Phase::Idle,
            room: None,
            pending: HashMap::new(),
            fetches: HashMap::new(),
            actions: VecDeque::new(),
            next_id: 1,
            shutting_down: None,
        }
    }

    /// The next thing for the driver to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`RoomMachine::handle_timeout`] is due next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let reconnect = match &self.phase {
            Phase::Reconnecting(Reconnect {
                step: ReconnectStep::Waiting(at),
                ..
            }) => Some(*at),
            _ => None,
        };
        let media = self
            .room
            .iter()
            .flat_map(|room| room.media.values())
            .filter_map(|m| match m.state {
                MediaState::Retrying(at) => Some(at),
                _ => None,
            });
        reconnect.into_iter().chain(media).chain(self.shutting_down).min()
    }

    /// Whether the engine was shut down and nothing is left to do.
    pub fn is_finished(&self) -> bool {
        self.shutting_down.is_some() && matches!(self.phase, Phase::Idle) && self.actions.is_empty()
    }

    fn next(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn emit(&mut self, event: EngineEvent) {
        self.actions.push_back(Action::Emit(event));
    }

    fn state(&mut self, room_id: &RoomId, reason: RoomStateReason, error: Option<RoomError>) {
        self.emit(EngineEvent::RoomStateChanged {
            room_id: room_id.clone(),
            reason,
            error,
            kickout: None,
        });
    }

    fn connection(&self) -> Option<ConnectionId> {
        match self.phase {
            Phase::InRoom(connection) => Some(connection),
            _ => None,
        }
    }

    pub fn handle(&mut self, now: Instant, input: Input) {
        match input {
            Input::Command(command) => self.command(command),
            Input::Connected { connection, result } => self.connected(now, connection, result),
            Input::ServerEvent { connection, event } => {
                if self.connection() == Some(connection) {
                    self.server_event(event);
                }
            }
            Input::Closed { connection, reason } => {
                if self.connection() == Some(connection) {
                    tracing::warn!(%reason, "the connection to the room server dropped");
                    self.lost_connection(now);
                } else if let Phase::LoggingOut { connection: c, .. } = self.phase
                    && c == connection
                {
                    self.logged_out(Ok(()));
                }
            }
            Input::Response { request, result } => self.response(request, result),
            Input::MediaUp { key, generation } => self.media_up(key, generation),
            Input::MediaEnded { key, generation, error } => self.media_ended(now, key, generation, error),
            Input::Token { fetch, result } => self.token(now, fetch, result),
            Input::Shutdown => self.shutdown(now),
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.shutting_down.is_some_and(|at| at <= now) {
            self.shutting_down = Some(now);
            if let Phase::LoggingOut { connection, .. } = self.phase {
                self.actions.push_back(Action::Disconnect { connection });
                self.phase = Phase::Idle;
                self.room = None;
            }
        }
        if let Phase::Reconnecting(Reconnect {
            step: ReconnectStep::Waiting(at),
            ..
        }) = self.phase
            && at <= now
        {
            self.attempt_reconnect();
        }
        let Some(room) = self.room.as_mut() else { return };
        let due: Vec<MediaKey> = room
            .media
            .iter()
            .filter(|(_, m)| matches!(m.state, MediaState::Retrying(at) if at <= now))
            .map(|(key, _)| key.clone())
            .collect();
        for key in due {
            self.start_media(&key);
        }
    }

    // ---- commands ----

    fn command(&mut self, command: Command) {
        if self.shutting_down.is_some() {
            return;
        }
        match command {
            Command::Login {
                room_id,
                token,
                user,
                config,
            } => self.login(room_id, token, user, config),
            Command::Logout => self.logout(),
            Command::RenewToken(token) => {
                if self.room.is_none() || !matches!(self.phase, Phase::InRoom(_) | Phase::Reconnecting(_)) {
                    return self.outside_a_room(Command::RenewToken(token));
                }
                self.send(Request::RenewToken { token: token.clone() }, Purpose::Renew { token });
            }
            Command::SetPose(pose) => {
                if !self.in_room() {
                    return self.outside_a_room(Command::SetPose(pose));
                }
                self.set_pose(pose);
            }
            Command::StartPublishing(stream_id, local) => self.start(
                MediaKey {
                    direction: Direction::Publish,
                    stream_id,
                },
                MediaWork::Publish(local),
            ),
            Command::StartPlaying(stream_id, remote) => self.start(
                MediaKey {
                    direction: Direction::Play,
                    stream_id,
                },
                MediaWork::Play(remote),
            ),
            Command::StopPublishing(stream_id) => self.stop(MediaKey {
                direction: Direction::Publish,
                stream_id,
            }),
            Command::StopPlaying(stream_id) => self.stop(MediaKey {
                direction: Direction::Play,
                stream_id,
            }),
            Command::SetVideoLayer(stream_id, layer) => self.set_video_layer(stream_id, layer),
            Command::SendMessage { text, nonce } => {
                if !self.in_room() {
                    return self.outside_a_room(Command::SendMessage { text, nonce });
                }
                let body = Request::SendMessage {
                    text,
                    nonce: Some(nonce),
                };
                self.send(body.clone(), Purpose::Message { body, retried: false });
            }
            Command::MuteChanged(local) => {
                let running: Vec<StreamId> = self
                    .room
                    .iter()
                    .flat_map(|room| &room.media)
                    .filter(|(_, media)| {
                        media.state == MediaState::Running
                            && matches!(&media.work, MediaWork::Publish(own) if own.key() == local.key())
                    })
                    .map(|(key, _)| key.stream_id.clone())
                    .collect();
                // A publication still setting up tells the room once it is up.
                for stream_id in running {
                    self.tell_mute(stream_id, &local);
                }
            }
        }
    }

    /// Tells the room a published stream's mute state (the server tells the others only of a
    /// change).
    fn tell_mute(&mut self, stream_id: StreamId, local: &LocalStream) {
        let mute = local.mute();
        self.send(Request::SetStreamMute { stream_id, mute }, Purpose::Mute);
    }

    /// Records the layer for the stream's media connections and tells the server at once when
    /// one is up or on its way (the server handles requests in order, so a layer sent after a
    /// play request applies to it).
    fn set_video_layer(&mut self, stream_id: StreamId, layer: VideoLayer) {
        if !self.in_room() {
            return self.outside_a_room(Command::SetVideoLayer(stream_id, layer));
        }
        let key = MediaKey {
            direction: Direction::Play,
            stream_id,
        };
        let Some(media) = self.room.as_ref().and_then(|room| room.media.get(&key)) else {
            let message = format!("stream {} is not being played", key.stream_id);
            return self.emit(EngineEvent::RequestFailed {
                request: RequestKind::SetVideoLayer,
                error: RoomError::Refused(ErrorBody::new(ErrorCode::NotPlaying, message)),
            });
        };
        let MediaWork::Play(remote) = &media.work else { return };
        if remote.layer.get() == layer {
            return;
        }
        remote.layer.set(layer);
        if matches!(media.state, MediaState::Starting | MediaState::Running) && matches!(self.phase, Phase::InRoom(_)) {
            let body = Request::SetVideoLayer {
                stream_id: key.stream_id,
                layer,
            };
            self.send(body, Purpose::Layer);
        }
    }

    /// Whether the session is in a room (connected or getting back).
    fn in_room(&self) -> bool {
        matches!(self.phase, Phase::InRoom(_) | Phase::Reconnecting(_))
    }

    fn outside_a_room(&mut self, command: Command) {
        if let Some(event) = command.outside_a_room() {
            self.emit(event);
        }
    }

    fn login(&mut self, room_id: RoomId, source: TokenSource, user: UserInfo, config: LoginConfig) {
        if let Some(room) = &self.room {
            let current = room.room_id.clone();
            self.emit(Command::already_in(room_id, &current));
            return;
        }
        self.state(&room_id, RoomStateReason::Logining, None);
        let request = TokenRequest {
            room_id: room_id.clone(),
            user: user.clone(),
        };
        self.room = Some(Room {
            room_id,
            user,
            config,
            source: source.clone(),
            token: String::new(),
            session_id: None,
            view: RoomView::default(),
            media: BTreeMap::new(),
            pose_in_flight: None,
            pose_next: None,
            queued: VecDeque::new(),
            renewing: None,
        });
        match source.ready(&request) {
            Some(Ok(token)) => self.connect_with(token),
            Some(Err(error)) => self.login_failed(RoomError::Token(error)),
            None => {
                let fetch = self.fetch(source, request, FetchFor::Login);
                self.phase = Phase::Fetching(fetch);
            }
        }
    }

    fn fetch(&mut self, source: TokenSource, request: TokenRequest, purpose: FetchFor) -> FetchId {
        let fetch = self.next();
        self.fetches.insert(fetch, purpose);
        self.actions.push_back(Action::FetchToken { fetch, source, request });
        fetch
    }

    /// The first connection, with `token`.
    fn connect_with(&mut self, token: String) {
        let Some(room) = self.room.as_mut() else { return };
        room.token = token;
        let login = crate::signaling::login_request(&room.room_id, &room.token, &room.user, &room.config, None);
        let connection = self.next();
        self.actions.push_back(Action::Connect { connection, login });
        self.phase = Phase::LoggingIn(connection);
    }

    fn login_failed(&mut self, error: RoomError) {
        if let Some(room) = self.room.take() {
            self.state(&room.room_id, RoomStateReason::LoginFailed, Some(error));
        }
        self.phase = Phase::Idle;
    }

    fn logout(&mut self) {
        match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Idle => {}
            Phase::Fetching(_) => self.leave(RoomStateReason::Logout, None),
            Phase::LoggingIn(connection) => {
                self.actions.push_back(Action::Disconnect { connection });
                self.leave(RoomStateReason::Logout, None);
            }
            Phase::Reconnecting(reconnect) => {
                if let ReconnectStep::Connecting(connection) = reconnect.step {
                    self.actions.push_back(Action::Disconnect { connection });
                }
                self.leave(RoomStateReason::Logout, None);
            }
            Phase::InRoom(connection) => {
                // Logging out ends every publication and playback on the server at once.
                self.end_all_media(None);
                let request = self.next();
                self.pending.insert(request, Purpose::Logout);
                self.actions.push_back(Action::Send {
                    connection,
                    request,
                    body: Request::Logout {},
                });
                self.phase = Phase::LoggingOut { connection };
            }
            phase @ Phase::LoggingOut { .. } => self.phase = phase,
        }
    }

    fn logged_out(&mut self, result: Result<(), SignalingError>) {
        let Phase::LoggingOut { connection, .. } = std::mem::replace(&mut self.phase, Phase::Idle) else {
            return;
        };
        self.actions.push_back(Action::Disconnect { connection });
        let Some(room) = self.room.take() else { return };
        if self.shutting_down.is_some() {
            return;
        }
        match result {
            Ok(()) | Err(SignalingError::Closed) => self.state(&room.room_id, RoomStateReason::Logout, None),
            Err(error) => self.state(&room.room_id, RoomStateReason::LogoutFailed, Some(error.into())),
        }
    }

    fn shutdown(&mut self, now: Instant) {
        self.shutting_down = Some(now + LOGOUT_ON_DROP);
        match self.phase {
            Phase::InRoom(_) => self.logout(),
            Phase::LoggingOut { .. } => {}
            _ => {
                self.logout();
                self.phase = Phase::Idle;
                self.room = None;
                self.shutting_down = Some(now);
            }
        }
    }

    /// Leaves the room without a request (kicked, given up, logged out while not connected):
    /// reports `reason`, ends the media, forgets the room.
    fn leave(&mut self, reason: RoomStateReason, error: Option<RoomError>) {
        self.end_all_media(None);
        if let Some(room) = self.room.take()
            && self.shutting_down.is_none()
        {
            self.state(&room.room_id, reason, error);
        }
        // Requests still in flight belong to the old session.
        self.pending.clear();
        self.phase = Phase::Idle;
    }

    fn set_pose(&mut self, pose: Pose) {
        let request = self.next_id;
        let Some(room) = self.room.as_mut() else { return };
        let Phase::InRoom(connection) = self.phase else {
            room.pose_next = Some(pose);
            return;
        };
        if room.pose_in_flight.is_some() {
            // Latest wins: the newest pose waits; older ones are superseded.
            room.pose_next = Some(pose);
            return;
        }
        self.next_id += 1;
        room.pose_in_flight = Some((request, pose));
        self.pending.insert(request, Purpose::Pose);
        self.actions.push_back(Action::Send {
            connection,
            request,
            body: Request::SetPose { pose },
        });
    }

    /// Sends a request now, or once the connection is back.
    fn send(&mut self, body: Request, purpose: Purpose) {
        let Phase::InRoom(connection) = self.phase else {
            if let Some(room) = self.room.as_mut() {
                room.queued.push_back((body, purpose));
            }
            return;
        };
        let request = self.next();
        self.pending.insert(request, purpose);
        self.actions.push_back(Action::Send {
            connection,
            request,
            body,
        });
    }

    // ---- media ----

    fn start(&mut self, key: MediaKey, work: MediaWork) {
        if !self.in_room() {
            let command = match (key.direction, work) {
                (_, MediaWork::Publish(local)) => Command::StartPublishing(key.stream_id, local),
                (_, MediaWork::Play(remote)) => Command::StartPlaying(key.stream_id, remote),
            };
            return self.outside_a_room(command);
        }
        let Some(room) = self.room.as_mut() else { return };
        if let Some(media) = room.media.get(&key)
            && let (MediaWork::Publish(old), MediaWork::Publish(new)) = (&media.work, &work)
            && old.key() == new.key()
        {
            // The same stream again: it goes on as it is.
            let state = if media.state == MediaState::Running {
                PublisherState::Publishing
            } else {
                PublisherState::Requesting
            };
            self.emit(EngineEvent::PublisherStateUpdate {
                stream_id: key.stream_id,
                state,
                error: Some(MediaError::Duplicate("publishing")),
            });
            return;
        }
        // Another stream (or a new slot) under the same ID replaces the old one.
        if let Some(old) = room.media.remove(&key) {
            if let MediaWork::Play(remote) = &old.work {
                remote.video.close();
            }
            if matches!(old.state, MediaState::Starting | MediaState::Running) {
                self.actions.push_back(Action::StopMedia {
                    key: key.clone(),
                    generation: old.generation,
                });
            }
        }
        let Some(room) = self.room.as_mut() else { return };
        room.media.insert(
            key.clone(),
            Media {
                work,
                generation: 0,
                state: MediaState::Parked,
                wait: MEDIA_RETRY_FIRST,
            },
        );
        self.emit(media_state_event(
            &key.stream_id,
            key.direction == Direction::Publish,
            MediaPhase::Requesting,
            None,
        ));
        if matches!(self.phase, Phase::InRoom(_)) {
            self.start_media(&key);
        }
    }

    /// Starts a new media connection for `key` under a new generation.
    fn start_media(&mut self, key: &MediaKey) {
        let Phase::InRoom(connection) = self.phase else { return };
        let generation = self.next();
        let Some(media) = self.room.as_mut().and_then(|room| room.media.get_mut(key)) else {
            return;
        };
        media.generation = generation;
        media.state = MediaState::Starting;
        let work = media.work.clone();
        self.actions.push_back(Action::StartMedia {
            connection,
            key: key.clone(),
            generation,
            work,
        });
    }

    /// Stops `key` for the app: ends its connection, withdraws it from the room and reports the end.
    fn stop(&mut self, key: MediaKey) {
        let Some(media) = self.room.as_mut().and_then(|room| room.media.remove(&key)) else {
            if !self.in_room() {
                let command = match key.direction {
                    Direction::Publish => Command::StopPublishing(key.stream_id),
                    Direction::Play => Command::StopPlaying(key.stream_id),
                };
                self.outside_a_room(command);
            }
            return;
        };
        self.end_media(&key, media, None, true);
    }

    /// Ends one media entry already taken from the table: stops its connection, withdraws it
    /// (naming its generation) when `withdraw`, closes a played slot, reports the end.
    fn end_media(&mut self, key: &MediaKey, media: Media, error: Option<MediaError>, withdraw: bool) {
        if matches!(media.state, MediaState::Starting | MediaState::Running) {
            self.actions.push_back(Action::StopMedia {
                key: key.clone(),
                generation: media.generation,
            });
        }
        if let MediaWork::Play(remote) = &media.work {
            remote.video.close();
        }
        if withdraw && media.generation != 0 {
            let stream_id = key.stream_id.clone();
            let media_id = Some(media.generation);
            let body = match key.direction {
                Direction::Publish => Request::StopPublishing { stream_id, media_id },
                Direction::Play => Request::StopPlaying { stream_id, media_id },
            };
            self.send(body.clone(), Purpose::Withdraw(body));
        }
        if self.shutting_down.is_none() {
            self.emit(media_state_event(
                &key.stream_id,
                key.direction == Direction::Publish,
                MediaPhase::Ended,
                error,
            ));
        }
    }

    /// Ends every media entry (leaving the room): no withdraws, the server ends them itself.
    fn end_all_media(&mut self, error: Option<MediaError>) {
        let Some(room) = self.room.as_mut() else { return };
        let media = std::mem::take(&mut room.media);
        room.queued.clear();
        for (key, media) in media {
            self.end_media(&key, media, error.clone(), false);
        }
    }

    fn media_up(&mut self, key: MediaKey, generation: u64) {
        let Some(media) = self.room.as_mut().and_then(|room| room.media.get_mut(&key)) else {
            return;
        };
        if media.generation != generation || media.state != MediaState::Starting {
            return;
        }
        media.state = MediaState::Running;
        media.wait = MEDIA_RETRY_FIRST;
        // The publish request carried the state its stream had then; the state now is told
        // too, in case it switched while the connection was set up (the same state again
        // costs the server nothing and tells nobody).
        if let MediaWork::Publish(local) = &media.work {
            let local = local.clone();
            self.tell_mute(key.stream_id.clone(), &local);
        }
        self.emit(media_state_event(
            &key.stream_id,
            key.direction == Direction::Publish,
            MediaPhase::Running,
            None,
        ));
    }

    fn media_ended(&mut self, now: Instant, key: MediaKey, generation: u64, error: Option<MediaError>) {
        let connected = matches!(self.phase, Phase::InRoom(_));
        let Some(room) = self.room.as_mut() else { return };
        let Some(media) = room.media.get_mut(&key) else { return };
        if media.generation != generation || !matches!(media.state, MediaState::Starting | MediaState::Running) {
            return;
        }
        let error = error.unwrap_or_else(|| MediaError::Connection("the media connection closed".into()));
        if !connected || matches!(error, MediaError::Signaling(SignalingError::Closed)) {
            // The signaling connection went; the reconnect sets the media up again.
            media.state = MediaState::Parked;
            return;
        }
        if error.is_path_failure() {
            tracing::info!(%error, wait = ?media.wait, stream = %key.stream_id, "media path failed; setting it up again");
            media.state = MediaState::Retrying(now + media.wait);
            media.wait = (media.wait * 2).min(MEDIA_RETRY_MAX);
            self.emit(media_state_event(
                &key.stream_id,
                key.direction == Direction::Publish,
                MediaPhase::Requesting,
                Some(error),
            ));
            return;
        }
        let Some(mut media) = room.media.remove(&key) else {
            return;
        };
        // Its connection is over already.
        media.state = MediaState::Parked;
        self.end_media(&key, media, Some(error), true);
    }

    // ---- the connection ----

    fn connected(&mut self, now: Instant, connection: ConnectionId, result: Result<Box<LoginResponse>, RoomError>) {
        match &self.phase {
            Phase::LoggingIn(c) if *c == connection => match result {
                Ok(response) => {
                    self.phase = Phase::InRoom(connection);
                    let Some(room) = self.room.as_mut() else { return };
                    room.session_id = Some(response.session_id.clone());
                    let room_id = room.room_id.clone();
                    self.state(&room_id, RoomStateReason::Logined, None);
                    self.take_snapshot(&response);
                    self.resume_work();
                }
                Err(error) => self.login_failed(error),
            },
            Phase::Reconnecting(Reconnect {
                step: ReconnectStep::Connecting(c),
                ..
            }) if *c == connection => match result {
                Ok(response) => {
                    self.phase = Phase::InRoom(connection);
                    let Some(room) = self.room.as_mut() else { return };
                    room.session_id = Some(response.session_id.clone());
                    let room_id = room.room_id.clone();
                    self.state(&room_id, RoomStateReason::Reconnected, None);
                    self.take_snapshot(&response);
                    self.resume_work();
                }
                Err(error) => self.reconnect_failed(now, error),
            },
            _ => {
                // An attempt nobody waits for any more. One that logged in (it may have resumed
                // the session) logs out, so the server does not keep the member for its grace
                // window.
                if result.is_ok() {
                    let request = self.next();
                    self.pending.insert(request, Purpose::Abandon(connection));
                    self.actions.push_back(Action::Send {
                        connection,
                        request,
                        body: Request::Logout {},
                    });
                }
            }
        }
    }

    /// Turns a login's snapshot into events: everything on a first login, only differences after a reconnect.
    fn take_snapshot(&mut self, response: &LoginResponse) {
        let Some(room) = self.room.as_mut() else { return };
        let events = room.view.snapshot_events(&room.room_id, response);
        for event in events {
            self.emit(event);
        }
    }

    /// On a (new) connection: sends what waited, the newest pose, and sets media up again;
    /// a stream that went away meanwhile is not played again.
    fn resume_work(&mut self) {
        let Some(room) = self.room.as_mut() else { return };
        let queued: Vec<(Request, Purpose)> = room.queued.drain(..).collect();
        let pose = room.pose_next.take();
        room.pose_in_flight = None;
        let gone: Vec<MediaKey> = room
            .media
            .keys()
            .filter(|key| {
                key.direction == Direction::Play && !room.view.streams().any(|s| s.stream_id == key.stream_id)
            })
            .cloned()
            .collect();
        for (body, purpose) in queued {
            self.send(body, purpose);
        }
        if let Some(pose) = pose {
            self.set_pose(pose);
        }
        for key in gone {
            if let Some(media) = self.room.as_mut().and_then(|room| room.media.remove(&key)) {
                self.end_media(&key, media, None, false);
            }
        }
        let parked: Vec<MediaKey> = self
            .room
            .iter()
            .flat_map(|room| room.media.iter())
            .filter(|(_, m)| matches!(m.state, MediaState::Parked | MediaState::Retrying(_)))
            .map(|(key, _)| key.clone())
            .collect();
        for key in parked {
            self.start_media(&key);
        }
    }

    /// The signaling connection dropped: Reconnecting, media stopped (to be set up again),
    /// requests in flight that must still happen queued again, and the first attempt at once.
    fn lost_connection(&mut self, now: Instant) {
        let Some(room) = self.room.as_mut() else { return };
        let room_id = room.room_id.clone();
        let mut stops = Vec::new();
        let mut were_running = Vec::new();
        for (key, media) in room.media.iter_mut() {
            if matches!(media.state, MediaState::Starting | MediaState::Running) {
                stops.push(Action::StopMedia {
                    key: key.clone(),
                    generation: media.generation,
                });
            }
            if media.state == MediaState::Running {
                were_running.push(key.clone());
            }
            media.state = MediaState::Parked;
        }
        // A pose that may not have arrived goes again, unless a newer one waits.
        if let Some((_, pose)) = room.pose_in_flight.take() {
            room.pose_next.get_or_insert(pose);
        }
        // In the order they were sent: chat messages must not change places.
        let mut pending: Vec<(RequestId, Purpose)> = self.pending.drain().collect();
        pending.sort_by_key(|(request, _)| *request);
        for (_, purpose) in pending {
            match purpose {
                Purpose::Renew { token } => {
                    let body = Request::RenewToken { token: token.clone() };
                    room.queued.push_back((body, Purpose::Renew { token }));
                }
                Purpose::Withdraw(body) => room.queued.push_back((body.clone(), Purpose::Withdraw(body))),
                Purpose::Message { body, retried } => {
                    room.queued
                        .push_back((body.clone(), Purpose::Message { body, retried }));
                }
                Purpose::Pose | Purpose::Logout | Purpose::Abandon(_) | Purpose::Layer | Purpose::Mute => {}
            }
        }
        self.actions.extend(stops);
        self.state(&room_id, RoomStateReason::Reconnecting, None);
        // Media that flowed is being set up again too (the room's reconnect says why).
        for key in were_running {
            self.emit(media_state_event(
                &key.stream_id,
                key.direction == Direction::Publish,
                MediaPhase::Requesting,
                None,
            ));
        }
        self.phase = Phase::Reconnecting(Reconnect {
            give_up: now + self.policy.give_up_after,
            delay: self.policy.first_delay,
            step: ReconnectStep::Waiting(now),
            refetched: false,
        });
        self.attempt_reconnect();
    }

    fn attempt_reconnect(&mut self) {
        let Some(room) = self.room.as_ref() else { return };
        let login = crate::signaling::login_request(
            &room.room_id,
            &room.token,
            &room.user,
            &room.config,
            room.session_id.clone(),
        );
        let connection = self.next();
        if let Phase::Reconnecting(reconnect) = &mut self.phase {
            reconnect.step = ReconnectStep::Connecting(connection);
            self.actions.push_back(Action::Connect { connection, login });
        }
    }

    fn reconnect_failed(&mut self, now: Instant, error: RoomError) {
        let Phase::Reconnecting(reconnect) = &mut self.phase else {
            return;
        };
        let token_ran_out = matches!(
            &error,
            RoomError::Refused(body) if matches!(body.code, ErrorCode::TokenExpired | ErrorCode::TokenNotYetValid)
        );
        let Some(room) = self.room.as_ref() else { return };
        if token_ran_out && !reconnect.refetched && room.source.renews() {
            reconnect.refetched = true;
            let request = TokenRequest {
                room_id: room.room_id.clone(),
                user: room.user.clone(),
            };
            let source = room.source.clone();
            let fetch = self.fetch(source, request, FetchFor::Reconnect);
            if let Phase::Reconnecting(reconnect) = &mut self.phase {
                reconnect.step = ReconnectStep::Fetching(fetch);
            }
            return;
        }
        // A refusal (bad token, kicked, room full) will not change by retrying.
        let refused = matches!(error, RoomError::Refused(_) | RoomError::Token(_));
        if refused || now + reconnect.delay > reconnect.give_up {
            return self.leave(RoomStateReason::ReconnectFailed, Some(error));
        }
        tracing::debug!(%error, delay = ?reconnect.delay, "reconnect attempt failed");
        let retry_in = reconnect.delay;
        reconnect.step = ReconnectStep::Waiting(now + retry_in);
        reconnect.delay = (reconnect.delay * 2).min(self.policy.max_delay);
        if let Some(room) = &self.room {
            let room_id = room.room_id.clone();
            self.emit(EngineEvent::ReconnectRetry {
                room_id,
                error,
                retry_in,
            });
        }
    }

    fn server_event(&mut self, event: Event) {
        let renew = matches!(event, Event::TokenWillExpire { .. });
        let Some(room) = self.room.as_mut() else { return };
        if let Event::PublishFailed { stream_id, message } = event {
            // This side sees its own connection fail too, and sets it up again (which lists
            // the stream again); the server's reason is worth a line in the log.
            tracing::warn!(stream = %stream_id, %message, "the server gave up on a publication's media connection");
            return;
        }
        if let Event::VideoLayersWanted { stream_id, layers } = event {
            // For the publication's encoder, not for the app.
            let key = MediaKey {
                direction: Direction::Publish,
                stream_id,
            };
            if let Some(Media {
                work: MediaWork::Publish(local),
                ..
            }) = room.media.get(&key)
            {
                local.set_layers_wanted(&layers);
            }
            return;
        }
        match room.view.follow(event) {
            Followed::Report { event, kicked } => {
                if let Some(event) = event {
                    self.emit(event);
                }
                if kicked {
                    // The kick-out itself was the report.
                    self.end_all_media(None);
                    if let Phase::InRoom(connection) = self.phase {
                        self.actions.push_back(Action::Disconnect { connection });
                    }
                    self.room = None;
                    self.pending.clear();
                    self.phase = Phase::Idle;
                    return;
                }
            }
            Followed::Contradicts => {}
        }
        if renew {
            self.renew_from_source();
        }
    }

    /// Asks the token source for a fresh token, unless it cannot give one or is being asked.
    fn renew_from_source(&mut self) {
        let Some(room) = self.room.as_ref() else { return };
        if !room.source.renews() || room.renewing.is_some() {
            return;
        }
        let request = TokenRequest {
            room_id: room.room_id.clone(),
            user: room.user.clone(),
        };
        let source = room.source.clone();
        let fetch = self.fetch(source, request, FetchFor::Renew);
        if let Some(room) = self.room.as_mut() {
            room.renewing = Some(fetch);
        }
    }

    fn token(&mut self, now: Instant, fetch: FetchId, result: Result<String, TokenError>) {
        let Some(purpose) = self.fetches.remove(&fetch) else {
            return;
        };
        match purpose {
            FetchFor::Login => {
                if !matches!(self.phase, Phase::Fetching(f) if f == fetch) {
                    return;
                }
                match result {
                    Ok(token) => self.connect_with(token),
                    Err(error) => self.login_failed(RoomError::Token(error)),
                }
            }
            FetchFor::Renew => {
                let Some(room) = self.room.as_mut() else { return };
                if room.renewing != Some(fetch) {
                    return;
                }
                room.renewing = None;
                match result {
                    Ok(token) => self.send(Request::RenewToken { token: token.clone() }, Purpose::Renew { token }),
                    Err(error) => self.emit(EngineEvent::RequestFailed {
                        request: RequestKind::RenewToken,
                        error: RoomError::Token(error),
                    }),
                }
            }
            FetchFor::Reconnect => {
                if !matches!(
                    self.phase,
                    Phase::Reconnecting(Reconnect { step: ReconnectStep::Fetching(f), .. }) if f == fetch
                ) {
                    return;
                }
                match result {
                    Ok(token) => {
                        if let Some(room) = self.room.as_mut() {
                            room.token = token;
                        }
                        self.attempt_reconnect();
                    }
                    Err(error) => self.reconnect_failed(now, RoomError::Token(error)),
                }
            }
        }
    }

    fn response(&mut self, request: RequestId, result: Result<ResponseBody, SignalingError>) {
        let Some(purpose) = self.pending.remove(&request) else {
            return;
        };
        // Answered `Closed`: it went down with its connection, whose end (which may be reported
        // after this) sets it up again with the others in flight, in the order they were sent.
        if matches!(result, Err(SignalingError::Closed))
            && matches!(self.phase, Phase::InRoom(_))
            && matches!(
                purpose,
                Purpose::Pose | Purpose::Renew { .. } | Purpose::Withdraw(_) | Purpose::Message { .. }
            )
        {
            self.pending.insert(request, purpose);
            return;
        }
        match purpose {
            Purpose::Pose => {
                if let Some(room) = self.room.as_mut()
                    && room.pose_in_flight.is_some_and(|(id, _)| id == request)
                {
                    room.pose_in_flight = None;
                    if let Err(error) = result
                        && error != SignalingError::Closed
                    {
                        self.emit(EngineEvent::RequestFailed {
                            request: RequestKind::SetPose,
                            error: error.into(),
                        });
                    }
                    if let Some(pose) = self.room.as_mut().and_then(|room| room.pose_next.take()) {
                        self.set_pose(pose);
                    }
                }
            }
            Purpose::Logout => self.logged_out(result.map(drop)),
            Purpose::Renew { token } => {
                let Some(room) = self.room.as_mut() else { return };
                let room_id = room.room_id.clone();
                match result {
                    Ok(ResponseBody::TokenRenewed { expires_at }) => {
                        // A later reconnect presents the renewed token.
                        room.token = token.clone();
                        if !room.source.renews() {
                            room.source = TokenSource::Fixed(token);
                        }
                        self.emit(EngineEvent::TokenRenewed { room_id, expires_at });
                    }
                    Ok(other) => self.emit(EngineEvent::RequestFailed {
                        request: RequestKind::RenewToken,
                        error: RoomError::Protocol(format!("renewal answered with {other:?}")),
                    }),
                    Err(error) => self.emit(EngineEvent::RequestFailed {
                        request: RequestKind::RenewToken,
                        error: error.into(),
                    }),
                }
            }
            Purpose::Abandon(connection) => self.actions.push_back(Action::Disconnect { connection }),
            // The media connection went away meanwhile: its next one starts with the layer.
            Purpose::Layer => self.report_failure(result, RequestKind::SetVideoLayer, ErrorCode::NotPlaying),
            Purpose::Message { body, retried } => match result {
                Ok(_) | Err(SignalingError::Closed) => {}
                // Late: perhaps lost on the way; said once however often it arrives.
                Err(SignalingError::Timeout(_)) if !retried => {
                    self.send(body.clone(), Purpose::Message { body, retried: true });
                }
                Err(error) => self.emit(EngineEvent::RequestFailed {
                    request: RequestKind::SendMessage,
                    error: error.into(),
                }),
            },
            // The stream ended meanwhile: its next publication carries the state.
            Purpose::Mute => self.report_failure(result, RequestKind::SetStreamMute, ErrorCode::StreamNotFound),
            Purpose::Withdraw(_) => {
                if let Err(error) = result {
                    tracing::debug!(%error, "a withdraw was not confirmed");
                }
            }
        }
    }

    /// Reports a request that failed, unless its connection went away (its state is sent
    /// afresh with the media's next connection) or the server refused it with `gone` (what
    /// it was about ended meanwhile).
    fn report_failure(&mut self, result: Result<ResponseBody, SignalingError>, request: RequestKind, gone: ErrorCode) {
        match result {
            Err(SignalingError::Refused(body)) if body.code == gone => {}
            Err(SignalingError::Closed) | Ok(_) => {}
            Err(error) => self.emit(EngineEvent::RequestFailed {
                request,
                error: error.into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use holoroom_protocol::{ErrorBody, StreamInfo, StreamSource, UpdateType, UserId};

    use super::*;
    use crate::engine::PlayerState;
    use crate::stream::{AudioSource, StreamConfig, VideoSource};

    fn room() -> RoomId {
        RoomId::new("room").expect("valid")
    }

    fn user(id: &str) -> UserInfo {
        UserInfo {
            user_id: UserId::new(id).expect("valid"),
            user_name: id.into(),
        }
    }

    fn stream(id: &str) -> StreamId {
        StreamId::new(id).expect("valid")
    }

    fn local() -> LocalStream {
        LocalStream::create(StreamConfig {
            video: VideoSource::Custom,
            audio: AudioSource::Off,
            ..StreamConfig::test_pattern(64, 64, 10.0)
        })
        .expect("a custom stream")
    }

    fn response(session: &str, streams: &[&str]) -> Box<LoginResponse> {
        Box::new(LoginResponse {
            session_id: session.into(),
            room_id: room(),
            user: user("me"),
            spectator: false,
            resumed: false,
            own_streams: Vec::new(),
            token_expires_at: 0,
            users: vec![user("me"), user("other")],
            streams: streams
                .iter()
                .map(|id| StreamInfo {
                    stream_id: stream(id),
                    user: user("other"),
                    source: StreamSource::Camera,
                    extra_info: String::new(),
                    mute: Default::default(),
                })
                .collect(),
            poses: Vec::new(),
            messages: Vec::new(),
            room_instance: 1,
        })
    }

    /// A machine and a clock, with helpers that play the driver.
    struct Harness {
        machine: RoomMachine,
        now: Instant,
    }

    impl Harness {
        fn new() -> Harness {
            Harness {
                machine: RoomMachine::new(ReconnectPolicy::default()),
                now: Instant::now(),
            }
        }

        fn input(&mut self, input: Input) -> Vec<Action> {
            self.machine.handle(self.now, input);
            self.drain()
        }

        fn command(&mut self, command: Command) -> Vec<Action> {
            self.input(Input::Command(command))
        }

        fn drain(&mut self) -> Vec<Action> {
            std::iter::from_fn(|| self.machine.poll_action()).collect()
        }

        fn advance(&mut self, by: Duration) -> Vec<Action> {
            self.now += by;
            self.machine.handle_timeout(self.now);
            self.drain()
        }

        /// Logs in with a fixed token and answers the connection; returns the connection.
        /// The signaling connection drops (the machine starts reconnecting).
        fn drop_connection(&mut self, connection: ConnectionId) -> Vec<Action> {
            self.input(Input::Closed {
                connection,
                reason: "reset".into(),
            })
        }

        fn logged_in(&mut self, streams: &[&str]) -> ConnectionId {
            let actions = self.command(Command::Login {
                room_id: room(),
                token: TokenSource::Fixed("t".into()),
                user: user("me"),
                config: LoginConfig::default(),
            });
            let connection = connects(&actions).expect("a connection");
            self.input(Input::Connected {
                connection,
                result: Ok(response("s1", streams)),
            });
            connection
        }
    }

    fn connects(actions: &[Action]) -> Option<ConnectionId> {
        actions.iter().find_map(|a| match a {
            Action::Connect { connection, .. } => Some(*connection),
            _ => None,
        })
    }

    fn fetches(actions: &[Action]) -> Option<FetchId> {
        actions.iter().find_map(|a| match a {
            Action::FetchToken { fetch, .. } => Some(*fetch),
            _ => None,
        })
    }

    fn will_expire(connection: ConnectionId) -> Input {
        Input::ServerEvent {
            connection,
            event: Event::TokenWillExpire {
                room_id: room(),
                expires_in_secs: 30,
            },
        }
    }

    fn sends(actions: &[Action]) -> Vec<(RequestId, &Request)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send { request, body, .. } => Some((*request, body)),
                _ => None,
            })
            .collect()
    }

    fn started(actions: &[Action]) -> Vec<(MediaKey, u64)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::StartMedia { key, generation, .. } => Some((key.clone(), *generation)),
                _ => None,
            })
            .collect()
    }

    fn stopped(actions: &[Action]) -> Vec<(MediaKey, u64)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::StopMedia { key, generation } => Some((key.clone(), *generation)),
                _ => None,
            })
            .collect()
    }

    fn events(actions: &[Action]) -> Vec<&EngineEvent> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Emit(event) => Some(event),
                _ => None,
            })
            .collect()
    }

    fn publisher_states(actions: &[Action]) -> Vec<(PublisherState, Option<MediaError>)> {
        events(actions)
            .into_iter()
            .filter_map(|e| match e {
                EngineEvent::PublisherStateUpdate { state, error, .. } => Some((*state, error.clone())),
                _ => None,
            })
            .collect()
    }

    fn player_states(actions: &[Action]) -> Vec<(PlayerState, Option<MediaError>)> {
        events(actions)
            .into_iter()
            .filter_map(|e| match e {
                EngineEvent::PlayerStateUpdate { state, error, .. } => Some((*state, error.clone())),
                _ => None,
            })
            .collect()
    }

    fn pose(x: f32) -> Pose {
        Pose {
            position: [x, 0.0, 0.0],
            ..Pose::IDENTITY
        }
    }

    #[test]
    fn poses_are_latest_wins_with_one_in_flight() {
        let mut h = Harness::new();
        h.logged_in(&[]);
        let first = h.command(Command::SetPose(pose(1.0)));
        let (id, _) = sends(&first)[0];
        // While the first is out, later poses only replace each other.
        for x in 2..=30 {
            assert!(sends(&h.command(Command::SetPose(pose(x as f32)))).is_empty());
        }
        let after = h.input(Input::Response {
            request: id,
            result: Ok(ResponseBody::Ack),
        });
        let next = sends(&after);
        assert_eq!(next.len(), 1, "exactly the newest pose follows");
        assert!(matches!(next[0].1, Request::SetPose { pose } if pose.position[0] == 30.0));
        let done = h.input(Input::Response {
            request: next[0].0,
            result: Ok(ResponseBody::Ack),
        });
        assert!(sends(&done).is_empty(), "nothing left to send");
    }

    #[test]
    fn a_pose_in_flight_when_the_connection_drops_goes_again() {
        let mut h = Harness::new();
        let connection = h.logged_in(&[]);
        assert_eq!(sends(&h.command(Command::SetPose(pose(5.0)))).len(), 1);
        let attempt = connects(&h.drop_connection(connection)).expect("attempt");
        let back = h.input(Input::Connected {
            connection: attempt,
            result: Ok(response("s2", &[])),
        });
        assert!(
            sends(&back)
                .iter()
                .any(|(_, body)| matches!(body, Request::SetPose { pose } if pose.position[0] == 5.0)),
            "the last pose is sent again: {back:?}"
        );
    }

    #[test]
    fn a_reconnect_that_lands_after_logout_is_logged_out() {
        let mut h = Harness::new();
        let connection = h.logged_in(&[]);
        let attempt = connects(&h.drop_connection(connection)).expect("attempt");
        let out = h.command(Command::Logout);
        assert!(matches!(
            events(&out)[..],
            [EngineEvent::RoomStateChanged {
                reason: RoomStateReason::Logout,
                ..
            }]
        ));
        // The attempt resumed the session after all: it logs out, then closes.
        let late = h.input(Input::Connected {
            connection: attempt,
            result: Ok(response("s2", &[])),
        });
        let Some(Action::Send {
            connection: on,
            request,
            body: Request::Logout {},
        }) = late.first()
        else {
            panic!("expected a logout on the late connection, got {late:?}")
        };
        assert_eq!(*on, attempt);
        assert!(events(&late).is_empty(), "nothing to report: the app already left");
        let closed = h.input(Input::Response {
            request: *request,
            result: Ok(ResponseBody::Ack),
        });
        assert!(matches!(closed[..], [Action::Disconnect { connection: c }] if c == attempt));
    }

    #[test]
    fn a_mute_is_told_for_a_running_publication_and_again_once_one_comes_up() {
        let mut h = Harness::new();
        h.logged_in(&[]);
        let camera = local();
        let publish = h.command(Command::StartPublishing(stream("cam"), camera.clone()));
        let (key, generation) = started(&publish)[0].clone();
        // Setting up: the publish request carries the state; nothing is sent on its own.
        camera.set_audio_muted(true);
        assert!(sends(&h.command(Command::MuteChanged(camera.clone()))).is_empty());
        // Up: the state now is told, in case it switched after the request left.
        let up = h.input(Input::MediaUp { key, generation });
        let told = |actions: &[Action], audio, video| {
            matches!(sends(actions)[..], [(_, Request::SetStreamMute { stream_id, mute })]
                if stream_id.as_str() == "cam" && mute.audio == audio && mute.video == video)
        };
        assert!(told(&up, true, false), "{up:?}");
        camera.set_video_muted(true);
        assert!(told(&h.command(Command::MuteChanged(camera.clone())), true, true));
        // Another stream's switch is not this publication's.
        assert!(sends(&h.command(Command::MuteChanged(local()))).is_empty());
        // A refusal because the stream just ended is no news; another one is.
        let again = h.command(Command::MuteChanged(camera.clone()));
        let request = sends(&again)[0].0;
        let gone = h.input(Input::Response {
            request,
            result: Err(SignalingError::Refused(ErrorBody::new(
                ErrorCode::StreamNotFound,
                "gone",
            ))),
        });
        assert!(events(&gone).is_empty());
        let again = h.command(Command::MuteChanged(camera));
        let request = sends(&again)[0].0;
        let refused = h.input(Input::Response {
            request,
            result: Err(SignalingError::Refused(ErrorBody::new(
                ErrorCode::RateLimited,
                "slow down",
            ))),
        });
        assert!(matches!(
            events(&refused)[..],
            [EngineEvent::RequestFailed {
                request: RequestKind::SetStreamMute,
                ..
            }]
        ));
    }

    #[test]
    fn chat_in_flight_at_a_cut_goes_again_in_its_order_even_if_answers_come_first() {
        let mut h = Harness::new();
        let connection = h.logged_in(&[]);
        let say = |h: &mut Harness, text: &str, nonce| {
            let out = h.command(Command::SendMessage {
                text: text.into(),
                nonce,
            });
            sends(&out)[0].0
        };
        let first = say(&mut h, "a1", 1);
        let second = say(&mut h, "a2", 2);
        // The second's answer (Closed) is reported before the first's and before the
        // connection's end, as a driver may.
        for request in [second, first] {
            let answered = h.input(Input::Response {
                request,
                result: Err(SignalingError::Closed),
            });
            assert!(events(&answered).is_empty(), "no failure for a message that goes again");
        }
        let dropped = h.drop_connection(connection);
        let attempt = connects(&dropped).expect("an attempt at once");
        let back = h.input(Input::Connected {
            connection: attempt,
            result: Ok(response("s2", &[])),
        });
        let again: Vec<(&str, Option<u64>)> = sends(&back)
            .iter()
            .filter_map(|(_, body)| match body {
                Request::SendMessage { text, nonce } => Some((text.as_str(), *nonce)),
                _ => None,
            })
            .collect();
        assert_eq!(
            again,
            [("a1", Some(1)), ("a2", Some(2))],
            "in the order written, with their nonces"
        );
    }

    #[test]
    fn requests_do_not_wait_for_each_other() {
        let mut h = Harness::new();
        h.logged_in(&["cam"]);
        let pose_out = h.command(Command::SetPose(pose(1.0)));
        assert_eq!(sends(&pose_out).len(), 1);
        // With the pose unanswered, a publication, a renewal and a playback start at once.
        let publish = h.command(Command::StartPublishing(stream("mine"), local()));
        assert_eq!(started(&publish).len(), 1);
        let renew = h.command(Command::RenewToken("t2".into()));
        assert_eq!(sends(&renew).len(), 1);
        let play = h.command(Command::StartPlaying(stream("cam"), RemoteStream::default()));
        assert_eq!(started(&play).len(), 1);
    }

    #[test]
    fn publishing_the_same_stream_twice_keeps_it_and_another_stream_replaces_it() {
        let mut h = Harness::new();
        h.logged_in(&[]);
        let camera = local();
        let first = h.command(Command::StartPublishing(stream("cam"), camera.clone()));
        let (key, generation) = started(&first)[0].clone();
        h.input(Input::MediaUp {
            key: key.clone(),
            generation,
        });
        let again = h.command(Command::StartPublishing(stream("cam"), camera));
        assert!(started(&again).is_empty() && stopped(&again).is_empty());
        assert_eq!(
            publisher_states(&again),
            vec![(PublisherState::Publishing, Some(MediaError::Duplicate("publishing")))]
        );
        let replaced = h.command(Command::StartPublishing(stream("cam"), local()));
        assert_eq!(stopped(&replaced), vec![(key.clone(), generation)]);
        let (_, newer) = started(&replaced)[0].clone();
        assert!(newer > generation);
        assert_eq!(publisher_states(&replaced), vec![(PublisherState::Requesting, None)]);
    }

    #[test]
    fn playing_a_stream_again_replaces_the_old_slot() {
        let mut h = Harness::new();
        h.logged_in(&["cam"]);
        let old = RemoteStream::default();
        let first = h.command(Command::StartPlaying(stream("cam"), old.clone()));
        let (key, generation) = started(&first)[0].clone();
        let second = h.command(Command::StartPlaying(stream("cam"), RemoteStream::default()));
        assert_eq!(stopped(&second), vec![(key, generation)]);
        assert_eq!(started(&second).len(), 1);
        assert!(old.video.is_closed(), "the replaced slot is closed");
    }

    #[test]
    fn a_stop_reports_at_once_and_withdraws_the_generation_it_ends() {
        let mut h = Harness::new();
        h.logged_in(&[]);
        let first = h.command(Command::StartPublishing(stream("cam"), local()));
        let (key, generation) = started(&first)[0].clone();
        let stop = h.command(Command::StopPublishing(stream("cam")));
        assert_eq!(stopped(&stop), vec![(key.clone(), generation)]);
        assert_eq!(publisher_states(&stop), vec![(PublisherState::NoPublish, None)]);
        assert!(matches!(
            sends(&stop)[..],
            [(_, Request::StopPublishing { media_id: Some(m), .. })] if *m == generation
        ));
        // The old connection's end arrives late and changes nothing.
        let late = h.input(Input::MediaEnded {
            key,
            generation,
            error: None,
        });
        assert!(late.is_empty());
        // Stopping what is not published reports nothing.
        assert!(h.command(Command::StopPublishing(stream("cam"))).is_empty());
    }

    #[test]
    fn a_failed_path_is_set_up_again_with_back_off_under_a_new_generation() {
        let mut h = Harness::new();
        h.logged_in(&[]);
        let first = h.command(Command::StartPublishing(stream("cam"), local()));
        let (key, generation) = started(&first)[0].clone();
        h.input(Input::MediaUp {
            key: key.clone(),
            generation,
        });
        let failed = h.input(Input::MediaEnded {
            key: key.clone(),
            generation,
            error: Some(MediaError::Connection("ICE failed".into())),
        });
        assert_eq!(
            publisher_states(&failed),
            vec![(
                PublisherState::Requesting,
                Some(MediaError::Connection("ICE failed".into()))
            )]
        );
        assert!(sends(&failed).is_empty(), "a path failure is not withdrawn");
        assert_eq!(h.machine.poll_timeout(), Some(h.now + MEDIA_RETRY_FIRST));
        assert!(started(&h.advance(MEDIA_RETRY_FIRST / 2)).is_empty());
        let retried = h.advance(MEDIA_RETRY_FIRST);
        let (_, second) = started(&retried)[0].clone();
        assert!(second > generation);
        // It fails again before coming up: the wait doubles.
        h.input(Input::MediaEnded {
            key: key.clone(),
            generation: second,
            error: Some(MediaError::Connection("again".into())),
        });
        assert_eq!(h.machine.poll_timeout(), Some(h.now + MEDIA_RETRY_FIRST * 2));
    }

    #[test]
    fn a_failure_retrying_cannot_fix_ends_the_media_and_withdraws_it() {
        let mut h = Harness::new();
        h.logged_in(&["cam"]);
        let remote = RemoteStream::default();
        let first = h.command(Command::StartPlaying(stream("cam"), remote.clone()));
        let (key, generation) = started(&first)[0].clone();
        let ended = h.input(Input::MediaEnded {
            key,
            generation,
            error: Some(MediaError::Negotiation("no H.264".into())),
        });
        assert_eq!(
            player_states(&ended),
            vec![(PlayerState::NoPlay, Some(MediaError::Negotiation("no H.264".into())))]
        );
        assert!(matches!(
            sends(&ended)[..],
            [(_, Request::StopPlaying { media_id: Some(m), .. })] if *m == generation
        ));
        assert!(remote.video.is_closed());
    }

    #[test]
    fn a_reconnect_resumes_then_restarts_media_and_sends_what_waited() {
        let mut h = Harness::new();
        let connection = h.logged_in(&["cam", "gone"]);
        let publish = h.command(Command::StartPublishing(stream("mine"), local()));
        let (pkey, pgen) = started(&publish)[0].clone();
        h.input(Input::MediaUp {
            key: pkey.clone(),
            generation: pgen,
        });
        h.command(Command::StartPlaying(stream("cam"), RemoteStream::default()));
        let gone_slot = RemoteStream::default();
        h.command(Command::StartPlaying(stream("gone"), gone_slot.clone()));
        let dropped = h.drop_connection(connection);
        assert_eq!(stopped(&dropped).len(), 3, "every media connection stops");
        assert_eq!(
            publisher_states(&dropped),
            vec![(PublisherState::Requesting, None)],
            "what flowed is being set up again"
        );
        let attempt = connects(&dropped).expect("an attempt at once");
        let Some(Action::Connect { login, .. }) = dropped.iter().find(|a| matches!(a, Action::Connect { .. })) else {
            unreachable!()
        };
        assert_eq!(login.resume_session.as_deref(), Some("s1"), "the session is resumed");
        // Meanwhile: a pose, a stop and a publish wait for the connection.
        assert!(sends(&h.command(Command::SetPose(pose(7.0)))).is_empty());
        let stop = h.command(Command::StopPlaying(stream("cam")));
        assert!(sends(&stop).is_empty());
        assert_eq!(player_states(&stop), vec![(PlayerState::NoPlay, None)]);
        let back = h.input(Input::Connected {
            connection: attempt,
            result: Ok(response("s2", &["cam"])),
        });
        let requests = sends(&back);
        assert!(matches!(requests[0].1, Request::StopPlaying { media_id: Some(_), .. }));
        assert!(matches!(requests[1].1, Request::SetPose { .. }));
        let restarted = started(&back);
        assert_eq!(
            restarted.len(),
            1,
            "only the publication: cam was stopped, gone is gone"
        );
        assert_eq!(restarted[0].0, pkey);
        assert!(restarted[0].1 > pgen);
        assert!(gone_slot.video.is_closed());
    }

    #[test]
    fn reconnect_backs_off_and_gives_up_or_stops_at_a_refusal() {
        let mut h = Harness::new();
        let connection = h.logged_in(&[]);
        let dropped = h.drop_connection(connection);
        let mut attempt = connects(&dropped).expect("attempt");
        let mut reasons = Vec::new();
        let mut retries = Vec::new();
        loop {
            let failed = h.input(Input::Connected {
                connection: attempt,
                result: Err(RoomError::Unreachable {
                    url: "ws://x".into(),
                    reason: "refused".into(),
                }),
            });
            match events(&failed).first() {
                Some(EngineEvent::RoomStateChanged { reason, .. }) => {
                    reasons.push(*reason);
                    break;
                }
                Some(EngineEvent::ReconnectRetry { retry_in, .. }) => retries.push(*retry_in),
                other => panic!("a failed attempt says when the next one is, not {other:?}"),
            }
            let Some(at) = h.machine.poll_timeout() else {
                panic!("no next attempt")
            };
            let next = h.advance(at - h.now);
            attempt = connects(&next).expect("next attempt");
        }
        assert_eq!(reasons, vec![RoomStateReason::ReconnectFailed]);
        assert_eq!(
            retries[..4],
            [200, 400, 800, 1600].map(Duration::from_millis),
            "back-off doubles"
        );
        assert!(
            retries.iter().all(|r| *r <= Duration::from_secs(2)),
            "up to the policy's cap"
        );
        assert!(
            h.now >= Instant::now() + Duration::from_secs(25),
            "tried for about the policy's 30 s"
        );

        let mut h = Harness::new();
        let connection = h.logged_in(&[]);
        let attempt = connects(&h.drop_connection(connection)).expect("attempt");
        let refused = h.input(Input::Connected {
            connection: attempt,
            result: Err(RoomError::Refused(ErrorBody::new(ErrorCode::PermissionDenied, "no"))),
        });
        assert!(matches!(
            events(&refused)[..],
            [EngineEvent::RoomStateChanged {
                reason: RoomStateReason::ReconnectFailed,
                ..
            }]
        ));
    }

    #[test]
    fn an_expired_token_is_refetched_once_during_a_reconnect() {
        let mut h = Harness::new();
        let actions = h.command(Command::Login {
            room_id: room(),
            token: TokenSource::mint(|_| Ok("fresh".into())),
            user: user("me"),
            config: LoginConfig::default(),
        });
        let connection = connects(&actions).expect("a mint needs no fetch");
        h.input(Input::Connected {
            connection,
            result: Ok(response("s1", &[])),
        });
        let attempt = connects(&h.drop_connection(connection)).expect("attempt");
        let expired = h.input(Input::Connected {
            connection: attempt,
            result: Err(RoomError::Refused(ErrorBody::new(ErrorCode::TokenExpired, "expired"))),
        });
        let fetch = fetches(&expired).expect("a token fetch");
        let again = h.input(Input::Token {
            fetch,
            result: Ok("t2".into()),
        });
        let Some(Action::Connect { login, .. }) = again.first() else {
            panic!("expected a new attempt")
        };
        assert_eq!(login.token, "t2");
    }

    #[test]
    fn the_token_is_renewed_from_its_source_before_it_expires() {
        let mut h = Harness::new();
        let actions = h.command(Command::Login {
            room_id: room(),
            token: TokenSource::Guest {
                server_url: "ws://x".into(),
                spectator: false,
            },
            user: user("me"),
            config: LoginConfig::default(),
        });
        let fetch = fetches(&actions).expect("the guest source is asked first");
        let connect = h.input(Input::Token {
            fetch,
            result: Ok("t1".into()),
        });
        let connection = connects(&connect).expect("connect");
        h.input(Input::Connected {
            connection,
            result: Ok(response("s1", &[])),
        });
        let warned = h.input(will_expire(connection));
        assert!(matches!(events(&warned)[..], [EngineEvent::TokenWillExpire { .. }]));
        let fetch = fetches(&warned).expect("a renewal asks the source");
        let renew = h.input(Input::Token {
            fetch,
            result: Ok("t2".into()),
        });
        let (request, body) = sends(&renew)[0];
        assert!(matches!(body, Request::RenewToken { token } if token == "t2"));
        let renewed = h.input(Input::Response {
            request,
            result: Ok(ResponseBody::TokenRenewed { expires_at: 99 }),
        });
        assert!(matches!(
            events(&renewed)[..],
            [EngineEvent::TokenRenewed { expires_at: 99, .. }]
        ));
        // A failing source says why.
        let warned = h.input(will_expire(connection));
        let fetch = fetches(&warned).expect("a renewal asks the source");
        let failed = h.input(Input::Token {
            fetch,
            result: Err(TokenError::Refused {
                url: "http://x".into(),
                status: "503".into(),
            }),
        });
        assert!(matches!(
            events(&failed)[..],
            [EngineEvent::RequestFailed {
                request: RequestKind::RenewToken,
                error: RoomError::Token(TokenError::Refused { .. })
            }]
        ));
    }

    #[test]
    fn a_fixed_token_is_not_renewed_by_itself() {
        let mut h = Harness::new();
        let connection = h.logged_in(&[]);
        let warned = h.input(will_expire(connection));
        assert_eq!(fetches(&warned), None);
    }

    #[test]
    fn outside_a_room_every_command_is_answered_not_in_room() {
        let mut h = Harness::new();
        let actions = h.command(Command::StartPublishing(stream("cam"), local()));
        assert_eq!(
            publisher_states(&actions),
            vec![(PublisherState::NoPublish, Some(MediaError::NotInRoom))]
        );
        let remote = RemoteStream::default();
        let actions = h.command(Command::StartPlaying(stream("cam"), remote.clone()));
        assert_eq!(
            player_states(&actions),
            vec![(PlayerState::NoPlay, Some(MediaError::NotInRoom))]
        );
        assert!(remote.video.is_closed());
        assert!(matches!(
            events(&h.command(Command::SetPose(pose(1.0))))[..],
            [EngineEvent::RequestFailed {
                request: RequestKind::SetPose,
                error: RoomError::NotInRoom
            }]
        ));
        assert!(h.command(Command::Logout).is_empty());
    }

    #[test]
    fn logout_ends_the_media_without_withdraws_and_reports_once_answered() {
        let mut h = Harness::new();
        let connection = h.logged_in(&[]);
        h.command(Command::StartPublishing(stream("cam"), local()));
        let out = h.command(Command::Logout);
        assert_eq!(stopped(&out).len(), 1);
        assert_eq!(publisher_states(&out), vec![(PublisherState::NoPublish, None)]);
        let requests = sends(&out);
        assert!(matches!(requests[..], [(_, Request::Logout {})]));
        let done = h.input(Input::Response {
            request: requests[0].0,
            result: Ok(ResponseBody::Ack),
        });
        assert!(matches!(done[0], Action::Disconnect { connection: c } if c == connection));
        assert!(matches!(
            events(&done)[..],
            [EngineEvent::RoomStateChanged {
                reason: RoomStateReason::Logout,
                ..
            }]
        ));
    }

    #[test]
    fn a_kickout_ends_the_room_and_its_media() {
        let mut h = Harness::new();
        let connection = h.logged_in(&[]);
        h.command(Command::StartPublishing(stream("cam"), local()));
        let kicked = h.input(Input::ServerEvent {
            connection,
            event: Event::RoomStateChanged {
                room_id: room(),
                reason: RoomStateReason::Kickout,
                error: None,
                kickout: Some(holoroom_protocol::KickoutReason::DuplicateLogin),
            },
        });
        assert_eq!(stopped(&kicked).len(), 1);
        assert!(kicked.iter().any(|a| matches!(a, Action::Disconnect { .. })));
        assert!(
            h.command(Command::SetPose(pose(1.0)))
                .iter()
                .any(|a| matches!(a, Action::Emit(EngineEvent::RequestFailed { .. })))
        );
    }

    #[test]
    fn shutdown_logs_out_briefly_and_finishes() {
        let mut h = Harness::new();
        h.logged_in(&[]);
        let out = h.input(Input::Shutdown);
        assert!(matches!(sends(&out)[..], [(_, Request::Logout {})]));
        assert!(!h.machine.is_finished());
        let late = h.advance(LOGOUT_ON_DROP);
        assert!(late.iter().any(|a| matches!(a, Action::Disconnect { .. })));
        assert!(h.machine.is_finished());

        let mut idle = Harness::new();
        idle.input(Input::Shutdown);
        assert!(idle.machine.is_finished());
    }

    #[test]
    fn stream_updates_pass_through_in_order() {
        let mut h = Harness::new();
        let connection = h.logged_in(&[]);
        let added = h.input(Input::ServerEvent {
            connection,
            event: Event::RoomStreamUpdate {
                room_id: room(),
                update: UpdateType::Add,
                streams: response("s", &["cam"]).streams,
            },
        });
        assert!(matches!(
            events(&added)[..],
            [EngineEvent::RoomStreamUpdate {
                update: UpdateType::Add,
                ..
            }]
        ));
        // Events of a connection that is no longer current are dropped.
        assert!(
            h.input(Input::ServerEvent {
                connection: connection + 100,
                event: Event::RoomStreamUpdate {
                    room_id: room(),
                    update: UpdateType::Delete,
                    streams: response("s", &["cam"]).streams,
                },
            })
            .is_empty()
        );
    }
}
