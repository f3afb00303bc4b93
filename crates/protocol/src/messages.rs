//! Signaling messages: what a client sends, what the server answers and pushes.
//!
//! Every frame is one JSON text message. A client sends [`ClientMessage`]s, each
//! with an `id` it picks; the server answers each with exactly one
//! [`ServerMessage::Response`] carrying the same `id`, and pushes
//! [`ServerMessage::Event`]s numbered `seq = 1, 2, 3, ...` per session with no gaps.
//! A login's response carries the room as it is at that moment (users, streams, poses);
//! the events that follow are the changes after it.
//!
//! ```json
//! {"id":1,"request":{"type":"login","protocol":2,"room_id":"lobby","token":"...",
//!   "user":{"user_id":"alice","user_name":"Alice"},"config":{"user_update":true}}}
//! {"type":"response","id":1,"result":{"ok":{"type":"logged_in",...}}}
//! {"type":"event","seq":1,"event":{"type":"room_user_update","room_id":"lobby","update":"add","users":[{"user_id":"bob","user_name":"Bob"}]}}
//! ```

use serde::{Deserialize, Serialize};

use crate::ids::{RoomId, StreamId, UserId};

/// The protocol version this crate speaks; a login with another version is refused.
pub const PROTOCOL_VERSION: u32 = 2;

/// Path of the signaling WebSocket on the room server.
pub const WS_PATH: &str = "/v1/ws";

/// The largest text message either side accepts, in bytes. Larger ones close the socket with [`close_code::MESSAGE_TOO_BIG`].
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Longest display name, in bytes.
pub const MAX_USER_NAME_BYTES: usize = 256;

/// Longest stream extra info, in bytes.
pub const MAX_EXTRA_INFO_BYTES: usize = 4096;
/// Longest chat message, in bytes.
pub const MAX_CHAT_BYTES: usize = 2000;
/// How many of its latest chat messages a room lists to those who join or come back...
pub const CHAT_HISTORY: usize = 50;
/// ...and how many bytes they may take together in JSON (the server counts each at its
/// largest), so that a login's answer stays well under [`MAX_MESSAGE_BYTES`].
pub const CHAT_HISTORY_BYTES: usize = 24 * 1024;

/// WebSocket close codes the server uses.
pub mod close_code {
    /// The server is restarting (or stopping): reconnect, and keep trying for a while.
    pub const SERVICE_RESTART: u16 = 1012;
    /// A binary frame arrived; the protocol is text only.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// A text frame that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// Policy: no login in time, Origin not allowed, kicked out, too many messages, or too many
    /// connections from one address.
    pub const POLICY: u16 = 1008;
    /// A message larger than [`super::MAX_MESSAGE_BYTES`].
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The session could not keep up with its events.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// A request from a client, with the id its response will carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientMessage {
    pub id: u64,
    pub request: Request,
}

/// What a client asks of the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Join a room. Identity and room come from the token; `user` must match it.
    Login(LoginRequest),
    /// Leave the room; the socket stays open for another login.
    Logout {},
    /// Replace the session's token before it expires (same user and room).
    RenewToken { token: String },
    /// Announce a stream this user publishes.
    StartPublishing(PublishRequest),
    StopPublishing {
        stream_id: StreamId,
        /// The media connection this ends (the `media_id` it was started with): a stop
        /// naming an older connection than the current one changes nothing.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media_id: Option<u64>,
    },
    /// Change the extra info of a stream this user publishes.
    SetStreamExtraInfo { stream_id: StreamId, extra_info: String },
    /// Say that a stream this user publishes has its microphone or camera off (the others
    /// then show it muted rather than silent or black).
    SetStreamMute { stream_id: StreamId, mute: StreamMute },
    /// Subscribe to a stream in the room.
    StartPlaying(PlayRequest),
    StopPlaying {
        stream_id: StreamId,
        /// The media connection this ends (the `media_id` it was started with): a stop
        /// naming an older connection than the current one changes nothing.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media_id: Option<u64>,
    },
    /// An ICE candidate for the media connection of a stream.
    Trickle {
        stream_id: StreamId,
        candidate: IceCandidate,
    },
    /// Where this participant is in the room.
    SetPose { pose: Pose },
    /// Say something to everyone in the room (spectators read, but may not write). Everyone,
    /// the sender too, gets it as [`Event::RoomMessage`], in the room's order.
    SendMessage {
        text: String,
        /// The sender's number for this message: the same message sent again (its answer was
        /// lost with the connection) is said once.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<u64>,
    },
    /// Which video layer of a played stream to receive: the smallest that covers the size it
    /// is shown at, or `off` while it is not seen (its sound keeps coming). The server sends
    /// a lower layer while the downlink cannot carry this one.
    SetVideoLayer { stream_id: StreamId, layer: VideoLayer },
}

