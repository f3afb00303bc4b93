//! A local stream's devices on the desktop (a camera through nokhwa, a microphone through
//! cpal), and a thread that paces its capture.

use std::sync::Mutex;
use std::time::Duration;

use web_time::Instant;

use crate::devices::{CameraCapture, Microphone};
use crate::media::{AudioBuffer, FrameSlot, VideoFrame};
use crate::stream::{AudioSource, CameraFrame, Pace, StreamConfig, TrackKind, VideoSource};

/// The camera and microphone of one local stream, while it lives.
#[derive(Debug)]
pub(crate) struct Devices {
    camera: Mutex<Option<CameraCapture>>,
    frames: Option<crossbeam_channel::Receiver<VideoFrame>>,
    microphone: Mutex<Option<Microphone>>,
    /// What the microphone records, 48 kHz mono.
    captured: Option<AudioBuffer>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Devices {
    /// Opens what `config` asks for. A camera adopts the size and rate it delivers; a camera
    /// or microphone that cannot be used is noted (the stream then shows the test pattern or
    /// sends silence).
    pub fn open(_key: u64, config: &mut StreamConfig, _preview: &FrameSlot, notes: &mut Vec<String>) -> Devices {
        let camera = match config.video {
            VideoSource::Camera(index) => match CameraCapture::open(index, config.width, config.height, config.fps) {
                Ok(camera) => {
                    let (width, height, fps) = camera.format();
                    config.width = width;
                    config.height = height;
                    config.fps = fps.clamp(1.0, 120.0);
                    tracing::info!(camera = camera.name(), width, height, fps, "camera open");
                    Some(camera)
                }
                Err(err) => {
                    notes.push(format!("{err}; showing the test pattern"));
                    None
                }
            },
            _ => None,
        };
        let (captured, microphone) = if config.audio == AudioSource::Microphone {
            let buffer = AudioBuffer::default();
            match Microphone::open(config.microphone.as_deref(), buffer.clone()) {
                Ok(microphone) => (Some(buffer), Some(microphone)),
                Err(err) => {
                    notes.push(format!("no microphone ({err}); sending silence"));
                    (None, None)
                }
            }
        } else {
            (None, None)
        };
        Devices {
            frames: camera.as_ref().map(|c| c.frames().clone()),
            camera: Mutex::new(camera),
            microphone: Mutex::new(microphone),
            captured,
        }
    }

    /// The desktop's capture step puts camera frames into the preview itself.
    pub fn fills_preview(&self) -> bool {
        false
    }

    /// The camera's next frame, waiting up to `wait`.
    pub fn next_camera_frame(&self, wait: Duration) -> CameraFrame {
        let Some(frames) = &self.frames else {
            return CameraFrame::NoCamera;
        };
        match frames.recv_timeout(wait) {
            Ok(frame) => CameraFrame::Frame(frame),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => CameraFrame::Waiting,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => CameraFrame::Lost,
        }
    }

    /// What the microphone records, when one opened.
    pub fn captured_audio(&self) -> Option<&AudioBuffer> {
        self.captured.as_ref()
    }

    /// Muting is done on the samples and frames on the desktop: nothing to switch here.
    pub fn set_enabled(&self, _kind: TrackKind, _enabled: bool) {}

    /// Lets go of the camera and the microphone.
    pub fn close(&self) {
        lock(&self.microphone).take();
        lock(&self.camera).take();
    }
}

/// Runs `tick` on a thread of its own, every `period` (or at once when it says so), until
/// it says stop.
pub(crate) fn pace(period: Duration, mut tick: impl FnMut() -> Pace + Send + 'static) -> Result<(), String> {
    std::thread::Builder::new()
        .name("capture".into())
        .spawn(move || {
            let mut next = Instant::now();
            loop {
                match tick() {
                    Pace::Stop => break,
                    Pace::Now => next = Instant::now(),
                    Pace::Sleep => {
                        next += period;
                        let now = Instant::now();
                        if next > now {
                            std::thread::sleep(next - now);
                        } else {
                            next = now;
                        }
                    }
                }
            }
        })
        .map(drop)
        .map_err(|e| e.to_string())
}
