//! The machine's media devices: sound cards (the room's output and microphones) and cameras.
//! Every device may be missing; each opener says clearly why it could not open, and the callers
//! fall back (silence, the test pattern) and tell the person.

#[cfg(not(target_arch = "wasm32"))]
pub mod audio;
#[cfg(not(target_arch = "wasm32"))]
pub mod camera;
#[cfg(target_arch = "wasm32")]
mod web;
#[cfg(target_arch = "wasm32")]
pub use web::{AudioOutput, CameraInfo, cameras, input_devices, output_devices};

#[cfg(not(target_arch = "wasm32"))]
pub use audio::{AudioDeviceError, AudioOutput, Microphone, Resampler, input_devices, output_devices};
#[cfg(not(target_arch = "wasm32"))]
pub use camera::{CameraCapture, CameraError, CameraInfo, cameras};