/// A video layer of a stream. Publishers send up to three (simulcast): `low` at a quarter of
/// the picture's width and height, `medium` at half, `high` at full size. On the wire they are
/// the RTP stream IDs (RIDs) `q`, `h` and `f`; a publisher without RIDs sends only `high`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VideoLayer {
    /// No video: the stream is paused for this viewer.
    Off,
    Low,
    Medium,
    #[default]
    High,
}

impl VideoLayer {
    /// The sending layers, lowest first.
    pub const SENT: [VideoLayer; 3] = [VideoLayer::Low, VideoLayer::Medium, VideoLayer::High];

    /// The RTP stream ID a publisher sends this layer under (none for `off`).
    pub const fn rid(self) -> Option<&'static str> {
        match self {
            VideoLayer::Off => None,
            VideoLayer::Low => Some("q"),
            VideoLayer::Medium => Some("h"),
            VideoLayer::High => Some("f"),
        }
    }

    /// The layer sent under an RTP stream ID; an unknown one is taken as the full picture.
    pub fn from_rid(rid: &str) -> VideoLayer {
        match rid {
            "q" => VideoLayer::Low,
            "h" => VideoLayer::Medium,
            _ => VideoLayer::High,
        }
    }

    /// How much smaller than the full picture this layer is, in each dimension (0 for `off`).
    pub const fn scale_down(self) -> u32 {
        match self {
            VideoLayer::Off => 0,
            VideoLayer::Low => 4,
            VideoLayer::Medium => 2,
            VideoLayer::High => 1,
        }
    }

    /// The index among [`Self::SENT`] (None for `off`).
    pub const fn index(self) -> Option<usize> {
        match self {
            VideoLayer::Off => None,
            VideoLayer::Low => Some(0),
            VideoLayer::Medium => Some(1),
            VideoLayer::High => Some(2),
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            VideoLayer::Off => "off",
            VideoLayer::Low => "low",
            VideoLayer::Medium => "medium",
            VideoLayer::High => "high",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Must equal [`PROTOCOL_VERSION`].
    pub protocol: u32,
    pub room_id: RoomId,
    pub token: String,
    pub user: UserInfo,
    #[serde(default)]
    pub config: LoginConfig,
    /// The `session_id` of this user's previous session, when reconnecting after a network drop:
    /// the server then hands over that session's place without kicking or listing changes.
    #[serde(default)]
    pub resume_session: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginConfig {
    /// Deliver [`Event::RoomUserUpdate`]s. Without it the session sees streams but no user list.
    #[serde(default)]
    pub user_update: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    pub stream_id: StreamId,
    #[serde(default)]
    pub source: StreamSource,
    #[serde(default)]
    pub extra_info: String,
    /// Whether the stream starts with its microphone or camera off.
    #[serde(default, skip_serializing_if = "StreamMute::is_unmuted")]
    pub mute: StreamMute,
    /// The SDP offer of the media connection, when the server relays media.
    #[serde(default)]
    pub sdp_offer: Option<String>,
    /// The client's number for this media connection, unique in its session; a later stop
    /// names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_id: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlayRequest {
    pub stream_id: StreamId,
    #[serde(default)]
    pub sdp_offer: Option<String>,
    /// The video layer to start with (as in [`Request::SetVideoLayer`]); `high` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_layer: Option<VideoLayer>,
    /// As in [`PublishRequest::media_id`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_id: Option<u64>,
}

/// A user as the room sees them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserInfo {
    pub user_id: UserId,
    #[serde(default)]
    pub user_name: String,
}

/// What a stream captures; checked against the token's `canPublishSources`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamSource {
    /// Camera and microphone.
    #[default]
    Camera,
    /// Screen capture.
    ScreenShare,
    /// Frames and samples supplied by the app.
    Custom,
}

