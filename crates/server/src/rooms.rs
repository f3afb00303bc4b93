//! The room core: rooms, members and streams as plain data, with no sockets, tasks or clocks.
//!
//! Every operation takes the acting session and returns the events it causes as
//! [`Outputs`]; the caller delivers them in order. Because one lock guards the whole
//! core, every observer sees the same changes in the same order.
//!
//! Architecture Invariant: a stream is listed only while its publisher is a member of
//! the room; a user ID is a member of at most one room; hidden members are never listed
//! or counted and own no streams.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use holoroom_protocol::{
    CHAT_HISTORY, CHAT_HISTORY_BYTES, ChatMessage, ErrorBody, ErrorCode, Event, KickoutReason, Pose, PublishRequest,
    RoomId, Speaker, StreamId, StreamInfo, StreamMute, UpdateType, UserId, UserInfo, UserPose, VideoGrant,
    validate_chat, validate_extra_info,
};
use serde::Serialize;

/// A connection's identity inside the server.
pub type SessionId = u64;

/// Caps that keep one server from being exhausted.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_rooms: usize,
    /// Visible members per room (spectators are not counted).
    pub max_users_per_room: usize,
    /// Hidden members per room.
    pub max_spectators_per_room: usize,
    pub max_streams_per_room: usize,
    pub max_streams_per_user: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_rooms: 1000,
            max_users_per_room: 50,
            max_spectators_per_room: 200,
            max_streams_per_room: 100,
            max_streams_per_user: 4,
        }
    }
}

/// Who a verified token says the session is.
#[derive(Debug, Clone)]
pub struct Identity {
    pub room_id: RoomId,
    pub user: UserInfo,
    pub grant: VideoGrant,
}

/// What an operation asks the caller to do, in order.
#[derive(Debug, Default, PartialEq)]
pub struct Outputs {
    pub deliveries: Vec<(SessionId, Event)>,
    /// Sessions that lost their membership and must be told why.
    pub kicks: Vec<(SessionId, KickoutReason)>,
    /// Streams no longer listed, whose media must stop.
    pub unpublished: Vec<RoomStream>,
}

/// A stream as the server's media knows it: stream IDs are unique within their room, so the
/// same ID in two rooms is two streams.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomStream {
    pub room: RoomId,
    pub stream: StreamId,
}

impl RoomStream {
    pub fn new(room: &RoomId, stream: &StreamId) -> RoomStream {
        RoomStream {
            room: room.clone(),
            stream: stream.clone(),
        }
    }
}

impl std::fmt::Display for RoomStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} in room {}", self.stream, self.room)
    }
}

/// Whether a publish request is for a new stream or one the user already publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishCheck {
    New,
    /// Listed already, by this user: only its media connection may be replaced.
    AlreadyMine,
}

/// The result of a successful login: the room as it is at that moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Joined {
    /// Took over a dropped session of the same user within its grace window.
    pub resumed: bool,
    /// This user's streams still listed from that session.
    pub own_streams: Vec<StreamInfo>,
    /// Other visible members (empty unless the session asked for user updates).
    pub users: Vec<UserInfo>,
    /// Other members' streams.
    pub streams: Vec<StreamInfo>,
    /// Other visible members' poses.
    pub poses: Vec<UserPose>,
    /// The room's latest chat messages, oldest first.
    pub messages: Vec<ChatMessage>,
    /// This life of the room (chat numbers count within it).
    pub room_instance: u64,
}

#[derive(Debug)]
struct Member {
    session: SessionId,
    info: UserInfo,
    grant: VideoGrant,
    user_update: bool,
    pose: Option<Pose>,
    /// False while the socket is gone but the grace window has not run out.
    connected: bool,
    playing: HashSet<StreamId>,
}

impl Member {
    fn hidden(&self) -> bool {
        self.grant.hidden
    }
}

#[derive(Debug, Default)]
struct Room {
    /// Members by user ID, in a stable order.
    members: BTreeMap<UserId, Member>,
    streams: BTreeMap<StreamId, StreamInfo>,
    /// The active speakers last announced, loudest first.
    speakers: Vec<StreamId>,
    /// This life of the room: random, so that clients tell a room that emptied (or a server
    /// that restarted) from the one they knew.
    instance: u64,
    /// The latest chat messages (up to [`CHAT_HISTORY`] and [`CHAT_HISTORY_BYTES`]), oldest first.
    messages: VecDeque<ChatMessage>,
    /// The last chat message's number.
    last_message: u64,
    /// Each sender's numbers for its recent messages (kept while the room lives, so a member
    /// coming back still has its own), to say a message sent again only once.
    nonces: HashMap<UserId, VecDeque<u64>>,
}

