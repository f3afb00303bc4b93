//! Local streams: what `create_stream` captures, paced on a thread of its own into a
//! latest-frame slot that both the local preview and the encoder read.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use web_time::Instant;

use holoroom_protocol::StreamSource;

use crate::media::{AudioBuffer, FrameSlot, TestPattern, VideoFrame, Y4mClip, unix_micros};

/// Where a stream's pictures come from.
#[derive(Debug, Clone, PartialEq)]
pub enum VideoSource {
    /// The moving test pattern with a frame code.
    TestPattern,
    /// A camera by index, at the format it offers nearest the stream's size and rate. A missing
    /// camera falls back to the test pattern and says so.
    Camera(u32),
    /// A YUV4MPEG2 file, played in a loop at its own frame rate and size.
    File(std::path::PathBuf),
    /// Frames pushed by the app with [`LocalStream::push_frame`].
    Custom,
}

/// Where a stream's sound comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AudioSource {
    /// A sine tone at this frequency, in Hz.
    Tone(f64),
    /// A microphone: [`StreamConfig::microphone`] names it, or the default one. Without one the
    /// stream sends silence and says so.
    Microphone,
    Silence,
    /// No audio track at all.
    Off,
}

/// What `create_stream` captures.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamConfig {
    pub video: VideoSource,
    pub audio: AudioSource,
    pub width: u32,
    pub height: u32,
    pub fps: f32,
    /// Which microphone records [`AudioSource::Microphone`]; None for the default one.
    pub microphone: Option<String>,
    /// Extra info published with the stream.
    pub extra_info: String,
}

impl StreamConfig {
    /// The test pattern at `width`x`height` and `fps`.
    pub fn test_pattern(width: u32, height: u32, fps: f32) -> StreamConfig {
        StreamConfig {
            video: VideoSource::TestPattern,
            audio: AudioSource::Tone(440.0),
            width,
            height,
            fps,
            microphone: None,
            extra_info: String::new(),
        }
    }
}

/// Why a stream could not be created.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StreamError {
    #[error("bad video format: {0}")]
    Format(#[from] crate::media::FrameError),
    #[error("frame rate {0} is not between 1 and 120")]
    FrameRate(f32),
    #[error("can't start the capture thread: {0}")]
    Thread(String),
    #[error("{0}")]
    File(String),
}

#[derive(Debug)]
struct Inner {
    /// Identifies the stream to platform code that keeps objects per stream (the browser's camera).
    key: u64,
    config: StreamConfig,
    preview: FrameSlot,
    stop: AtomicBool,
    /// Send black pictures instead of the source's (`mutePublishStreamVideo`).
    video_muted: AtomicBool,
    /// Send silence instead of the source's sound (`mutePublishStreamAudio`).
    audio_muted: AtomicBool,
    /// Recorded sound, for a microphone source that opened.
    captured: Option<AudioBuffer>,
    #[cfg(not(target_arch = "wasm32"))]
    microphone: std::sync::Mutex<Option<crate::devices::Microphone>>,
    /// The camera, held here so that destroying the stream releases it at once (another
    /// stream may want it next).
    #[cfg(not(target_arch = "wasm32"))]
    camera: std::sync::Mutex<Option<crate::devices::CameraCapture>>,
    /// Why the stream shows something other than what was asked for.
    note: Option<String>,
}

/// A captured local stream. Cheap to clone; capture stops when [`LocalStream::destroy`] is called
/// or the last clone is dropped.
#[derive(Debug, Clone)]
pub struct LocalStream {
    inner: Arc<Inner>,
}

