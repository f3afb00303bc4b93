//! Local streams: what `create_stream` captures into a latest-frame slot that both the local
//! preview and the encoder read. The platform (`crate::platform`) opens the devices (a
//! camera, a microphone) and paces generated sources (the test pattern, a file): a thread on
//! the desktop, the page's timers in a browser; everything else here is the same on both.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use holoroom_protocol::StreamSource;

use crate::media::{AudioBuffer, FrameSlot, TestPattern, VideoFrame, Y4mClip, unix_micros};
use crate::platform::Devices;

/// Where a stream's pictures come from.
#[derive(Debug, Clone, PartialEq)]
pub enum VideoSource {
    /// The moving test pattern with a frame code.
    TestPattern,
    /// The test pattern with a band of changing noise across it: it costs about as many bits
    /// as a camera's picture (the plain pattern compresses to a fraction of that), for
    /// measuring what bandwidth does.
    BusyPattern,
    /// A camera by index, at the format it offers nearest the stream's size and rate. A missing
    /// camera falls back to the test pattern and says so.
    Camera(u32),
    /// A YUV4MPEG2 file, played in a loop at its own frame rate and size.
    File(std::path::PathBuf),
    /// Frames pushed by the app with [`LocalStream::push_frame`].
    Custom,
    /// Video encoded ahead of time and looped as it is, at its own size and rate (for load
    /// tests: many publishers at no encoding cost). Sent by the desktop engine only.
    Encoded(EncodedClip),
}

/// Simulcast video encoded ahead of time: for each layer of
/// [`VideoLayer::SENT`](holoroom_protocol::VideoLayer::SENT), H.264 access units (Annex B), the
/// first a keyframe. Cheap to clone; clones share the units.
#[derive(Clone)]
pub struct EncodedClip(Arc<ClipUnits>);

struct ClipUnits {
    width: u32,
    height: u32,
    fps: f32,
    layers: [Vec<Vec<u8>>; 3],
}

impl EncodedClip {
    /// A clip of `width`x`height` (the full layer) at `fps`; each layer's units in order.
    pub fn new(width: u32, height: u32, fps: f32, layers: [Vec<Vec<u8>>; 3]) -> EncodedClip {
        EncodedClip(Arc::new(ClipUnits {
            width,
            height,
            fps,
            layers,
        }))
    }

    pub fn format(&self) -> (u32, u32, f32) {
        (self.0.width, self.0.height, self.0.fps)
    }

    /// Frames in the loop (the shortest layer's).
    pub fn len(&self) -> usize {
        self.0.layers.iter().map(Vec::len).min().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Access unit `frame` of layer `layer` (an index into `VideoLayer::SENT`).
    pub fn unit(&self, layer: usize, frame: usize) -> Option<&[u8]> {
        self.0.layers.get(layer)?.get(frame).map(Vec::as_slice)
    }
}

impl PartialEq for EncodedClip {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::fmt::Debug for EncodedClip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodedClip")
            .field("format", &self.format())
            .field("frames", &self.len())
            .finish()
    }
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
    /// The busy test pattern ([`VideoSource::BusyPattern`]) and a tone.
    pub fn busy_pattern(width: u32, height: u32, fps: f32) -> StreamConfig {
        StreamConfig {
            video: VideoSource::BusyPattern,
            ..StreamConfig::test_pattern(width, height, fps)
        }
    }

    /// The test pattern at `width`x`height` and `fps`, and a tone.
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
    /// The gain on the sound sent (`setCaptureVolume`), as f32 bits.
    audio_volume: AtomicU32,
    /// Which simulcast layers (lowest first) someone receives, as the server last said; only
    /// those are sent (the desktop engine encodes only those, a browser turns the others off).
    layers_wanted: [AtomicBool; 3],
    /// The camera and microphone, held here so that destroying the stream releases them at
    /// once (another stream may want them next).
    devices: Devices,
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
        if let VideoSource::Encoded(encoded) = &config.video {
            (config.width, config.height, config.fps) = encoded.format();
        }
        VideoFrame::check_size(config.width, config.height)?;
        if !(1.0..=120.0).contains(&config.fps) {
            return Err(StreamError::FrameRate(config.fps));
        }
        let mut notes = Vec::new();
        static NEXT_KEY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
        let preview = FrameSlot::new();
        // The camera may deliver another size and rate than asked: the stream takes those.
        let devices = Devices::open(key, &mut config, &preview, &mut notes);
        let note = (!notes.is_empty()).then(|| notes.join("; "));
        if let Some(note) = &note {
            tracing::warn!("{note}");
        }
        let inner = Arc::new(Inner {
            key,
            config: config.clone(),
            preview,
            stop: AtomicBool::new(false),
            video_muted: AtomicBool::new(false),
            audio_muted: AtomicBool::new(false),
            audio_volume: AtomicU32::new(1f32.to_bits()),
            layers_wanted: [true, true, true].map(AtomicBool::new),
            devices,
            note,
        });
        if matches!(config.video, VideoSource::Custom | VideoSource::Encoded(_)) || inner.devices.fills_preview() {
            return Ok(LocalStream { inner });
        }
        let mut pattern = TestPattern::new(config.width, config.height)?;
        if config.video == VideoSource::BusyPattern {
            pattern = pattern.with_noise();
        }
        let mut next_clip_frame = 0usize;
        let black = VideoFrame::black(config.width, config.height)?;
        let weak = Arc::downgrade(&inner);
        let mut camera_lost = false;
        let tick = move || {
            let Some(inner) = weak.upgrade() else {
                return Pace::Stop;
            };
            if inner.stop.load(Ordering::Relaxed) {
                return Pace::Stop;
            }
            let muted = inner.video_muted.load(Ordering::Relaxed);
            if !camera_lost {
                // Paced by the camera itself while there is one.
                match inner.devices.next_camera_frame(Duration::from_millis(250)) {
                    CameraFrame::Frame(frame) => {
                        inner.preview.put(if muted { black.clone() } else { frame }, None);
                        return Pace::Now;
                    }
                    CameraFrame::Waiting => return Pace::Now,
                    CameraFrame::Lost => {
                        tracing::warn!("the camera stopped; showing the test pattern");
                        camera_lost = true;
                    }
                    CameraFrame::NoCamera => {}
                }
            }
            let frame = if muted {
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
            Pace::Sleep
        };
        crate::platform::pace(Duration::from_secs_f32(1.0 / config.fps), tick).map_err(StreamError::Thread)?;
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
        self.inner.devices.set_enabled(TrackKind::Video, !muted);
    }

