//! holoroom-protocol: the language Holoroom's clients and room server speak.
//!
//! Pure data with serde (and the byte layout of per-frame capture times): no IO, no runtime,
//! builds for wasm32.
//!
//! - [`ids`]: room, user and stream IDs, validated in one place.
//! - [`messages`]: requests, responses and events of the signaling WebSocket.
//! - [`timing`]: capture times carried inside the video, and stage marks for measuring.
//! - [`token`]: the claims inside an access token.

pub mod congestion;
pub mod ids;
pub mod messages;
pub mod timing;
pub mod token;

pub use ids::{IdError, IdKind, RoomId, StreamId, UserId};
pub use messages::*;
pub use token::{TOKEN_AUDIENCE, TokenClaims, VideoGrant};