impl StreamSource {
    /// The name used for this source in a token's `canPublishSources`.
    pub const fn grant_name(self) -> &'static str {
        match self {
            StreamSource::Camera => "camera",
            StreamSource::ScreenShare => "screen_share",
            StreamSource::Custom => "custom",
        }
    }
}

/// A published stream as the room sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamInfo {
    pub stream_id: StreamId,
    pub user: UserInfo,
    pub source: StreamSource,
    pub extra_info: String,
    /// Whether its publisher has the microphone or camera off.
    #[serde(default, skip_serializing_if = "StreamMute::is_unmuted")]
    pub mute: StreamMute,
}

/// Which of a stream's media its publisher switched off: `audio` is a muted microphone,
/// `video` a camera that is off. The media keeps flowing (silence, a still picture), so
/// switching back on is instant; viewers show the state instead of the media.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamMute {
    #[serde(default)]
    pub audio: bool,
    #[serde(default)]
    pub video: bool,
}

impl StreamMute {
    pub const fn is_unmuted(&self) -> bool {
        !self.audio && !self.video
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceCandidate {
    pub candidate: String,
    #[serde(default)]
    pub sdp_mid: Option<String>,
    #[serde(default)]
    pub sdp_m_line_index: Option<u16>,
}

/// A participant's place relative to their seat: position in metres, orientation as a unit
/// quaternion `[x, y, z, w]`; the identity is sitting in the seat. Seat-relative because each
/// client seats the room around its own viewer, so absolute positions would differ per viewer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pose {
    pub position: [f32; 3],
    pub orientation: [f32; 4],
}

impl Pose {
    /// How far from the seat a position may be, in metres.
    pub const MAX_DISTANCE: f32 = 10_000.0;

    pub const IDENTITY: Pose = Pose {
        position: [0.0; 3],
        orientation: [0.0, 0.0, 0.0, 1.0],
    };