impl Room {
    /// A room at the start of its life.
    fn starting() -> Room {
        Room {
            instance: rand::random::<u64>().max(1),
            ..Room::default()
        }
    }

    fn visible_count(&self) -> usize {
        self.members.values().filter(|m| !m.hidden()).count()
    }

    fn broadcast(&self, out: &mut Outputs, except: Option<&UserId>, wants: impl Fn(&Member) -> bool, event: &Event) {
        for (user_id, member) in &self.members {
            if Some(user_id) != except && member.connected && wants(member) {
                out.deliveries.push((member.session, event.clone()));
            }
        }
    }
}

/// At most how many bytes a chat message takes in JSON: escaping at most doubles its text and
/// names (control characters other than line breaks and tabs are refused), and its numbers
/// and keys take less than 100.
fn wire_bytes(message: &ChatMessage) -> usize {
    2 * (message.text.len() + message.from.user_name.len() + message.from.user_id.as_str().len()) + 100
}

/// A stream is speaking while its smoothed level (linear, 0..1) is at least this: about
/// -40 dBov, above a quiet room's noise.
pub const SPEAKING_LEVEL: f32 = 0.01;
/// How many speakers an announcement lists at most.
pub const MAX_SPEAKERS: usize = 8;

/// Where a session is a member.
#[derive(Debug, Clone)]
struct Seat {
    room_id: RoomId,
    user_id: UserId,
}

/// All rooms of one server.
#[derive(Debug, Default)]
pub struct Rooms {
    limits: Limits,
    rooms: HashMap<RoomId, Room>,
    /// Which room each user ID is in.
    users: HashMap<UserId, RoomId>,
    /// Which room and user each logged-in session is.
    seats: HashMap<SessionId, Seat>,
}

fn err(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(code, message)
}

impl Rooms {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    pub fn is_logged_in(&self, session: SessionId) -> bool {
        self.seats.contains_key(&session)
    }

    fn seat(&self, session: SessionId) -> Result<Seat, ErrorBody> {
        self.seats
            .get(&session)
            .cloned()
            .ok_or_else(|| err(ErrorCode::NotLoggedIn, "log into a room first"))
    }

    fn member(&self, seat: &Seat) -> &Member {
        &self.rooms[&seat.room_id].members[&seat.user_id]
    }

    /// Adds `session` to the identity's room. `resume` names the session this one replaces
    /// after a network drop; it is honoured when that session is still this user's.
    pub fn login(
        &mut self,
        session: SessionId,
        identity: Identity,
        user_update: bool,
        resume: Option<SessionId>,
    ) -> Result<(Joined, Outputs), ErrorBody> {
        if self.seats.contains_key(&session) {
            return Err(err(
                ErrorCode::AlreadyLoggedIn,
                "this session is already in a room; log out first",
            ));
        }
        let Identity { room_id, user, grant } = identity;
        let mut out = Outputs::default();

        // The same user already here: resume a dropped session, or kick the old one out.
        if let Some(prev_room) = self.users.get(&user.user_id).cloned() {
            let prev = &self.rooms[&prev_room].members[&user.user_id];
            let same_shape = prev_room == room_id && prev.hidden() == grant.hidden && prev.info == user;
            let resumable = !prev.connected || resume == Some(prev.session);
            if same_shape && resumable {
                let prev_session = prev.session;
                let prev_connected = prev.connected;
                let room = self
                    .rooms
                    .get_mut(&room_id)
                    .expect("users only point at existing rooms");
                let member = room.members.get_mut(&user.user_id).expect("user listed in its room");
                member.session = session;
                member.connected = true;
                member.user_update = user_update;
                member.grant = grant;
                member.playing.clear();
                self.seats.remove(&prev_session);
                self.seats.insert(
                    session,
                    Seat {
                        room_id: room_id.clone(),
                        user_id: user.user_id.clone(),
                    },
                );
                let own_streams: Vec<StreamInfo> = room
                    .streams
                    .values()
                    .filter(|s| s.user.user_id == user.user_id)
                    .cloned()
                    .collect();
                if prev_connected {
                    out.kicks.push((prev_session, KickoutReason::DuplicateLogin));
                }
                return Ok((self.joined(&room_id, &user.user_id, true, own_streams), out));
            }
            // Check the caps of the new room before kicking anyone.
            self.check_room_caps(&room_id, &grant, Some(&user.user_id))?;
            let prev_session = prev.session;
            let was_connected = prev.connected;
            self.remove_member(&prev_room, &user.user_id, &mut out);
            if was_connected {
                out.kicks.push((prev_session, KickoutReason::DuplicateLogin));
            }
        } else {
            self.check_room_caps(&room_id, &grant, None)?;
        }

        let room = self.rooms.entry(room_id.clone()).or_insert_with(Room::starting);
        let hidden = grant.hidden;
        room.members.insert(
            user.user_id.clone(),
            Member {
                session,
                info: user.clone(),
                grant,
                user_update,
                pose: None,
                connected: true,
                playing: HashSet::new(),
            },
        );
        if !hidden {
            let event = Event::RoomUserUpdate {
                room_id: room_id.clone(),
                update: UpdateType::Add,
                users: vec![user.clone()],
            };
            room.broadcast(&mut out, Some(&user.user_id), |m| m.user_update, &event);
        }
        self.users.insert(user.user_id.clone(), room_id.clone());
        self.seats.insert(
            session,
            Seat {
                room_id: room_id.clone(),
                user_id: user.user_id.clone(),
            },
        );
        Ok((self.joined(&room_id, &user.user_id, false, Vec::new()), out))
    }

