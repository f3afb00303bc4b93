//! holoroom-engine: Holoroom's client SDK, usable without Bevy (bots, tests, benchmarks, the app).
//!
//! The call flow follows the classic RTC SDKs: create an [`Engine`], log into a room with a
//! token, watch room state, user and stream updates on [`Engine::events`], log out.
//!
//! - [`engine`]: the platform-neutral API: [`Engine`], [`EngineEvent`], [`RoomError`].
//! - [`media`]: I420 frames, the test pattern with a frame code and its reader, tones,
//!   the spatial mixer.
//! - [`room_view`]: users and streams as the app was told them; turns a reconnect into differences.
//! - [`stream`]: local streams (`create_stream`): capture paced into a latest-frame slot.
//! - `native`: the backend on desktop: a tokio runtime on its own thread drives the room;
//!   webrtc-rs peer connections carry each published and played stream to and from the SFU.
//! - [`codec`] (native): H.264 through OpenH264.
//! - [`devices`] (native): sound cards through cpal (the room's output, microphones) and cameras.
//! - [`bot`] (native): headless participants for demos, tests and load.
//! - [`signaling`]: the WebSocket connection, requests with typed responses, ordered events.
//! - `web` (wasm32): the backend in a browser: its WebSocket, RTCPeerConnection, camera,
//!   decoding and Web Audio behind the same API.
//!
//! Architecture Invariant: the API is platform-neutral; native-only modules are behind
//! `cfg(not(target_arch = "wasm32"))` so a web backend can sit beside them.

#[cfg(not(target_arch = "wasm32"))]
pub mod bot;
#[cfg(not(target_arch = "wasm32"))]
pub mod codec;
pub mod devices;
pub mod engine;
mod machine;
pub mod media;
pub mod room_view;
pub mod stream;

#[cfg(not(target_arch = "wasm32"))]
mod native;
mod platform;
pub mod signaling;
pub mod token;
#[cfg(target_arch = "wasm32")]
mod web;

pub use engine::{
    Engine, EngineConfig, EngineError, EngineEvent, MediaError, PlayerState, PublisherState, ReceiveReport,
    ReconnectPolicy, RemoteStream, RequestKind, RoomError, StreamQuality, SystemRequirements,
    check_system_requirements,
};
pub use holoroom_protocol as protocol;
pub use stream::{AudioSource, LocalStream, StreamConfig, StreamError, VideoSource};
pub use token::{TokenError, TokenRequest, TokenSource};