    /// Checks that every number is finite, the position within [`Self::MAX_DISTANCE`],
    /// and the orientation a unit quaternion (within 1%).
    pub fn validate(&self) -> Result<(), String> {
        if self.position.iter().chain(&self.orientation).any(|v| !v.is_finite()) {
            return Err("pose has a number that is not finite".into());
        }
        if self.position.iter().any(|v| v.abs() > Self::MAX_DISTANCE) {
            return Err(format!(
                "pose position is more than {} m from the seat",
                Self::MAX_DISTANCE
            ));
        }
        let norm: f32 = self.orientation.iter().map(|v| v * v).sum::<f32>().sqrt();
        if (norm - 1.0).abs() > 0.01 {
            return Err(format!("pose orientation is not a unit quaternion (length {norm})"));
        }
        Ok(())
    }
}

/// What the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ServerMessage {
    /// The answer to the request with this `id`; `id` is null when the request was too broken to read one.
    Response { id: Option<u64>, result: ResponseResult },
    /// A pushed event; `seq` counts from 1 per session without gaps.
    Event { seq: u64, event: Event },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseResult {
    Ok(ResponseBody),
    Error(ErrorBody),
}

impl From<Result<ResponseBody, ErrorBody>> for ResponseResult {
    fn from(result: Result<ResponseBody, ErrorBody>) -> Self {
        match result {
            Ok(body) => ResponseResult::Ok(body),
            Err(error) => ResponseResult::Error(error),
        }
    }
}

impl From<ResponseResult> for Result<ResponseBody, ErrorBody> {
    fn from(result: ResponseResult) -> Self {
        match result {
            ResponseResult::Ok(body) => Ok(body),
            ResponseResult::Error(error) => Err(error),
        }
    }
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ResponseBody {
    /// Done; nothing to report.
    Ack,
    /// Boxed: the room's snapshot is large next to the other answers.
    LoggedIn(Box<LoginResponse>),
    TokenRenewed {
        /// Unix seconds after which the session is kicked out unless renewed again.
        expires_at: u64,
    },
    Publishing {
        sdp_answer: Option<String>,
    },
    Playing {
        stream: StreamInfo,
        sdp_answer: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginResponse {
    pub session_id: String,
    pub room_id: RoomId,
    /// This user, with the name the room shows.
    pub user: UserInfo,
    /// Joined hidden: not listed to others and may not publish.
    pub spectator: bool,
    /// This login took over a session of the same user that had dropped, within the grace window;
    /// its streams are still listed and still owned by this user.
    pub resumed: bool,
    /// Streams of this user still listed from the dropped session (only when `resumed`).
    pub own_streams: Vec<StreamInfo>,
    /// Unix seconds after which the session is kicked out unless the token is renewed.
    pub token_expires_at: u64,
    /// The other visible members at the moment of login (empty unless `user_update`).
    pub users: Vec<UserInfo>,
    /// The other members' streams at the moment of login.
    pub streams: Vec<StreamInfo>,
    /// The other members' last poses.
    pub poses: Vec<UserPose>,
    /// The room's latest chat messages (up to [`CHAT_HISTORY`]), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<ChatMessage>,
    /// This life of the room (it starts afresh when the room empties or the server restarts):
    /// chat numbers count within it.
    #[serde(default)]
    pub room_instance: u64,
}

/// A chat message as the room keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    /// 1, 2, 3, ... within the room's life ([`LoginResponse::room_instance`]): a client that
    /// has shown `id` skips messages up to it when they are listed again.
    pub id: u64,
    pub from: UserInfo,
    pub text: String,
    /// When the server took it, in Unix seconds.
    pub sent_at: u64,
}

/// A member's pose, as listed at login.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPose {
    pub user_id: UserId,
    pub pose: Pose,
}

/// Why a request failed: a code a program can act on and a sentence for a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} ({code:?})")]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Error codes. New codes may be added; clients should treat unknown ones as [`ErrorCode::Internal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, or not a message of this protocol (wrong types, unknown fields or type, bad IDs).
    MalformedMessage,
    /// A value that parsed but is not acceptable (name too long, pose not finite, ...).
    InvalidArgument,
    UnsupportedVersion,
    NotLoggedIn,
    AlreadyLoggedIn,
    /// The token is not a valid HS256 JWT signed by this server (bad signature, wrong alg or kid, garbled).
    TokenInvalid,
    TokenExpired,
    TokenNotYetValid,
    /// The token is valid but for another room.
    TokenRoomMismatch,
    /// The token is valid but for another user.
    TokenUserMismatch,
    /// The token does not grant this (join, publish, this source, subscribe).
    PermissionDenied,
    StreamNotFound,
    /// The stream ID is published by someone else.
    StreamOwnedByOther,
    StreamAlreadyPublished,
    NotPlaying,
    AlreadyPlaying,
    RateLimited,
    RoomFull,
    TooManyRooms,
    TooManyStreams,
    /// The server does not offer this (for example media relay on a signaling-only server).
    NotSupported,
    ShuttingDown,
    Internal,
    /// A code this client does not know yet.
    #[serde(other)]
    Unknown,
}

/// A server-pushed event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Event {
    /// The session's room state changed; the server sends this for [`RoomStateReason::Kickout`]
    /// and [`RoomStateReason::Logout`], clients produce the other reasons themselves.
    RoomStateChanged {
        room_id: RoomId,
        reason: RoomStateReason,
        #[serde(default)]
        error: Option<ErrorBody>,
        #[serde(default)]
        kickout: Option<KickoutReason>,
    },
    RoomUserUpdate {
        room_id: RoomId,
        update: UpdateType,
        users: Vec<UserInfo>,
    },
    RoomStreamUpdate {
        room_id: RoomId,
        update: UpdateType,
        streams: Vec<StreamInfo>,
    },
    StreamExtraInfoUpdate {
        room_id: RoomId,
        streams: Vec<StreamInfo>,
    },
    /// Streams whose microphone or camera went off or on (their `mute` is the new state).
    StreamMuteUpdate {
        room_id: RoomId,
        streams: Vec<StreamInfo>,
    },
    /// The token expires in `expires_in_secs`; renew it or be kicked out.
    TokenWillExpire {
        room_id: RoomId,
        expires_in_secs: u64,
    },
    PoseUpdate {
        room_id: RoomId,
        user_id: UserId,
        pose: Pose,
    },
    Trickle {
        stream_id: StreamId,
        candidate: IceCandidate,
    },
    /// To a publisher: the video layers of its stream that someone receives (or is about to).
    /// The others need not be encoded; a layer that comes back needs a keyframe. Sent when the
    /// set changes: a layer is added at once, dropped once nobody wanted it for a while.
    VideoLayersWanted {
        stream_id: StreamId,
        layers: Vec<VideoLayer>,
    },
    /// To a publisher: the media connection of its stream never came up at the server (its
    /// handshake failed, or nothing arrived in time), so the stream is no longer listed; the
    /// message says why. Publishing again sets it up afresh.
    PublishFailed {
        stream_id: StreamId,
        message: String,
    },
    /// Who is speaking, loudest first: the streams of the room whose sound is above the noise
    /// floor, with their smoothed level (0 silent .. 1 full scale). Sent when the order or the
    /// set changes, at most a few times a second; an empty list when everyone went quiet.
    ActiveSpeakers {
        room_id: RoomId,
        speakers: Vec<Speaker>,
    },
    /// Someone said something in the room (to everyone, the sender too).
    RoomMessage {
        room_id: RoomId,
        message: ChatMessage,
    },
}