impl LocalStream {
    /// Starts capturing.
    pub fn create(config: StreamConfig) -> Result<LocalStream, StreamError> {
        let mut config = config;
        let mut clip = None;
        if let VideoSource::File(path) = &config.video {
            let loaded = Y4mClip::open(path).map_err(|e| StreamError::File(e.to_string()))?;
            config.width = loaded.width;
            config.height = loaded.height;
            config.fps = loaded.fps.clamp(1.0, 120.0);
            clip = Some(loaded.frames);
        }
        VideoFrame::check_size(config.width, config.height)?;
        if !(1.0..=120.0).contains(&config.fps) {
            return Err(StreamError::FrameRate(config.fps));
        }
        let mut notes = Vec::new();
        let camera = match config.video {
            VideoSource::Camera(index) => open_camera(index, &mut config, &mut notes),
            _ => None,
        };
        let (captured, microphone) = if config.audio == AudioSource::Microphone {
            open_microphone(config.microphone.as_deref(), &mut notes)
        } else {
            (None, None)
        };
        #[cfg(target_arch = "wasm32")]
        let _ = microphone;
        let note = (!notes.is_empty()).then(|| notes.join("; "));
        if let Some(note) = &note {
            tracing::warn!("{note}");
        }
        static NEXT_KEY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let inner = Arc::new(Inner {
            key: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
            config: config.clone(),
            preview: FrameSlot::new(),
            stop: AtomicBool::new(false),
            video_muted: AtomicBool::new(false),
            audio_muted: AtomicBool::new(false),
            captured,
            #[cfg(not(target_arch = "wasm32"))]
            microphone: std::sync::Mutex::new(microphone),
            #[cfg(not(target_arch = "wasm32"))]
            camera: std::sync::Mutex::new(None),
            note,
        });
        // The capture thread reads the camera's frames; the stream owns the camera.
        #[cfg(not(target_arch = "wasm32"))]
        let camera = camera.map(|capture| {
            let frames = capture.frames().clone();
            *inner.camera.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(capture);
            frames
        });
        #[cfg(target_arch = "wasm32")]
        if let VideoSource::Camera(_) = config.video {
            // The browser opens the camera (asking the person) and paces its pictures.
            crate::web::open_camera(
                inner.key,
                inner.preview.clone(),
                config.width,
                config.height,
                config.fps,
                config.audio == AudioSource::Microphone,
            );
            return Ok(LocalStream { inner });
        }
        if config.video != VideoSource::Custom {
            let mut pattern = TestPattern::new(config.width, config.height)?;
            let mut next_clip_frame = 0usize;
            let black = VideoFrame::black(config.width, config.height)?;
            let weak = Arc::downgrade(&inner);
            let period = Duration::from_secs_f32(1.0 / config.fps);
            #[cfg(target_arch = "wasm32")]
            let _ = camera;
            std::thread::Builder::new()
                .name("capture".into())
                .spawn(move || {
                    #[cfg(not(target_arch = "wasm32"))]
                    let mut camera = camera;
                    let mut next = Instant::now();
                    loop {
                        let Some(inner) = weak.upgrade() else { break };
                        if inner.stop.load(Ordering::Relaxed) {
                            break;
                        }
                        #[cfg(not(target_arch = "wasm32"))]
                        if let Some(frames) = camera.as_ref() {
                            // Paced by the camera itself.
                            drop(inner);
                            let lost = match frames.recv_timeout(Duration::from_millis(250)) {
                                Ok(frame) => {
                                    let Some(inner) = weak.upgrade() else { break };
                                    let muted = inner.video_muted.load(Ordering::Relaxed);
                                    inner.preview.put(if muted { black.clone() } else { frame }, None);
                                    false
                                }
                                Err(crossbeam_channel::RecvTimeoutError::Timeout) => false,
                                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                                    tracing::warn!("the camera stopped; showing the test pattern");
                                    true
                                }
                            };
                            if lost {
                                camera = None;
                            }
                            continue;
                        }
                        let frame = if inner.video_muted.load(Ordering::Relaxed) {
                            black.clone()
                        } else {
                            match &clip {
                                Some(frames) => {
                                    let frame = frames[next_clip_frame].clone();
                                    next_clip_frame = (next_clip_frame + 1) % frames.len();
                                    frame
                                }
                                None => pattern.next_frame(unix_micros()),
                            }
                        };
                        inner.preview.put(frame, None);
                        drop(inner);
                        next += period;
                        let now = Instant::now();
                        if next > now {
                            std::thread::sleep(next - now);
                        } else {
                            next = now;
                        }
                    }
                })
                .map_err(|e| StreamError::Thread(e.to_string()))?;
        }
        Ok(LocalStream { inner })
    }

    /// Identifies this stream and its clones (unique in this process).
    pub fn key(&self) -> u64 {
        self.inner.key
    }

    /// The newest captured frame, for a local preview (and the encoder).
    pub fn preview(&self) -> &FrameSlot {
        &self.inner.preview
    }

    /// Supplies a frame for a [`VideoSource::Custom`] stream (black while video is muted).
    pub fn push_frame(&self, frame: VideoFrame) {
        if self.is_video_muted() {
            if let Ok(black) = VideoFrame::black(frame.width, frame.height) {
                self.inner.preview.put(black, None);
            }
            return;
        }
        self.inner.preview.put(frame, None);
    }

    /// Camera off: the preview and everyone watching get black pictures until unmuted.
    pub fn set_video_muted(&self, muted: bool) {
        self.inner.video_muted.store(muted, Ordering::Relaxed);
        #[cfg(target_arch = "wasm32")]
        crate::web::set_track_enabled(self.inner.key, "video", !muted);
    }

    pub fn is_video_muted(&self) -> bool {
        self.inner.video_muted.load(Ordering::Relaxed)
    }

    /// Microphone off: everyone hears silence until unmuted.
    pub fn set_audio_muted(&self, muted: bool) {
        self.inner.audio_muted.store(muted, Ordering::Relaxed);
        #[cfg(target_arch = "wasm32")]
        crate::web::set_track_enabled(self.inner.key, "audio", !muted);
    }

    pub fn is_audio_muted(&self) -> bool {
        self.inner.audio_muted.load(Ordering::Relaxed)
    }

    /// What the microphone recorded, 48 kHz mono, when the source is a microphone that opened.
    pub fn captured_audio(&self) -> Option<&AudioBuffer> {
        self.inner.captured.as_ref()
    }

    /// Why the stream shows something other than what was asked for, if it does.
    pub fn note(&self) -> Option<&str> {
        self.inner.note.as_deref()
    }

    /// Width, height and frame rate.
    pub fn video_format(&self) -> (u32, u32, f32) {
        (self.inner.config.width, self.inner.config.height, self.inner.config.fps)
    }

    pub fn source(&self) -> StreamSource {
        match self.inner.config.video {
            VideoSource::Custom => StreamSource::Custom,
            _ => StreamSource::Camera,
        }
    }

    pub fn audio(&self) -> AudioSource {
        self.inner.config.audio
    }

    pub fn extra_info(&self) -> String {
        self.inner.config.extra_info.clone()
    }

    /// Stops capture (`destroyStream`).
    pub fn destroy(&self) {
        self.inner.stop.store(true, Ordering::Relaxed);
        self.inner.preview.close();
        #[cfg(target_arch = "wasm32")]
        crate::web::close_camera(self.inner.key);
        #[cfg(not(target_arch = "wasm32"))]
        {
            self.inner
                .microphone
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take();
            self.inner
                .camera
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.preview.close();
        #[cfg(target_arch = "wasm32")]
        crate::web::close_camera(self.key);
    }
}

