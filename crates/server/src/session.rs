//! One signaling connection: reads requests, answers them, forwards the hub's events,
//! and runs the session's timers (login deadline, token expiry).
//!
//! Events are numbered here, as they are written, so `seq` has no gaps.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use holoroom_protocol::{
    ClientMessage, ErrorBody, ErrorCode, Event, KickoutReason, LoginRequest, LoginResponse, MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION, PlayRequest, PublishRequest, Request, ResponseBody, RoomId, RoomStateReason, ServerMessage,
    StreamId, UserId, UserInfo, close_code, validate_user_name,
};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::http::{Addresses, Peer};
use crate::hub::{Hub, ToSession};
use crate::rooms::{Identity, PublishCheck, RoomStream, SessionId};
use crate::sfu::SfuError;
use crate::sfu::offer::{OfferUse, check_offer};

/// The error a client sees when the SFU refuses its media.
fn media_refused(error: SfuError) -> ErrorBody {
    let code = match error {
        SfuError::BadOffer(_) | SfuError::Rejected(_) => ErrorCode::InvalidArgument,
        SfuError::NoPublisher(_) => ErrorCode::StreamNotFound,
        SfuError::OwnedByOther(_) => ErrorCode::StreamOwnedByOther,
        SfuError::BadAddress(..) | SfuError::Stopped => ErrorCode::Internal,
    };
    ErrorBody::new(code, error.to_string())
}

/// Token lifetimes beyond this are treated as this (the timer needs a representable instant).
const MAX_SESSION_SECS: u64 = 366 * 24 * 3600;
/// The server pings every connection this often...
const PING_INTERVAL: Duration = Duration::from_secs(15);
/// ...and drops one it has not heard from (any frame, pongs included) for this long.
const SILENCE_LIMIT: Duration = Duration::from_secs(45);
/// A write to the socket that takes longer than this means the peer is gone or not reading.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// A token bucket limiting requests per connection.
#[derive(Debug)]
struct RateLimit {
    tokens: f64,
    last: Instant,
    rate: f64,
    burst: f64,
}

impl RateLimit {
    fn new(rate: f64, burst: f64) -> Self {
        Self {
            tokens: burst,
            last: Instant::now(),
            rate,
            burst,
        }
    }

