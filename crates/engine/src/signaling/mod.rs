//! The signaling connection to a room server: requests with typed responses, server events
//! in order. The types here are shared; the connection itself is per platform (tokio and
//! tungstenite on the desktop, the page's WebSocket in a browser), chosen in `crate::platform`.

use std::time::Duration;

use holoroom_protocol::{ErrorBody, Event};

pub use crate::platform::Signaling;

/// How long a request waits for its response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a signaling call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SignalingError {
    #[error("can't reach room server at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("the room server refused: {0}")]
    Refused(ErrorBody),
    #[error("the connection to the room server is closed")]
    Closed,
    #[error("the room server sent something unreadable: {0}")]
    Protocol(String),
    #[error("the room server did not answer within {0:?}")]
    Timeout(Duration),
}

/// What the driver reports besides responses.
#[derive(Debug, Clone, PartialEq)]
pub enum SignalingEvent {
    /// A server event with its sequence number.
    Event { seq: u64, event: Event },
    /// The socket closed; `code` is the server's close code when it sent one.
    Closed { code: Option<u16>, reason: String },
}

/// A login in the protocol version this client speaks; `resume_session` after a drop.
pub fn login_request(
    room_id: &holoroom_protocol::RoomId,
    token: &str,
    user: &holoroom_protocol::UserInfo,
    config: &holoroom_protocol::LoginConfig,
    resume_session: Option<String>,
) -> holoroom_protocol::LoginRequest {
    holoroom_protocol::LoginRequest {
        protocol: holoroom_protocol::PROTOCOL_VERSION,
        room_id: room_id.clone(),
        token: token.to_owned(),
        user: user.clone(),
        config: config.clone(),
        resume_session,
    }
}

/// The answer to a login, or why it is not one.
pub(crate) fn logged_in(
    body: holoroom_protocol::ResponseBody,
) -> Result<holoroom_protocol::LoginResponse, SignalingError> {
    match body {
        holoroom_protocol::ResponseBody::LoggedIn(response) => Ok(*response),
        other => Err(SignalingError::Protocol(format!("login answered with {other:?}"))),
    }
}

impl From<SignalingError> for crate::engine::RoomError {
    fn from(err: SignalingError) -> Self {
        use crate::engine::RoomError;
        match err {
            SignalingError::Connect { url, reason } => RoomError::Unreachable { url, reason },
            SignalingError::Refused(body) => RoomError::Refused(body),
            SignalingError::Closed => RoomError::Closed,
            SignalingError::Protocol(what) => RoomError::Protocol(what),
            SignalingError::Timeout(_) => RoomError::Timeout,
        }
    }
}
