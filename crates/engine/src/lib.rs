//! holoroom-engine: Holoroom's client SDK, usable without Bevy (bots, tests, benchmarks, the app).
//!
//! The call flow follows the classic RTC SDKs: create an [`Engine`], log into a room with a
//! token, watch room state, user and stream updates on [`Engine::events`], log out.
//!
//! - `client`: the [`Engine`] itself, the API's entry point.
//! - [`engine`]: what the API speaks: [`EngineEvent`], [`RoomError`], states, configuration,
//!   and the commands the backends carry out.
//! - `machine`: the client's room as a state machine without IO, written once; the
//!   backends' drivers perform its actions.
//! - [`token`]: token sources (fixed, minted, a dev server's guest endpoint).
//! - `platform`: the one place that picks the backend for the target.
//! - [`media`]: I420 frames, the test pattern with a frame code and its reader, tones,
//!   the spatial mixer, the receive buffers.
//! - [`room_view`]: users and streams as the app was told them; turns a reconnect into differences.
//! - [`stream`]: local streams (`create_stream`): capture into a latest-frame slot; devices
//!   and pacing from the platform.
//! - `native`: the backend on desktop: a driver on a tokio runtime of its own thread;
//!   webrtc-rs peer connections carry each published and played stream to and from the SFU.
//! - [`codec`] (native): H.264 through OpenH264.
//! - [`devices`] (native): sound cards through cpal (the room's output, microphones) and cameras.
//! - [`bot`] (native): headless participants for demos, tests and load.
//! - [`signaling`]: the WebSocket connection, requests with typed responses, ordered events.
//! - `web` (wasm32): the backend in a browser: a driver on the page's event loop, its
//!   WebSocket, RTCPeerConnection, camera (or drawn pictures), decoding and Web Audio
//!   (AudioWorklet) behind the same API.
//!
//! Architecture Invariant: the API is platform-neutral; native-only modules are behind
//! `cfg(not(target_arch = "wasm32"))` so a web backend can sit beside them.

#[cfg(not(target_arch = "wasm32"))]
pub mod bot;
mod client;
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

pub use client::Engine;
pub use engine::{
    EngineConfig, EngineError, EngineEvent, MediaError, PlayerState, PublisherState, ReceiveReport, ReconnectPolicy,
    RemoteStream, RequestKind, RoomError, StreamQuality, SystemRequirements,
};
pub use holoroom_protocol as protocol;
pub use platform::check_system_requirements;
pub use stream::{AudioSource, EncodedClip, LocalStream, StreamConfig, StreamError, VideoSource};
pub use token::{TokenError, TokenRequest, TokenSource};