/// Opens camera `index`, adopting the size and rate it delivers; None (and a note) when it
/// cannot be used, so the stream shows the test pattern instead.
#[cfg(not(target_arch = "wasm32"))]
fn open_camera(
    index: u32,
    config: &mut StreamConfig,
    notes: &mut Vec<String>,
) -> Option<crate::devices::CameraCapture> {
    match crate::devices::CameraCapture::open(index, config.width, config.height, config.fps) {
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
    }
}

/// In a browser the camera opens asynchronously (see `crate::web::open_camera`).
#[cfg(target_arch = "wasm32")]
fn open_camera(_index: u32, _config: &mut StreamConfig, _notes: &mut [String]) -> Option<()> {
    None
}

#[cfg(not(target_arch = "wasm32"))]
fn open_microphone(
    device: Option<&str>,
    notes: &mut Vec<String>,
) -> (Option<AudioBuffer>, Option<crate::devices::Microphone>) {
    let buffer = AudioBuffer::default();
    match crate::devices::Microphone::open(device, buffer.clone()) {
        Ok(microphone) => (Some(buffer), Some(microphone)),
        Err(err) => {
            notes.push(format!("no microphone ({err}); sending silence"));
            (None, None)
        }
    }
}

/// In a browser the microphone opens with the camera, through getUserMedia.
#[cfg(target_arch = "wasm32")]
fn open_microphone(_device: Option<&str>, _notes: &mut [String]) -> (Option<AudioBuffer>, Option<()>) {
    (None, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::read_frame_code;

    #[test]
    fn the_pattern_is_captured_at_its_pace_with_codes() {
        let stream = LocalStream::create(StreamConfig::test_pattern(320, 180, 30.0)).expect("stream");
        let first = stream
            .preview()
            .wait_newer_than(0, Duration::from_secs(2))
            .expect("a frame");
        std::thread::sleep(Duration::from_millis(300));
        let later = stream.preview().latest().expect("frames keep coming");
        let captured = later.sequence - first.sequence;
        assert!(
            (3..=20).contains(&captured),
            "{captured} frames in 300 ms at 30 fps: not paced"
        );
        let a = read_frame_code(&first.frame).expect("coded");
        let b = read_frame_code(&later.frame).expect("coded");
        assert!(b.frame_number > a.frame_number);
        stream.destroy();
        assert!(stream.preview().is_closed());
    }

    #[test]
    fn a_missing_camera_falls_back_and_says_so() {
        let missing = (0..64)
            .find(|i| !crate::devices::cameras().iter().any(|c| c.index == *i))
            .expect("a free index");
        let config = StreamConfig {
            video: VideoSource::Camera(missing),
            ..StreamConfig::test_pattern(320, 180, 15.0)
        };
        let stream = LocalStream::create(config).expect("falls back");
        assert!(stream.note().is_some_and(|n| n.contains("test pattern")));
        assert!(stream.preview().wait_newer_than(0, Duration::from_secs(2)).is_some());
    }

    #[test]
    fn a_missing_microphone_sends_silence_and_says_so() {
        let config = StreamConfig {
            audio: AudioSource::Microphone,
            microphone: Some("no such microphone".into()),
            ..StreamConfig::test_pattern(320, 180, 15.0)
        };
        let stream = LocalStream::create(config).expect("falls back");
        assert!(
            stream
                .note()
                .is_some_and(|n| n.contains("no such microphone") && n.contains("silence"))
        );
        assert!(stream.captured_audio().is_none());
    }

    #[test]
    fn camera_off_shows_black_until_on_again() {
        let stream = LocalStream::create(StreamConfig::test_pattern(320, 180, 30.0)).expect("stream");
        stream.set_video_muted(true);
        let seen = stream.preview().latest().map_or(0, |f| f.sequence);
        let frame = stream
            .preview()
            .wait_newer_than(seen + 1, Duration::from_secs(2))
            .expect("frames keep coming");
        assert!(
            read_frame_code(&frame.frame).is_none(),
            "no pattern while the camera is off"
        );
        assert!(frame.frame.y.iter().all(|&y| y == 16), "black");
        stream.set_video_muted(false);
        let seen = stream.preview().latest().map_or(0, |f| f.sequence);
        let frame = stream
            .preview()
            .wait_newer_than(seen + 1, Duration::from_secs(2))
            .expect("frames keep coming");
        assert!(read_frame_code(&frame.frame).is_some(), "the pattern is back");
    }

    #[test]
    fn bad_formats_are_refused() {
        assert!(LocalStream::create(StreamConfig::test_pattern(321, 180, 30.0)).is_err());
        assert!(LocalStream::create(StreamConfig::test_pattern(320, 180, 0.0)).is_err());
    }
}
