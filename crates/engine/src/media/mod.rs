//! Media that needs no device or network: frames, the test pattern with its frame code, tones,
//! the spatial mixer.

pub mod audio;
pub mod audio_jitter;
pub mod convert;
pub mod frame;
pub mod mixer;
pub mod pattern;
pub mod receive;
pub mod slot;
pub mod tone;
pub mod y4m;

pub use audio::AudioBuffer;
pub use audio_jitter::{AudioJitterBuffer, AudioJitterStats, AudioOutput};
pub use frame::{ColorMatrix, FrameError, VideoFrame};
pub use mixer::{Gains, Mixer, Placement, spatial_gains};
pub use pattern::{CodeLayout, FrameCode, TestPattern, read_code_with, read_frame_code};
pub use receive::{EncodedFrame, ReceiveOutput, ReceiveStats, RtpIn, VideoReceiveBuffer};
pub use slot::{FrameSlot, SlotFrame};
pub use tone::{FRAME_SAMPLES, SAMPLE_RATE, Tone, dominant_frequency};
pub use y4m::{Y4mClip, Y4mError};

/// Microseconds since the UNIX epoch: the clock of capture times and frame codes.
pub fn unix_micros() -> u64 {
    web_time::SystemTime::now()
        .duration_since(web_time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
