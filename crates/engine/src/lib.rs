//! holoroom-engine: Holoroom's client SDK, usable without Bevy (bots, tests, benchmarks, the app).
//!
//! The call flow follows the classic RTC SDKs: log into a room with a token, watch
//! room, user and stream updates, publish and play streams, log out.
//!
//! - [`signaling`] (native): the WebSocket connection to a room server, requests with
//!   typed responses and an ordered event stream.
//!
//! Architecture Invariant: the API is platform-neutral; native-only modules are behind
//! `cfg(not(target_arch = "wasm32"))` so a web backend can sit beside them.

pub use holoroom_protocol as protocol;

#[cfg(not(target_arch = "wasm32"))]
pub mod signaling;