/// One entry of [`Event::ActiveSpeakers`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Speaker {
    pub stream_id: StreamId,
    pub user_id: UserId,
    pub level: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateType {
    Add,
    Delete,
}

/// Why a room state changed, as in the classic RTC SDKs' `roomStateChanged`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomStateReason {
    Logining,
    Logined,
    LoginFailed,
    Reconnecting,
    Reconnected,
    ReconnectFailed,
    Kickout,
    Logout,
    LogoutFailed,
}

impl RoomStateReason {
    /// Whether publishing and playing are allowed in this state.
    pub const fn is_connected(self) -> bool {
        matches!(self, RoomStateReason::Logined | RoomStateReason::Reconnected)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KickoutReason {
    /// The same user ID logged in from another session.
    DuplicateLogin,
    /// The token expired without being renewed.
    TokenExpired,
    /// A room admin removed the user.
    Admin,
}

/// A message that could not be read as a [`ClientMessage`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct MalformedMessage {
    /// The request id, when one could still be read.
    pub id: Option<u64>,
    pub reason: String,
}

impl ClientMessage {
    /// Parses a text frame. On failure the request id is recovered when the frame has one, so the error can answer it.
    pub fn parse(text: &str) -> Result<ClientMessage, MalformedMessage> {
        serde_json::from_str(text).map_err(|err| {
            #[derive(Deserialize)]
            struct IdOnly {
                id: Option<u64>,
            }
            let id = serde_json::from_str::<IdOnly>(text).ok().and_then(|m| m.id);
            MalformedMessage {
                id,
                reason: err.to_string(),
            }
        })
    }
}

impl ServerMessage {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server messages are plain data and always serialize")
    }

    pub fn parse(text: &str) -> Result<ServerMessage, serde_json::Error> {
        serde_json::from_str(text)
    }
}

impl ClientMessage {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("client messages are plain data and always serialize")
    }
}

/// Checks a display name: at most [`MAX_USER_NAME_BYTES`], no control characters.
pub fn validate_user_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_USER_NAME_BYTES {
        return Err(format!(
            "user name is {} bytes long; the limit is {MAX_USER_NAME_BYTES}",
            name.len()
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("user name has a control character".into());
    }
    Ok(())
}

/// Checks a chat message: some text, at most [`MAX_CHAT_BYTES`], no control characters
/// but line breaks and tabs.
pub fn validate_chat(text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err("the message is empty".into());
    }
    if text.len() > MAX_CHAT_BYTES {
        return Err(format!(
            "the message is {} bytes long; the limit is {MAX_CHAT_BYTES}",
            text.len()
        ));
    }
    if text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err("the message has a control character".into());
    }
    Ok(())
}