    fn allow(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The part of a session that exists while it is in a room.
#[derive(Debug)]
struct InRoom {
    room_id: RoomId,
    user_id: UserId,
    /// When the token stops being accepted.
    expires_at: Instant,
    warned: bool,
    /// The media ID of each publication (true) and playback (false) this session started
    /// last, so that a stop naming an older media connection is told apart.
    media: HashMap<(bool, StreamId), u64>,
}

impl InRoom {
    /// Whether a stop naming `media_id` is late: this session has started a newer media
    /// connection for the stream since (media IDs only grow). A stop naming a newer one than
    /// the server knows (its start never arrived or was refused) still ends the stream.
    fn is_stale(&self, publishing: bool, stream_id: &StreamId, media_id: Option<u64>) -> bool {
        let current = self.media.get(&(publishing, stream_id.clone()));
        matches!((media_id, current), (Some(named), Some(current)) if named < *current)
    }

    fn started(&mut self, publishing: bool, stream_id: &StreamId, media_id: Option<u64>) {
        match media_id {
            Some(id) => self.media.insert((publishing, stream_id.clone()), id),
            None => self.media.remove(&(publishing, stream_id.clone())),
        };
    }
}

/// How a session ends.
enum Exit {
    /// The peer went away or the socket failed.
    Dropped,
    /// Close the socket with this code and reason.
    Close(u16, &'static str),
}

struct Session {
    id: SessionId,
    hub: Arc<Hub>,
    /// Where the connection comes from; it holds the connection's place in its address's count.
    peer: Peer,
    addresses: Arc<Addresses>,
    socket: WebSocket,
    seq: u64,
    in_room: Option<InRoom>,
    login_deadline: Instant,
    rate: RateLimit,
    /// When the peer last sent anything.
    last_heard: Instant,
}

/// Whether a read failed because a text frame was not UTF-8 (the socket is still usable to
/// say so with a close frame). The WebSocket layer reports it only as text.
fn is_invalid_utf8(err: &axum::Error) -> bool {
    err.to_string().contains("UTF-8")
}

/// Closes a connection over its address's cap, saying why.
pub(crate) async fn refuse(mut socket: WebSocket, cap: usize) {
    let reason = format!("too many connections from this address (at most {cap}); close some and try again");
    let frame = CloseFrame {
        code: close_code::POLICY,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
}

/// Runs one connection to its end.
pub(crate) async fn run(
    socket: WebSocket,
    peer: Peer,
    addresses: Arc<Addresses>,
    hub: Arc<Hub>,
    mut shutdown: watch::Receiver<bool>,
) {
    let registration = hub.register();
    let config = hub.config.clone();
    let mut session = Session {
        id: registration.id,
        hub: hub.clone(),
        peer,
        addresses,
        socket,
        seq: 0,
        in_room: None,
        login_deadline: Instant::now() + config.login_timeout,
        rate: RateLimit::new(config.rate_per_second, config.rate_burst),
        last_heard: Instant::now(),
    };
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.tick().await;
    let mut queue = registration.queue;
    let overflow = registration.overflow;
    tracing::debug!(session = session.id, "connected");

    let exit = loop {
        let far = Instant::now() + Duration::from_secs(86_400);
        let clock = &config.clock;
        let far_on_clock = clock.now() + Duration::from_secs(86_400);
        let (warn_at, expire_at) = match &session.in_room {
            Some(r) => (
                if r.warned {
                    far_on_clock
                } else {
                    r.expires_at
                        .checked_sub(config.token_expiry_warning)
                        .unwrap_or(r.expires_at)
                },
                r.expires_at,
            ),
            None => (far_on_clock, far_on_clock),
        };
        let login_deadline = if session.in_room.is_none() {
            session.login_deadline
        } else {
            far
        };
        let step = tokio::select! {
            incoming = session.socket.recv() => match incoming {
                Some(Ok(message)) => {
                    session.last_heard = Instant::now();
                    session.on_message(message).await
                }
                Some(Err(err)) if is_invalid_utf8(&err) => {
                    Err(Exit::Close(close_code::INVALID_DATA, "text frames must be UTF-8"))
                }
                Some(Err(err)) => {
                    tracing::debug!(session = session.id, %err, "socket error");
                    Err(Exit::Dropped)
                }
                None => Err(Exit::Dropped),
            },
            Some(out) = queue.recv() => session.on_hub(out).await,
            () = overflow.notified() => Err(Exit::Close(close_code::TRY_AGAIN_LATER, "too slow to receive events")),
            () = tokio::time::sleep_until(login_deadline) => Err(Exit::Close(close_code::POLICY, "no login in time")),
            () = clock.sleep_until(warn_at) => session.warn_expiry().await,
            () = clock.sleep_until(expire_at) => session.expire().await,
            _ = shutdown.changed() => session.shut_down(),
            _ = ping.tick() => {
                if session.last_heard.elapsed() > SILENCE_LIMIT {
                    tracing::debug!(session = session.id, "silent too long; dropping");
                    Err(Exit::Dropped)
                } else {
                    session.send_raw(Message::Ping(Default::default())).await
                }
            }
        };
        if let Err(exit) = step {
            break exit;
        }
    };

    if let Exit::Close(code, reason) = exit {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        };
        let _ = session.send_raw(Message::Close(Some(frame))).await;
    }
    tracing::debug!(session = session.id, "disconnected");
    hub.unregister(session.id);
}

impl Session {
    async fn send(&mut self, message: &ServerMessage) -> Result<(), Exit> {
        self.send_raw(Message::Text(message.to_json().into())).await
    }

    /// Writes a frame; a peer that does not take it within [`SEND_TIMEOUT`] is treated as gone.
    async fn send_raw(&mut self, message: Message) -> Result<(), Exit> {
        match tokio::time::timeout(SEND_TIMEOUT, self.socket.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(Exit::Dropped),
        }
    }

    async fn send_event(&mut self, event: Event) -> Result<(), Exit> {
        self.seq += 1;
        let message = ServerMessage::Event { seq: self.seq, event };
        self.send(&message).await
    }

    async fn respond(&mut self, id: Option<u64>, result: Result<ResponseBody, ErrorBody>) -> Result<(), Exit> {
        self.send(&ServerMessage::Response {
            id,
            result: result.into(),
        })
        .await
    }

    async fn on_message(&mut self, message: Message) -> Result<(), Exit> {
        let text = match message {
            Message::Text(text) => text,
            Message::Binary(_) => {
                return Err(Exit::Close(
                    close_code::UNSUPPORTED_DATA,
                    "binary frames are not accepted",
                ));
            }
            Message::Close(_) => return Err(Exit::Dropped),
            Message::Ping(_) | Message::Pong(_) => return Ok(()),
        };
        if text.len() > MAX_MESSAGE_BYTES {
            return Err(Exit::Close(close_code::MESSAGE_TOO_BIG, "message larger than 64 KiB"));
        }
        if !self.rate.allow() {
            let id = ClientMessage::parse(&text).ok().map(|m| m.id);
            return self
                .respond(
                    id,
                    Err(ErrorBody::new(ErrorCode::RateLimited, "too many requests; slow down")),
                )
                .await;
        }
        let message = match ClientMessage::parse(&text) {
            Ok(message) => message,
            Err(malformed) => {
                let error = ErrorBody::new(ErrorCode::MalformedMessage, malformed.reason);
                return self.respond(malformed.id, Err(error)).await;
            }
        };
        let (result, events) = self.handle(message.request).await;
        self.respond(Some(message.id), result).await?;
        for event in events {
            self.send_event(event).await?;
        }
        Ok(())
    }

    /// Runs a room operation for this session, answered with an acknowledgement and this
    /// session's share of what it caused.
    fn acked(
        &self,
        op: impl FnOnce(&mut crate::rooms::Rooms) -> Result<crate::rooms::Outputs, ErrorBody>,
    ) -> Result<(ResponseBody, Vec<Event>), ErrorBody> {
        self.hub
            .lock()
            .apply(self.id, |rooms| Ok(((), op(rooms)?)))
            .map(|((), events)| (ResponseBody::Ack, events))
    }

    /// Answers one request; the events returned are this session's share of what it caused.
    async fn handle(&mut self, request: Request) -> (Result<ResponseBody, ErrorBody>, Vec<Event>) {
        let id = self.id;
        let result = match request {
            Request::Login(login) => self.login(login),
            Request::Logout {} => {
                let left = self.hub.lock().apply(id, |rooms| Ok(((), rooms.logout(id)?)));
                if left.is_ok() {
                    self.hub.sfu().drop_session(id);
                    self.in_room = None;
                    self.login_deadline = Instant::now() + self.hub.config.login_timeout;
                }
                left.map(|((), events)| (ResponseBody::Ack, events))
            }
            Request::RenewToken { token } => self.renew(&token).map(|body| (body, Vec::new())),
            Request::StartPublishing(publish) => {
                let (stream_id, media_id) = (publish.stream_id.clone(), publish.media_id);
                let started = self.start_publishing(publish).await;
                self.note_start(true, &stream_id, media_id, started.is_ok());
                started
            }
            // A stop for an older media connection (a newer one took the stream over) changes nothing.
            Request::StopPublishing { stream_id, media_id } if self.stop_is_stale(true, &stream_id, media_id) => {
                Ok((ResponseBody::Ack, Vec::new()))
            }
            Request::StopPublishing { stream_id, .. } => self.acked(|rooms| rooms.stop_publishing(id, &stream_id)),
            Request::SetStreamExtraInfo { stream_id, extra_info } => {
                self.acked(|rooms| rooms.set_extra_info(id, &stream_id, extra_info))
            }
            Request::SendMessage { text, nonce } => {
                let now = self.hub.config.clock.unix_now();
                self.hub
                    .lock()
                    .apply_in_order(|rooms| Ok(((), rooms.send_message(id, text, nonce, now)?)))
                    .map(|()| (ResponseBody::Ack, Vec::new()))
            }
            Request::SetStreamMute { stream_id, mute } => self.acked(|rooms| rooms.set_mute(id, &stream_id, mute)),
            Request::StartPlaying(play) => {
                let (stream_id, media_id) = (play.stream_id.clone(), play.media_id);
                let started = self.start_playing(play).await;
                self.note_start(false, &stream_id, media_id, started.is_ok());
                started
            }
            Request::StopPlaying { stream_id, media_id } if self.stop_is_stale(false, &stream_id, media_id) => {
                Ok((ResponseBody::Ack, Vec::new()))
            }
            Request::StopPlaying { stream_id, .. } => {
                let stopped = self.hub.lock().rooms().stop_playing(id, &stream_id);
                if stopped.is_ok()
                    && let Some(stream) = self.room_stream(&stream_id)
                {
                    self.hub.sfu().unsubscribe(id, stream);
                }
                stopped.map(|()| (ResponseBody::Ack, Vec::new()))
            }
            Request::Trickle { .. } => Err(ErrorBody::new(
                ErrorCode::NotSupported,
                "the media relay is ICE-lite and takes complete offers; trickled candidates are not used",
            )),
            Request::SetPose { pose } => self.acked(|rooms| rooms.set_pose(id, pose)),
            Request::SetVideoLayer { stream_id, layer } => {
                let playing = self.hub.lock().rooms().check_playing(id, &stream_id);
                playing.map(|()| {
                    if let Some(stream) = self.room_stream(&stream_id) {
                        self.hub.sfu().set_layer(id, stream, layer);
                    }
                    (ResponseBody::Ack, Vec::new())
                })
            }
        };
        match result {
            Ok((body, events)) => (Ok(body), events),
            Err(error) => (Err(error), Vec::new()),
        }
    }

    /// `stream_id` of this session's room, as the media relay knows it.
    fn room_stream(&self, stream_id: &StreamId) -> Option<RoomStream> {
        self.in_room
            .as_ref()
            .map(|in_room| RoomStream::new(&in_room.room_id, stream_id))
    }

    /// Records the media connection (`media_id`) a start set up, when it did.
    fn note_start(&mut self, publishing: bool, stream_id: &StreamId, media_id: Option<u64>, started: bool) {
        if started && let Some(in_room) = &mut self.in_room {
            in_room.started(publishing, stream_id, media_id);
        }
    }

    /// Whether a stop names an older media connection than the newest this session started
    /// for the stream; if not, the stream's media connection is forgotten (the stop ends it).
    fn stop_is_stale(&mut self, publishing: bool, stream_id: &StreamId, media_id: Option<u64>) -> bool {
        let Some(in_room) = &mut self.in_room else {
            return false;
        };
        let stale = in_room.is_stale(publishing, stream_id, media_id);
        if !stale {
            in_room.started(publishing, stream_id, None);
        }
        stale
    }

    /// Lists a stream and, with an SDP offer, connects its media to the SFU. A stream this user
    /// already publishes only gets its media connection replaced (after a reconnect).
    async fn start_publishing(&mut self, publish: PublishRequest) -> Result<(ResponseBody, Vec<Event>), ErrorBody> {
        let id = self.id;
        let Some(offer) = publish.sdp_offer.clone() else {
            return self
                .hub
                .lock()
                .apply(id, |rooms| Ok(((), rooms.start_publishing(id, &publish)?)))
                .map(|((), events)| (ResponseBody::Publishing { sdp_answer: None }, events));
        };
        check_offer(&offer, OfferUse::Publish).map_err(|why| ErrorBody::new(ErrorCode::InvalidArgument, why))?;
        let check = self.hub.lock().rooms().check_publish(id, &publish)?;
        let Some(in_room) = &self.in_room else {
            return Err(ErrorBody::new(ErrorCode::NotLoggedIn, "log into a room first"));
        };
        let owner = format!("{}/{}", in_room.room_id, in_room.user_id);
        let stream = RoomStream::new(&in_room.room_id, &publish.stream_id);
        let sfu = self.hub.sfu();
        let (peer, answer) = sfu.publish(stream.clone(), owner, offer).await.map_err(media_refused)?;
        let events = match check {
            // The same stream on a new media connection: it stays listed; only its mute state
            // may have changed meanwhile.
            PublishCheck::AlreadyMine => self
                .hub
                .lock()
                .apply(id, |rooms| {
                    Ok(((), rooms.set_mute(id, &publish.stream_id, publish.mute)?))
                })
                .map(|((), events)| events)
                .unwrap_or_default(),
            PublishCheck::New => {
                let listed = self
                    .hub
                    .lock()
                    .apply(id, |rooms| Ok(((), rooms.start_publishing(id, &publish)?)));
                match listed {
                    Ok(((), events)) => events,
                    Err(error) => {
                        sfu.unpublish_peer(stream, peer);
                        return Err(error);
                    }
                }
            }
        };
        Ok((
            ResponseBody::Publishing {
                sdp_answer: Some(answer),
            },
            events,
        ))
    }

    /// Subscribes to a listed stream and, with an SDP offer, connects its media from the SFU.
    /// Playing a stream again with a new offer replaces the media connection.
    async fn start_playing(&mut self, play: PlayRequest) -> Result<(ResponseBody, Vec<Event>), ErrorBody> {
        let id = self.id;
        if let Some(offer) = &play.sdp_offer {
            check_offer(offer, OfferUse::Play).map_err(|why| ErrorBody::new(ErrorCode::InvalidArgument, why))?;
        }
        let started = self.hub.lock().rooms().start_playing(id, &play.stream_id);
        let stream = match (started, &play.sdp_offer) {
            (Ok(stream), _) => stream,
            (Err(e), Some(_)) if e.code == ErrorCode::AlreadyPlaying => {
                if let Some(stream) = self.room_stream(&play.stream_id) {
                    self.hub.sfu().unsubscribe(id, stream);
                }
                self.hub.lock().rooms().stream_info(id, &play.stream_id)?
            }
            (Err(e), _) => return Err(e),
        };
        let (Some(offer), Some(key)) = (play.sdp_offer, self.room_stream(&play.stream_id)) else {
            return Ok((
                ResponseBody::Playing {
                    stream,
                    sdp_answer: None,
                },
                Vec::new(),
            ));
        };
        match self.hub.sfu().subscribe(id, key, offer, play.video_layer).await {
            Ok(answer) => Ok((
                ResponseBody::Playing {
                    stream,
                    sdp_answer: Some(answer),
                },
                Vec::new(),
            )),
            Err(error) => {
                let _ = self.hub.lock().rooms().stop_playing(id, &play.stream_id);
                Err(media_refused(error))
            }
        }
    }

    /// Verifies a token for `room_id` and `user_id` and returns who it says the bearer is.
    fn identify(
        &self,
        token: &str,
        room_id: &RoomId,
        user_id: &UserId,
        name: &str,
    ) -> Result<(Identity, u64), ErrorBody> {
        let keys = &self.hub.config.keys;
        let claims = keys.verify(token, self.hub.config.clock.unix_now())?;
        if claims.video.room != room_id.as_str() {
            return Err(ErrorBody::new(
                ErrorCode::TokenRoomMismatch,
                format!("the token is for room {:?}, not {room_id}", claims.video.room),
            ));
        }
        if claims.sub != user_id.as_str() {
            return Err(ErrorBody::new(
                ErrorCode::TokenUserMismatch,
                format!("the token is for user {:?}, not {user_id}", claims.sub),
            ));
        }
        if !claims.video.room_join {
            return Err(ErrorBody::new(
                ErrorCode::PermissionDenied,
                "the token does not allow joining rooms",
            ));
        }
        let user_name = claims.name.clone().unwrap_or_else(|| name.to_owned());
        validate_user_name(&user_name).map_err(|m| ErrorBody::new(ErrorCode::InvalidArgument, m))?;
        let expires_at = keys.expires_at(&claims);
        Ok((
            Identity {
                room_id: room_id.clone(),
                user: UserInfo {
                    user_id: user_id.clone(),
                    user_name,
                },
                grant: claims.video,
            },
            expires_at,
        ))
    }

    fn login(&mut self, login: LoginRequest) -> Result<(ResponseBody, Vec<Event>), ErrorBody> {
        if login.protocol != PROTOCOL_VERSION {
            return Err(ErrorBody::new(
                ErrorCode::UnsupportedVersion,
                format!(
                    "protocol {} is not spoken here; this server speaks {PROTOCOL_VERSION}",
                    login.protocol
                ),
            ));
        }
        if self.in_room.is_some() {
            return Err(ErrorBody::new(
                ErrorCode::AlreadyLoggedIn,
                "this session is already in a room; log out first",
            ));
        }
        let ip = self.peer.addr.ip();
        if !self.addresses.may_log_in(ip) {
            return Err(ErrorBody::new(
                ErrorCode::RateLimited,
                "too many failed logins from this address; wait a minute before trying again",
            ));
        }
        let (identity, expires_at) = self
            .identify(&login.token, &login.room_id, &login.user.user_id, &login.user.user_name)
            .inspect_err(|_| self.addresses.login_failed(ip))?;
        let spectator = identity.grant.hidden;
        let user = identity.user.clone();
        let resume = login
            .resume_session
            .as_deref()
            .and_then(|s| s.parse::<SessionId>().ok());
        let id = self.id;
        let (joined, events) = self
            .hub
            .lock()
            .apply(id, |rooms| rooms.login(id, identity, login.config.user_update, resume))?;
        let clock = &self.hub.config.clock;
        let remaining = expires_at.saturating_sub(clock.unix_now()).min(MAX_SESSION_SECS);
        self.in_room = Some(InRoom {
            room_id: login.room_id.clone(),
            user_id: user.user_id.clone(),
            expires_at: clock.now() + Duration::from_secs(remaining),
            warned: false,
            media: HashMap::new(),
        });
        tracing::info!(session = id, room = %login.room_id, user = %user.user_id, spectator, "logged in");
        Ok((
            ResponseBody::LoggedIn(Box::new(LoginResponse {
                session_id: id.to_string(),
                room_id: login.room_id,
                user,
                spectator,
                resumed: joined.resumed,
                own_streams: joined.own_streams,
                token_expires_at: expires_at,
                users: joined.users,
                streams: joined.streams,
                poses: joined.poses,
                messages: joined.messages,
                room_instance: joined.room_instance,
            })),
            events,
        ))
    }

    fn renew(&mut self, token: &str) -> Result<ResponseBody, ErrorBody> {
        let Some(in_room) = &self.in_room else {
            return Err(ErrorBody::new(ErrorCode::NotLoggedIn, "log into a room first"));
        };
        let (identity, expires_at) = self.identify(token, &in_room.room_id, &in_room.user_id, "")?;
        let mut hub = self.hub.lock();
        hub.rooms().check_renewal(self.id, &identity)?;
        hub.rooms().renew(self.id, identity.grant)?;
        drop(hub);
        let clock = &self.hub.config.clock;
        let remaining = expires_at.saturating_sub(clock.unix_now()).min(MAX_SESSION_SECS);
        if let Some(in_room) = &mut self.in_room {
            in_room.expires_at = clock.now() + Duration::from_secs(remaining);
            in_room.warned = false;
        }
        Ok(ResponseBody::TokenRenewed { expires_at })
    }

    async fn on_hub(&mut self, out: ToSession) -> Result<(), Exit> {
        match out {
            ToSession::Event(event) => self.send_event(event).await,
            ToSession::Kickout(reason) => {
                self.kicked(reason).await?;
                let why = match reason {
                    KickoutReason::DuplicateLogin => "logged in elsewhere",
                    _ => "kicked out",
                };
                Err(Exit::Close(close_code::POLICY, why))
            }
        }
    }

    /// Tells the client it was removed from its room.
    async fn kicked(&mut self, reason: KickoutReason) -> Result<(), Exit> {
        let Some(in_room) = self.in_room.take() else {
            return Ok(());
        };
        self.send_event(Event::RoomStateChanged {
            room_id: in_room.room_id,
            reason: RoomStateReason::Kickout,
            error: None,
            kickout: Some(reason),
        })
        .await
    }

    async fn warn_expiry(&mut self) -> Result<(), Exit> {
        let Some(in_room) = &mut self.in_room else {
            return Ok(());
        };
        in_room.warned = true;
        let event = Event::TokenWillExpire {
            room_id: in_room.room_id.clone(),
            expires_in_secs: in_room
                .expires_at
                .saturating_duration_since(self.hub.config.clock.now())
                .as_secs(),
        };
        self.send_event(event).await
    }

    async fn expire(&mut self) -> Result<(), Exit> {
        let id = self.id;
        {
            let mut hub = self.hub.lock();
            let outputs = hub.rooms().kick(id, KickoutReason::TokenExpired);
            hub.deliver(Some(id), outputs);
        }
        self.kicked(KickoutReason::TokenExpired).await?;
        Err(Exit::Close(close_code::POLICY, "token expired"))
    }

    /// The server is stopping: the member stays listed (the room is not told it left) and
    /// the socket closes with 1012, so the client reconnects to the server that comes back.
    fn shut_down(&self) -> Result<(), Exit> {
        Err(Exit::Close(close_code::SERVICE_RESTART, "server restarting; reconnect"))
    }
}