    fn check_room_caps(&self, room_id: &RoomId, grant: &VideoGrant, leaving: Option<&UserId>) -> Result<(), ErrorBody> {
        match self.rooms.get(room_id) {
            None => {
                if self.rooms.len() >= self.limits.max_rooms {
                    return Err(err(
                        ErrorCode::TooManyRooms,
                        format!("the server already has {} rooms", self.rooms.len()),
                    ));
                }
            }
            Some(room) => {
                let (count, cap) = if grant.hidden {
                    (
                        room.members.len() - room.visible_count(),
                        self.limits.max_spectators_per_room,
                    )
                } else {
                    (room.visible_count(), self.limits.max_users_per_room)
                };
                // A member logging in again frees its own place, if it was of the same kind.
                let leaving_here = leaving
                    .and_then(|u| room.members.get(u))
                    .is_some_and(|m| m.hidden() == grant.hidden);
                if count - usize::from(leaving_here && count > 0) >= cap {
                    return Err(err(ErrorCode::RoomFull, format!("room {room_id} is full ({cap})")));
                }
            }
        }
        Ok(())
    }

    /// The room as `me` finds it on joining.
    fn joined(&self, room_id: &RoomId, me: &UserId, resumed: bool, own_streams: Vec<StreamInfo>) -> Joined {
        let room = &self.rooms[room_id];
        let others = || room.members.iter().filter(|(id, m)| *id != me && !m.hidden());
        let users = if room.members[me].user_update {
            others().map(|(_, m)| m.info.clone()).collect()
        } else {
            Vec::new()
        };
        Joined {
            resumed,
            own_streams,
            users,
            streams: room
                .streams
                .values()
                .filter(|s| &s.user.user_id != me)
                .cloned()
                .collect(),
            poses: others()
                .filter_map(|(user_id, m)| {
                    m.pose.map(|pose| UserPose {
                        user_id: user_id.clone(),
                        pose,
                    })
                })
                .collect(),
            messages: room.messages.iter().cloned().collect(),
            room_instance: room.instance,
        }
    }

