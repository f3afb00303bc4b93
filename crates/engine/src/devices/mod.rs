//! The machine's media devices: sound cards (the room's output and microphones) and cameras.
//! Every device may be missing; each opener says clearly why it could not open, and the callers
//! fall back (silence, the test pattern) and tell the person.

pub mod audio;
pub mod camera;

pub use audio::{AudioDeviceError, AudioOutput, Microphone, Resampler, input_devices, output_devices};
pub use camera::{CameraCapture, CameraError, CameraInfo, cameras};