/// Checks stream extra info: at most [`MAX_EXTRA_INFO_BYTES`].
pub fn validate_extra_info(extra: &str) -> Result<(), String> {
    if extra.len() > MAX_EXTRA_INFO_BYTES {
        return Err(format!(
            "stream extra info is {} bytes long; the limit is {MAX_EXTRA_INFO_BYTES}",
            extra.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_round_trips_in_the_documented_shape() {
        let text = r#"{"id":1,"request":{"type":"login","protocol":1,"room_id":"lobby","token":"t",
            "user":{"user_id":"alice","user_name":"Alice"},"config":{"user_update":true}}}"#;
        let msg = ClientMessage::parse(text).expect("documented shape parses");
        let Request::Login(login) = &msg.request else {
            panic!("expected a login, got {msg:?}");
        };
        assert_eq!(login.room_id.as_str(), "lobby");
        assert!(login.config.user_update);
        let again = ClientMessage::parse(&msg.to_json()).expect("round trip");
        assert_eq!(again, msg);
    }

    #[test]
    fn requests_without_fields_refuse_unknown_ones() {
        let err =
            ClientMessage::parse(r#"{"id":3,"request":{"type":"logout","now":true}}"#).expect_err("unknown field");
        assert_eq!(err.id, Some(3));
    }

    #[test]
    fn unit_requests_are_just_a_type() {
        let msg = ClientMessage::parse(r#"{"id":9,"request":{"type":"logout"}}"#).expect("logout parses");
        assert_eq!(msg.request, Request::Logout {});
    }

    #[test]
    fn malformed_messages_keep_their_id_when_readable() {
        let err = ClientMessage::parse(r#"{"id":5,"request":{"type":"fly"}}"#).expect_err("unknown type");
        assert_eq!(err.id, Some(5));
        let err = ClientMessage::parse("{nope").expect_err("not json");
        assert_eq!(err.id, None);
        let err = ClientMessage::parse(r#"{"id":"x","request":{"type":"logout"}}"#).expect_err("id of wrong type");
        assert_eq!(err.id, None);
    }

    #[test]
    fn bad_ids_inside_requests_are_rejected() {
        let err = ClientMessage::parse(r#"{"id":2,"request":{"type":"stop_publishing","stream_id":"a b"}}"#)
            .expect_err("space in a stream id");
        assert_eq!(err.id, Some(2));
        assert!(err.reason.contains("not allowed"), "{}", err.reason);
    }

    #[test]
    fn server_messages_round_trip() {
        let msgs = [
            ServerMessage::Response {
                id: Some(3),
                result: ResponseResult::Error(ErrorBody::new(ErrorCode::TokenExpired, "token expired")),
            },
            ServerMessage::Event {
                seq: 1,
                event: Event::PoseUpdate {
                    room_id: RoomId::new("r").expect("valid"),
                    user_id: UserId::new("u").expect("valid"),
                    pose: Pose::IDENTITY,
                },
            },
        ];
        for msg in msgs {
            assert_eq!(ServerMessage::parse(&msg.to_json()).expect("round trip"), msg);
        }
    }

    #[test]
    fn unknown_error_codes_read_as_unknown() {
        let body: ErrorBody =
            serde_json::from_str(r#"{"code":"quota_exceeded","message":"m"}"#).expect("forward compatible");
        assert_eq!(body.code, ErrorCode::Unknown);
    }

    #[test]
    fn chat_messages_need_text_within_limits_without_control_characters() {
        assert!(validate_chat("hello\nsecond line\twith a tab").is_ok());
        assert!(validate_chat("  \n ").is_err());
        assert!(validate_chat(&"x".repeat(MAX_CHAT_BYTES)).is_ok());
        assert!(validate_chat(&"x".repeat(MAX_CHAT_BYTES + 1)).is_err());
        assert!(validate_chat("bell\u{7}").is_err());
        assert!(validate_chat("escape \u{1b}[31m").is_err());
    }

    #[test]
    fn poses_must_be_finite_bounded_and_unit() {
        assert!(Pose::IDENTITY.validate().is_ok());
        let far = Pose {
            position: [1e6, 0.0, 0.0],
            ..Pose::IDENTITY
        };
        assert!(far.validate().is_err());
        let skewed = Pose {
            orientation: [0.0, 0.0, 0.0, 2.0],
            ..Pose::IDENTITY
        };
        assert!(skewed.validate().is_err());
        let nan = Pose {
            position: [f32::NAN, 0.0, 0.0],
            ..Pose::IDENTITY
        };
        assert!(nan.validate().is_err());
    }
}