    pub fn is_video_muted(&self) -> bool {
        self.inner.video_muted.load(Ordering::Relaxed)
    }

    /// Microphone off: everyone hears silence until unmuted.
    pub fn set_audio_muted(&self, muted: bool) {
        self.inner.audio_muted.store(muted, Ordering::Relaxed);
        self.inner.devices.set_enabled(TrackKind::Audio, !muted);
    }

    pub fn is_audio_muted(&self) -> bool {
        self.inner.audio_muted.load(Ordering::Relaxed)
    }

    /// Both switches, as the room is told them.
    pub fn mute(&self) -> holoroom_protocol::StreamMute {
        holoroom_protocol::StreamMute {
            audio: self.is_audio_muted(),
            video: self.is_video_muted(),
        }
    }

    /// The gain on the sound sent (`setCaptureVolume`): 0 silent .. 1 as captured (the
    /// default) .. 4. Applied by the desktop engine; a browser sends its sound as captured.
    pub fn set_audio_volume(&self, volume: f32) {
        let volume = if volume.is_finite() {
            volume.clamp(0.0, 4.0)
        } else {
            1.0
        };
        self.inner.audio_volume.store(volume.to_bits(), Ordering::Relaxed);
    }

    pub fn audio_volume(&self) -> f32 {
        f32::from_bits(self.inner.audio_volume.load(Ordering::Relaxed))
    }

    /// Notes which simulcast layers someone receives (dynacast): the others are not encoded.
    pub(crate) fn set_layers_wanted(&self, layers: &[holoroom_protocol::VideoLayer]) {
        for (i, wanted) in self.inner.layers_wanted.iter().enumerate() {
            let on = layers.iter().any(|l| l.index() == Some(i));
            wanted.store(on, Ordering::Relaxed);
        }
    }

    /// Whether someone receives simulcast layer `index` (lowest first); all are, until the
    /// server says otherwise.
    pub fn layer_wanted(&self, index: usize) -> bool {
        self.inner
            .layers_wanted
            .get(index)
            .is_some_and(|w| w.load(Ordering::Relaxed))
    }

    /// What the microphone recorded, 48 kHz mono, when the source is a microphone that opened.
    pub fn captured_audio(&self) -> Option<&AudioBuffer> {
        self.inner.devices.captured_audio()
    }

    /// Why the stream shows something other than what was asked for, if it does.
    pub fn note(&self) -> Option<&str> {
        self.inner.note.as_deref()
    }

    /// Width, height and frame rate.
    /// The pre-encoded video this stream loops, if it is [`VideoSource::Encoded`].
    pub fn clip(&self) -> Option<&EncodedClip> {
        match &self.inner.config.video {
            VideoSource::Encoded(clip) => Some(clip),
            _ => None,
        }
    }

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
        self.inner.devices.close();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.preview.close();
        self.devices.close();
    }
}

/// What a capture step asks of its pacer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pace {
    /// Again after the rest of the frame period.
    Sleep,
    /// Again at once (the step waited for a device itself).
    Now,
    /// Done: the stream went away.
    Stop,
}

/// The kinds of track a stream has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TrackKind {
    Video,
    Audio,
}

/// What the camera had for a capture step.
#[derive(Debug)]
#[allow(dead_code, reason = "a browser shows its camera itself and only ever says NoCamera")]
pub(crate) enum CameraFrame {
    Frame(VideoFrame),
    /// Nothing yet: try again.
    Waiting,
    /// It stopped for good.
    Lost,
    /// There is none (or the platform shows it itself).
    NoCamera,
}

/// The bitrate a picture of this size and rate is sent at: about 0.1 bit per pixel, within
/// 40 kbit/s (a quarter-size simulcast layer) and 4 Mbit/s. The same on every platform.
pub(crate) fn video_bitrate(width: u32, height: u32, fps: f32) -> u32 {
    ((width * height) as f32 * fps * 0.1).clamp(40_000.0, 4_000_000.0) as u32
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