    /// Removes a member with its streams and tells the room; drops the room when empty.
    fn remove_member(&mut self, room_id: &RoomId, user_id: &UserId, out: &mut Outputs) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        let Some(member) = room.members.remove(user_id) else {
            return;
        };
        self.users.remove(user_id);
        if self.seats.get(&member.session).is_some_and(|s| &s.user_id == user_id) {
            self.seats.remove(&member.session);
        }
        let owned: Vec<StreamId> = room
            .streams
            .iter()
            .filter(|(_, s)| &s.user.user_id == user_id)
            .map(|(id, _)| id.clone())
            .collect();
        let mut deleted = Vec::with_capacity(owned.len());
        for stream_id in owned {
            if let Some(info) = room.streams.remove(&stream_id) {
                out.unpublished.push(RoomStream::new(room_id, &stream_id));
                deleted.push(info);
            }
        }
        for m in room.members.values_mut() {
            for s in &deleted {
                m.playing.remove(&s.stream_id);
            }
        }
        if !deleted.is_empty() {
            let event = Event::RoomStreamUpdate {
                room_id: room_id.clone(),
                update: UpdateType::Delete,
                streams: deleted,
            };
            room.broadcast(out, None, |_| true, &event);
        }
        if !member.hidden() {
            let event = Event::RoomUserUpdate {
                room_id: room_id.clone(),
                update: UpdateType::Delete,
                users: vec![member.info],
            };
            room.broadcast(out, None, |m| m.user_update, &event);
        }
        if room.members.is_empty() {
            self.rooms.remove(room_id);
        }
    }

    /// The session leaves its room.
    pub fn logout(&mut self, session: SessionId) -> Result<Outputs, ErrorBody> {
        let seat = self.seat(session)?;
        let mut out = Outputs::default();
        self.remove_member(&seat.room_id, &seat.user_id, &mut out);
        Ok(out)
    }

    /// Removes the session for a reason the server decided (token expired, shutdown, admin).
    pub fn kick(&mut self, session: SessionId, reason: KickoutReason) -> Outputs {
        let mut out = Outputs::default();
        if let Ok(seat) = self.seat(session) {
            self.remove_member(&seat.room_id, &seat.user_id, &mut out);
            out.kicks.push((session, reason));
        }
        out
    }

    /// The session's socket is gone. The member stays listed, quietly, until
    /// [`Rooms::grace_expired`] or a resuming login. Returns whether the session was a member.
    pub fn disconnect(&mut self, session: SessionId) -> bool {
        let Some(seat) = self.seats.get(&session) else {
            return false;
        };
        let Some(member) = self
            .rooms
            .get_mut(&seat.room_id)
            .and_then(|r| r.members.get_mut(&seat.user_id))
        else {
            return false;
        };
        member.connected = false;
        member.playing.clear();
        true
    }

    /// The grace window of a dropped session ran out: remove it unless it was resumed.
    pub fn grace_expired(&mut self, session: SessionId) -> Outputs {
        let mut out = Outputs::default();
        if let Some(seat) = self.seats.get(&session).cloned()
            && !self.member(&seat).connected
        {
            self.remove_member(&seat.room_id, &seat.user_id, &mut out);
        }
        out
    }

    /// Checks that a renewed token's identity is the session's.
    pub fn check_renewal(&self, session: SessionId, identity: &Identity) -> Result<(), ErrorBody> {
        let seat = self.seat(session)?;
        if identity.room_id != seat.room_id {
            return Err(err(
                ErrorCode::TokenRoomMismatch,
                format!("the new token is for room {}, not {}", identity.room_id, seat.room_id),
            ));
        }
        if identity.user.user_id != seat.user_id {
            return Err(err(
                ErrorCode::TokenUserMismatch,
                format!(
                    "the new token is for user {}, not {}",
                    identity.user.user_id, seat.user_id
                ),
            ));
        }
        if identity.grant.hidden != self.member(&seat).hidden() {
            return Err(err(
                ErrorCode::PermissionDenied,
                "a renewed token cannot switch between spectator and participant",
            ));
        }
        Ok(())
    }

    /// Applies a renewed grant (after [`Rooms::check_renewal`]).
    pub fn renew(&mut self, session: SessionId, grant: VideoGrant) -> Result<(), ErrorBody> {
        let seat = self.seat(session)?;
        let member = self
            .rooms
            .get_mut(&seat.room_id)
            .and_then(|r| r.members.get_mut(&seat.user_id))
            .ok_or_else(|| err(ErrorCode::NotLoggedIn, "log into a room first"))?;
        member.grant = grant;
        Ok(())
    }

    /// Checks that the session may publish `req` without changing anything.
    pub fn check_publish(&self, session: SessionId, req: &PublishRequest) -> Result<PublishCheck, ErrorBody> {
        let seat = self.seat(session)?;
        let member = self.member(&seat);
        if member.hidden() {
            return Err(err(ErrorCode::PermissionDenied, "spectators cannot publish"));
        }
        if !member.grant.may_publish(req.source) {
            return Err(err(
                ErrorCode::PermissionDenied,
                format!("the token does not allow publishing {}", req.source.grant_name()),
            ));
        }
        validate_extra_info(&req.extra_info).map_err(|m| err(ErrorCode::InvalidArgument, m))?;
        let room = &self.rooms[&seat.room_id];
        if let Some(listed) = room.streams.get(&req.stream_id) {
            return if listed.user.user_id == seat.user_id {
                Ok(PublishCheck::AlreadyMine)
            } else {
                Err(err(
                    ErrorCode::StreamOwnedByOther,
                    format!("stream ID {} is published by someone else", req.stream_id),
                ))
            };
        }
        if room.streams.len() >= self.limits.max_streams_per_room {
            return Err(err(
                ErrorCode::TooManyStreams,
                format!("room {} already has {} streams", seat.room_id, room.streams.len()),
            ));
        }
        let mine = room.streams.values().filter(|s| s.user.user_id == seat.user_id).count();
        if mine >= self.limits.max_streams_per_user {
            return Err(err(
                ErrorCode::TooManyStreams,
                format!("you already publish {mine} streams"),
            ));
        }
        Ok(PublishCheck::New)
    }

    /// Lists a new stream of the session's and tells the room.
    pub fn start_publishing(&mut self, session: SessionId, req: &PublishRequest) -> Result<Outputs, ErrorBody> {
        if self.check_publish(session, req)? == PublishCheck::AlreadyMine {
            return Err(err(
                ErrorCode::StreamAlreadyPublished,
                format!("you already publish {}", req.stream_id),
            ));
        }
        let seat = self.seat(session)?;
        let member = self.member(&seat);
        let info = StreamInfo {
            stream_id: req.stream_id.clone(),
            user: member.info.clone(),
            source: req.source,
            extra_info: req.extra_info.clone(),
            mute: req.mute,
        };
        let room = self.rooms.get_mut(&seat.room_id).expect("seat points at a room");
        room.streams.insert(req.stream_id.clone(), info.clone());
        let mut out = Outputs::default();
        let event = Event::RoomStreamUpdate {
            room_id: seat.room_id.clone(),
            update: UpdateType::Add,
            streams: vec![info],
        };
        room.broadcast(&mut out, Some(&seat.user_id), |_| true, &event);
        Ok(out)
    }

    /// Looks up a stream the session owns.
    fn own_stream(&self, seat: &Seat, stream_id: &StreamId) -> Result<(), ErrorBody> {
        match self.rooms[&seat.room_id].streams.get(stream_id) {
            Some(listed) if listed.user.user_id == seat.user_id => Ok(()),
            Some(_) => Err(err(
                ErrorCode::StreamOwnedByOther,
                format!("stream {stream_id} is published by someone else"),
            )),
            _ => Err(err(
                ErrorCode::StreamNotFound,
                format!("no stream {stream_id} in room {}", seat.room_id),
            )),
        }
    }

    pub fn stop_publishing(&mut self, session: SessionId, stream_id: &StreamId) -> Result<Outputs, ErrorBody> {
        let seat = self.seat(session)?;
        self.own_stream(&seat, stream_id)?;
        let room = self.rooms.get_mut(&seat.room_id).expect("seat points at a room");
        let info = room.streams.remove(stream_id).expect("owned streams are listed");
        for m in room.members.values_mut() {
            m.playing.remove(stream_id);
        }
        let mut out = Outputs::default();
        out.unpublished.push(RoomStream::new(&seat.room_id, stream_id));
        let event = Event::RoomStreamUpdate {
            room_id: seat.room_id.clone(),
            update: UpdateType::Delete,
            streams: vec![info],
        };
        room.broadcast(&mut out, Some(&seat.user_id), |_| true, &event);
        Ok(out)
    }

    pub fn set_extra_info(
        &mut self,
        session: SessionId,
        stream_id: &StreamId,
        extra_info: String,
    ) -> Result<Outputs, ErrorBody> {
        let seat = self.seat(session)?;
        self.own_stream(&seat, stream_id)?;
        validate_extra_info(&extra_info).map_err(|m| err(ErrorCode::InvalidArgument, m))?;
        let room = self.rooms.get_mut(&seat.room_id).expect("seat points at a room");
        let info = room.streams.get_mut(stream_id).expect("owned streams are listed");
        info.extra_info = extra_info;
        let event = Event::StreamExtraInfoUpdate {
            room_id: seat.room_id.clone(),
            streams: vec![info.clone()],
        };
        let mut out = Outputs::default();
        room.broadcast(&mut out, Some(&seat.user_id), |_| true, &event);
        Ok(out)
    }

    /// Says `text` to everyone in the session's room, the sender too (`now` in Unix seconds).
    /// A `nonce` the sender used for one of its recent messages means this one was sent again:
    /// it is not said twice.
    pub fn send_message(
        &mut self,
        session: SessionId,
        text: String,
        nonce: Option<u64>,
        now: u64,
    ) -> Result<Outputs, ErrorBody> {
        let seat = self.seat(session)?;
        let member = self.member(&seat);
        if member.hidden() {
            return Err(err(ErrorCode::PermissionDenied, "spectators cannot chat"));
        }
        validate_chat(&text).map_err(|m| err(ErrorCode::InvalidArgument, m))?;
        let from = member.info.clone();
        let room = self.rooms.get_mut(&seat.room_id).expect("seat points at a room");
        if let Some(nonce) = nonce {
            let recent = room.nonces.entry(seat.user_id.clone()).or_default();
            if recent.contains(&nonce) {
                return Ok(Outputs::default());
            }
            recent.push_back(nonce);
            if recent.len() > CHAT_HISTORY {
                recent.pop_front();
            }
        }
        room.last_message += 1;
        let message = ChatMessage {
            id: room.last_message,
            from,
            text,
            sent_at: now,
        };
        room.messages.push_back(message.clone());
        let mut bytes: usize = room.messages.iter().map(wire_bytes).sum();
        while room.messages.len() > CHAT_HISTORY || bytes > CHAT_HISTORY_BYTES {
            let Some(oldest) = room.messages.pop_front() else { break };
            bytes -= wire_bytes(&oldest);
        }
        let event = Event::RoomMessage {
            room_id: seat.room_id.clone(),
            message,
        };
        let mut out = Outputs::default();
        room.broadcast(&mut out, None, |_| true, &event);
        Ok(out)
    }

    /// Records that a stream's microphone or camera went off or on and tells the others; the
    /// same state again tells nobody.
    pub fn set_mute(
        &mut self,
        session: SessionId,
        stream_id: &StreamId,
        mute: StreamMute,
    ) -> Result<Outputs, ErrorBody> {
        let seat = self.seat(session)?;
        self.own_stream(&seat, stream_id)?;
        let room = self.rooms.get_mut(&seat.room_id).expect("seat points at a room");
        let info = room.streams.get_mut(stream_id).expect("owned streams are listed");
        let mut out = Outputs::default();
        if info.mute == mute {
            return Ok(out);
        }
        info.mute = mute;
        let event = Event::StreamMuteUpdate {
            room_id: seat.room_id.clone(),
            streams: vec![info.clone()],
        };
        room.broadcast(&mut out, Some(&seat.user_id), |_| true, &event);
        Ok(out)
    }

    pub fn start_playing(&mut self, session: SessionId, stream_id: &StreamId) -> Result<StreamInfo, ErrorBody> {
        let seat = self.seat(session)?;
        if !self.member(&seat).grant.can_subscribe {
            return Err(err(
                ErrorCode::PermissionDenied,
                "the token does not allow playing streams",
            ));
        }
        let room = self.rooms.get_mut(&seat.room_id).expect("seat points at a room");
        let info = room.streams.get(stream_id).cloned().ok_or_else(|| {
            err(
                ErrorCode::StreamNotFound,
                format!("no stream {stream_id} in room {}", seat.room_id),
            )
        })?;
        let member = room.members.get_mut(&seat.user_id).expect("seat points at a member");
        if !member.playing.insert(stream_id.clone()) {
            return Err(err(ErrorCode::AlreadyPlaying, format!("already playing {stream_id}")));
        }
        Ok(info)
    }

    /// A listed stream in the session's room.
    pub fn stream_info(&self, session: SessionId, stream_id: &StreamId) -> Result<StreamInfo, ErrorBody> {
        let seat = self.seat(session)?;
        self.rooms[&seat.room_id]
            .streams
            .get(stream_id)
            .cloned()
            .ok_or_else(|| {
                err(
                    ErrorCode::StreamNotFound,
                    format!("no stream {stream_id} in room {}", seat.room_id),
                )
            })
    }

    /// Checks that the session plays `stream_id`.
    pub fn check_playing(&self, session: SessionId, stream_id: &StreamId) -> Result<(), ErrorBody> {
        let seat = self.seat(session)?;
        if self.member(&seat).playing.contains(stream_id) {
            Ok(())
        } else {
            Err(err(ErrorCode::NotPlaying, format!("not playing {stream_id}")))
        }
    }

    pub fn stop_playing(&mut self, session: SessionId, stream_id: &StreamId) -> Result<(), ErrorBody> {
        let seat = self.seat(session)?;
        let room = self.rooms.get_mut(&seat.room_id).expect("seat points at a room");
        let member = room.members.get_mut(&seat.user_id).expect("seat points at a member");
        if member.playing.remove(stream_id) {
            Ok(())
        } else {
            Err(err(ErrorCode::NotPlaying, format!("not playing {stream_id}")))
        }
    }

    pub fn set_pose(&mut self, session: SessionId, pose: Pose) -> Result<Outputs, ErrorBody> {
        let seat = self.seat(session)?;
        if self.member(&seat).hidden() {
            return Err(err(ErrorCode::PermissionDenied, "spectators have no place in the room"));
        }
        pose.validate().map_err(|m| err(ErrorCode::InvalidArgument, m))?;
        let room = self.rooms.get_mut(&seat.room_id).expect("seat points at a room");
        room.members
            .get_mut(&seat.user_id)
            .expect("seat points at a member")
            .pose = Some(pose);
        let event = Event::PoseUpdate {
            room_id: seat.room_id.clone(),
            user_id: seat.user_id.clone(),
            pose,
        };
        let mut out = Outputs::default();
        room.broadcast(&mut out, Some(&seat.user_id), |_| true, &event);
        Ok(out)
    }

    /// Withdraws `stream` whoever publishes it (its media never came up): the room hears
    /// DELETE, its players stop playing it.
    pub fn unlist(&mut self, stream: &RoomStream) -> Outputs {
        let mut out = Outputs::default();
        let Some(room) = self.rooms.get_mut(&stream.room) else {
            return out;
        };
        let Some(info) = room.streams.remove(&stream.stream) else {
            return out;
        };
        for m in room.members.values_mut() {
            m.playing.remove(&stream.stream);
        }
        out.unpublished.push(stream.clone());
        let event = Event::RoomStreamUpdate {
            room_id: stream.room.clone(),
            update: UpdateType::Delete,
            streams: vec![info.clone()],
        };
        room.broadcast(&mut out, Some(&info.user.user_id), |_| true, &event);
        out
    }

    /// The event for the publisher of `stream`, if it is connected.
    pub fn to_owner(&self, stream: &RoomStream, event: Event) -> Outputs {
        let mut out = Outputs::default();
        if let Some(room) = self.rooms.get(&stream.room)
            && let Some(listed) = room.streams.get(&stream.stream)
            && let Some(member) = room.members.get(&listed.user.user_id)
            && member.connected
        {
            out.deliveries.push((member.session, event));
        }
        out
    }

    /// Announces each room's active speakers from the streams' sound levels: the streams above
    /// [`SPEAKING_LEVEL`], loudest first, at most [`MAX_SPEAKERS`]; only to rooms where the
    /// order or the set changed since the last announcement.
    pub fn active_speakers(&mut self, levels: &[(RoomStream, f32)]) -> Outputs {
        let mut out = Outputs::default();
        for (room_id, room) in &mut self.rooms {
            let mut speaking: Vec<Speaker> = levels
                .iter()
                .filter(|(stream, level)| *level >= SPEAKING_LEVEL && stream.room == *room_id)
                .filter_map(|(stream, level)| {
                    let info = room.streams.get(&stream.stream)?;
                    Some(Speaker {
                        stream_id: stream.stream.clone(),
                        user_id: info.user.user_id.clone(),
                        level: *level,
                    })
                })
                .collect();
            speaking.sort_by(|a, b| b.level.total_cmp(&a.level));
            speaking.truncate(MAX_SPEAKERS);
            let order: Vec<StreamId> = speaking.iter().map(|s| s.stream_id.clone()).collect();
            if order == room.speakers {
                continue;
            }
            room.speakers = order;
            let event = Event::ActiveSpeakers {
                room_id: room_id.clone(),
                speakers: speaking,
            };
            room.broadcast(&mut out, None, |_| true, &event);
        }
        out
    }

    /// A read-only picture of every room, for operators and tests.
    pub fn snapshot(&self) -> Snapshot {
        let mut rooms: Vec<RoomSnapshot> = self
            .rooms
            .iter()
            .map(|(id, room)| RoomSnapshot {
                room_id: id.clone(),
                users: room
                    .members
                    .values()
                    .filter(|m| !m.hidden())
                    .map(|m| m.info.clone())
                    .collect(),
                spectators: room.members.len() - room.visible_count(),
                streams: room.streams.values().cloned().collect(),
            })
            .collect();
        rooms.sort_by(|a, b| a.room_id.cmp(&b.room_id));
        Snapshot { rooms }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    pub rooms: Vec<RoomSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoomSnapshot {
    pub room_id: RoomId,
    /// Visible members, by user ID.
    pub users: Vec<UserInfo>,
    pub spectators: usize,
    pub streams: Vec<StreamInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(room: &str, user: &str, hidden: bool) -> Identity {
        let grant = if hidden {
            VideoGrant::spectator(room)
        } else {
            VideoGrant::participant(room)
        };
        Identity {
            room_id: RoomId::new(room).expect("valid"),
            user: UserInfo {
                user_id: UserId::new(user).expect("valid"),
                user_name: user.to_uppercase(),
            },
            grant,
        }
    }

    fn publish(id: &str) -> PublishRequest {
        PublishRequest {
            stream_id: StreamId::new(id).expect("valid"),
            source: Default::default(),
            extra_info: String::new(),
            mute: Default::default(),
            sdp_offer: None,
            media_id: None,
        }
    }

    #[test]
    fn second_user_sees_the_first_and_the_first_is_told() {
        let mut rooms = Rooms::new(Limits::default());
        rooms.login(1, who("r", "a", false), true, None).expect("a joins");
        let (joined, out) = rooms.login(2, who("r", "b", false), true, None).expect("b joins");
        assert_eq!(out.deliveries.len(), 1, "a hears of b: {out:?}");
        assert_eq!(out.deliveries[0].0, 1);
        assert_eq!(joined.users.len(), 1, "b finds a: {joined:?}");
    }

    #[test]
    fn spectators_are_invisible_and_cannot_publish() {
        let mut rooms = Rooms::new(Limits::default());
        rooms.login(1, who("r", "a", false), true, None).expect("a joins");
        let (joined, out) = rooms
            .login(2, who("r", "s", true), true, None)
            .expect("spectator joins");
        assert!(out.deliveries.is_empty(), "nobody hears of the spectator: {out:?}");
        assert_eq!(joined.users.len(), 1, "the spectator sees a");
        assert_eq!(
            rooms.start_publishing(2, &publish("cam")).expect_err("refused").code,
            ErrorCode::PermissionDenied
        );
        assert_eq!(rooms.snapshot().rooms[0].users.len(), 1);
        assert_eq!(rooms.snapshot().rooms[0].spectators, 1);
    }

    #[test]
    fn a_dropped_session_resumes_without_events() {
        let mut rooms = Rooms::new(Limits::default());
        rooms.login(1, who("r", "a", false), true, None).expect("a joins");
        rooms.login(2, who("r", "b", false), true, None).expect("b joins");
        rooms.start_publishing(2, &publish("b-cam")).expect("b publishes");
        assert!(rooms.disconnect(2));
        let (joined, out) = rooms.login(3, who("r", "b", false), true, None).expect("b is back");
        assert!(joined.resumed);
        assert_eq!(joined.own_streams.len(), 1);
        assert!(out.deliveries.is_empty(), "a sees no flicker: {out:?}");
        assert_eq!(rooms.grace_expired(2), Outputs::default(), "old grace timer is a no-op");
    }

    #[test]
    fn grace_expiry_removes_user_and_streams() {
        let mut rooms = Rooms::new(Limits::default());
        rooms.login(1, who("r", "a", false), true, None).expect("a joins");
        rooms.login(2, who("r", "b", false), true, None).expect("b joins");
        rooms.start_publishing(2, &publish("b-cam")).expect("b publishes");
        rooms.disconnect(2);
        let out = rooms.grace_expired(2);
        assert_eq!(out.deliveries.len(), 2, "stream DELETE then user DELETE: {out:?}");
        assert!(rooms.snapshot().rooms[0].streams.is_empty());
    }

    #[test]
    fn caps_refuse_before_anyone_is_kicked() {
        let limits = Limits {
            max_users_per_room: 1,
            ..Limits::default()
        };
        let mut rooms = Rooms::new(limits);
        rooms.login(1, who("r", "a", false), true, None).expect("a joins");
        rooms.login(2, who("q", "b", false), true, None).expect("b joins q");
        let refused = rooms.login(3, who("r", "b", false), true, None).expect_err("r is full");
        assert_eq!(refused.code, ErrorCode::RoomFull);
        assert!(rooms.is_logged_in(2), "b keeps its seat in q");
        let (_, out) = rooms
            .login(4, who("r", "a", false), true, None)
            .expect("a replaces itself");
        assert_eq!(out.kicks, vec![(1, KickoutReason::DuplicateLogin)]);
    }
}
