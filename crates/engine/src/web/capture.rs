//! Pictures in the browser, both ways. A media stream's video is drawn into a canvas at the
//! stream's rate and its pixels go, as I420, into a latest-frame slot (the local preview, or
//! a played stream's frames). A local stream's media comes from getUserMedia (a camera), or,
//! for the test pattern and app frames, from a canvas that its preview is drawn into
//! (`captureStream`) with a tone or silence from Web Audio; either is kept per local stream.
//! A local stream's devices ([`Devices`]) and the pacing of generated sources ([`pace`]) are
//! the browser's side of `crate::stream`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use web_time::Instant;

use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;
use web_sys::{CanvasRenderingContext2d, HtmlCanvasElement, HtmlVideoElement, MediaStream, MediaStreamConstraints};

use super::util::{Interval, describe, hidden_element, resolve, sleep, window};
use crate::media::convert::rgba_to_i420;
use crate::media::{AudioBuffer, ColorMatrix, FrameSlot, VideoFrame, read_frame_code};
use crate::stream::{AudioSource, CameraFrame, Pace, StreamConfig, TrackKind, VideoSource};

/// Copies a media stream's pictures into a slot while it lives.
pub(crate) struct VideoTap {
    video: HtmlVideoElement,
    canvas: HtmlCanvasElement,
    _tick: Interval,
}

impl VideoTap {
    pub fn new(stream: &MediaStream, slot: FrameSlot, fps: f32) -> Result<VideoTap, String> {
        let video: HtmlVideoElement = hidden_element("video").ok_or("no page to show video in")?;
        video.set_muted(true);
        video.set_autoplay(true);
        let _ = video.set_attribute("playsinline", "");
        video.set_src_object(Some(stream));
        if let Ok(started) = video.play() {
            // Closing the tap before playback starts rejects this; nothing to report then.
            // (A few bytes per tap, kept for the page's life: the rejection may come later.)
            let ignore = Closure::<dyn FnMut(wasm_bindgen::JsValue)>::new(|_| {});
            let _ = started.catch(&ignore);
            ignore.forget();
        }
        let canvas: HtmlCanvasElement = hidden_element("canvas").ok_or("no page to draw video in")?;
        let options = js_sys::Object::new();
        let _ = js_sys::Reflect::set(&options, &"willReadFrequently".into(), &true.into());
        let context: CanvasRenderingContext2d = canvas
            .get_context_with_context_options("2d", &options)
            .map_err(describe)?
            .ok_or("no 2D canvas")?
            .dyn_into()
            .map_err(|_| "not a 2D canvas")?;
        let tick = {
            let (video, canvas) = (video.clone(), canvas.clone());
            let period = Duration::from_secs_f32(1.0 / fps.clamp(1.0, 60.0));
            Interval::start(period, move || {
                // Even sizes only: I420 halves both.
                let (width, height) = (video.video_width() & !1, video.video_height() & !1);
                if video.ready_state() < 2 || width < 16 || height < 16 {
                    return;
                }
                if canvas.width() != width || canvas.height() != height {
                    canvas.set_width(width);
                    canvas.set_height(height);
                }
                if context.draw_image_with_html_video_element(&video, 0.0, 0.0).is_err() {
                    return;
                }
                let Ok(pixels) = context.get_image_data(0.0, 0.0, f64::from(width), f64::from(height)) else {
                    return;
                };
                if let Ok(frame) = rgba_to_i420(width, height, &pixels.data()) {
                    let code = read_frame_code(&frame);
                    slot.put(frame, code);
                }
            })?
        };
        Ok(VideoTap {
            video,
            canvas,
            _tick: tick,
        })
    }
}

impl Drop for VideoTap {
    fn drop(&mut self) {
        self.video.set_src_object(None);
        self.video.remove();
        self.canvas.remove();
    }
}

/// A local stream's media: a camera opening, open (with its preview tap), or failed; or
/// pictures drawn from the stream's preview.
enum Camera {
    Opening,
    Open {
        stream: MediaStream,
        /// Kept for the local preview.
        _tap: Option<VideoTap>,
    },
    Drawn {
        stream: MediaStream,
        /// Kept while the stream lives: dropping it stops the drawing and the tone.
        _drawn: Drawn,
    },
    Failed(String),
}

/// A canvas that a local stream's preview is drawn into, captured as a media stream, with
/// the stream's tone (if any).
struct Drawn {
    canvas: HtmlCanvasElement,
    running: Rc<Cell<bool>>,
    oscillator: Option<web_sys::OscillatorNode>,
}

impl Drop for Drawn {
    fn drop(&mut self) {
        self.running.set(false);
        self.canvas.remove();
        if let Some(oscillator) = &self.oscillator {
            let _ = oscillator.stop();
        }
    }
}

/// Makes local stream `key`'s media from its preview: the pictures drawn at `fps` into a
/// canvas that the browser captures, and a tone (or silence) from Web Audio.
fn open_drawn(
    key: u64,
    preview: FrameSlot,
    width: u32,
    height: u32,
    fps: f32,
    audio: AudioSource,
) -> Result<(), String> {
    let canvas: HtmlCanvasElement = hidden_element("canvas").ok_or("no page to draw in")?;
    canvas.set_width(width);
    canvas.set_height(height);
    let context: CanvasRenderingContext2d = canvas
        .get_context("2d")
        .map_err(describe)?
        .ok_or("no 2D canvas")?
        .dyn_into()
        .map_err(|_| "not a 2D canvas")?;
    let stream = canvas
        .capture_stream_with_frame_request_rate(f64::from(fps))
        .map_err(describe)?;
    let oscillator = match audio {
        AudioSource::Tone(_) | AudioSource::Silence | AudioSource::Microphone => {
            let audio_context = super::audio_context()?;
            let destination = audio_context.create_media_stream_destination().map_err(describe)?;
            let oscillator = match audio {
                AudioSource::Tone(frequency) => {
                    let oscillator = audio_context.create_oscillator().map_err(describe)?;
                    oscillator.frequency().set_value(frequency as f32);
                    let gain = audio_context.create_gain().map_err(describe)?;
                    gain.gain().set_value(0.5);
                    oscillator.connect_with_audio_node(&gain).map_err(describe)?;
                    gain.connect_with_audio_node(&destination).map_err(describe)?;
                    oscillator.start().map_err(describe)?;
                    Some(oscillator)
                }
                _ => None,
            };
            for track in destination.stream().get_audio_tracks().iter() {
                if let Ok(track) = track.dyn_into::<web_sys::MediaStreamTrack>() {
                    stream.add_track(&track);
                }
            }
            oscillator
        }
        AudioSource::Off => None,
    };
    let running = Rc::new(Cell::new(true));
    {
        let running = running.clone();
        let period = Duration::from_secs_f32(1.0 / fps.clamp(1.0, 60.0));
        wasm_bindgen_futures::spawn_local(async move {
            let mut seen = 0;
            let mut rgba = Vec::new();
            while running.get() && !preview.is_closed() {
                if let Some(frame) = preview.newer_than(seen) {
                    seen = frame.sequence;
                    draw(&context, &frame.frame, &mut rgba);
                }
                sleep(period).await;
            }
        });
    }
    CAMERAS.with(|c| {
        c.borrow_mut().insert(
            key,
            Camera::Drawn {
                stream,
                _drawn: Drawn {
                    canvas,
                    running,
                    oscillator,
                },
            },
        )
    });
    Ok(())
}

/// Draws an I420 frame into a canvas of its size.
fn draw(context: &CanvasRenderingContext2d, frame: &VideoFrame, rgba: &mut Vec<u8>) {
    let (width, height) = (frame.width as usize, frame.height as usize);
    let matrix = ColorMatrix::for_size(frame.width, frame.height);
    rgba.clear();
    rgba.reserve(width * height * 4);
    for row in 0..height {
        for col in 0..width {
            let at = (row / 2) * frame.uv_stride + col / 2;
            rgba.extend(matrix.to_rgb(frame.y[row * frame.y_stride + col], frame.u[at], frame.v[at]));
            rgba.push(255);
        }
    }
    if let Ok(image) = web_sys::ImageData::new_with_u8_clamped_array_and_sh(
        wasm_bindgen::Clamped(rgba.as_slice()),
        frame.width,
        frame.height,
    ) {
        let _ = context.put_image_data(&image, 0.0, 0.0);
    }
}

/// A local stream's devices in the browser: its camera (and microphone) from getUserMedia,
/// or its pictures and tone drawn for sending; all kept per stream key.
#[derive(Debug)]
pub(crate) struct Devices {
    key: u64,
    /// The browser shows the camera in the preview itself.
    camera: bool,
}

impl Devices {
    pub fn open(key: u64, config: &mut StreamConfig, preview: &FrameSlot, notes: &mut Vec<String>) -> Devices {
        if let VideoSource::Camera(_) = config.video {
            // The browser opens the camera (asking the person) and paces its pictures.
            open_camera(
                key,
                preview.clone(),
                config.width,
                config.height,
                config.fps,
                config.audio == AudioSource::Microphone,
            );
            return Devices { key, camera: true };
        }
        if config.audio == AudioSource::Microphone {
            notes.push("in a browser the microphone comes with the camera; sending silence".into());
        }
        let (width, height, fps) = (config.width, config.height, config.fps);
        if let Err(err) = open_drawn(key, preview.clone(), width, height, fps, config.audio) {
            notes.push(format!("this browser can't send these pictures: {err}"));
        }
        Devices { key, camera: false }
    }

    pub fn fills_preview(&self) -> bool {
        self.camera
    }

    /// The browser's camera goes straight to the preview; the capture step never sees it.
    pub fn next_camera_frame(&self, _wait: Duration) -> CameraFrame {
        CameraFrame::NoCamera
    }

    /// The browser sends the microphone itself; nothing is recorded for the app.
    pub fn captured_audio(&self) -> Option<&AudioBuffer> {
        None
    }

    pub fn set_enabled(&self, kind: TrackKind, enabled: bool) {
        let kind = match kind {
            TrackKind::Video => "video",
            TrackKind::Audio => "audio",
        };
        set_track_enabled(self.key, kind, enabled);
    }

    pub fn close(&self) {
        close_camera(self.key);
    }
}

/// Runs `tick` on the page's event loop, every `period` (or at once when it says so), until
/// it says stop.
pub(crate) fn pace(period: Duration, mut tick: impl FnMut() -> Pace + 'static) -> Result<(), String> {
    wasm_bindgen_futures::spawn_local(async move {
        let mut next = Instant::now();
        loop {
            match tick() {
                Pace::Stop => break,
                Pace::Now => {
                    next = Instant::now();
                    sleep(Duration::from_millis(1)).await;
                }
                Pace::Sleep => {
                    next += period;
                    let now = Instant::now();
                    if next > now {
                        sleep(next - now).await;
                    } else {
                        next = now;
                        sleep(Duration::ZERO).await;
                    }
                }
            }
        }
    });
    Ok(())
}

thread_local! {
    static CAMERAS: RefCell<HashMap<u64, Camera>> = RefCell::new(HashMap::new());
}

/// Opens the camera (and the microphone, when `audio`) for local stream `key`, showing its
/// pictures in `preview`.
fn open_camera(key: u64, preview: FrameSlot, width: u32, height: u32, fps: f32, audio: bool) {
    CAMERAS.with(|c| c.borrow_mut().insert(key, Camera::Opening));
    wasm_bindgen_futures::spawn_local(async move {
        let opened = get_user_media(width, height, fps, audio).await;
        let camera = match opened {
            Ok(stream) => {
                let tap = VideoTap::new(&stream, preview, fps)
                    .map_err(|err| tracing::warn!(%err, "no local preview"))
                    .ok();
                Camera::Open { stream, _tap: tap }
            }
            Err(err) => Camera::Failed(err),
        };
        CAMERAS.with(|c| {
            let mut cameras = c.borrow_mut();
            // Closed while opening: let go of it at once.
            match cameras.get_mut(&key) {
                Some(slot) => *slot = camera,
                None => {
                    if let Camera::Open { stream, .. } = camera {
                        stop_tracks(&stream);
                    }
                }
            }
        });
    });
}

async fn get_user_media(width: u32, height: u32, fps: f32, audio: bool) -> Result<MediaStream, String> {
    let devices = window()
        .ok_or("no page")?
        .navigator()
        .media_devices()
        .map_err(|_| "this browser gives no access to cameras".to_owned())?;
    let video = js_sys::Object::new();
    for (name, value) in [
        ("width", f64::from(width)),
        ("height", f64::from(height)),
        ("frameRate", f64::from(fps)),
    ] {
        let _ = js_sys::Reflect::set(&video, &name.into(), &value.into());
    }
    let constraints = MediaStreamConstraints::new();
    constraints.set_video(&video);
    constraints.set_audio(&audio.into());
    let promise = devices
        .get_user_media_with_constraints(&constraints)
        .map_err(describe)?;
    let stream = resolve(promise).await.map_err(|e| format!("no camera: {e}"))?;
    stream
        .dyn_into::<MediaStream>()
        .map_err(|_| "getUserMedia gave no stream".into())
}

/// The media of local stream `key`, once it is there (waiting up to 10 s for the person to
/// allow a camera).
pub(crate) async fn local_media(key: u64) -> Result<MediaStream, String> {
    for _ in 0..200 {
        let state = CAMERAS.with(|c| match c.borrow().get(&key) {
            None => Some(Err("the stream was destroyed".to_owned())),
            Some(Camera::Opening) => None,
            Some(Camera::Open { stream, .. } | Camera::Drawn { stream, .. }) => Some(Ok(stream.clone())),
            Some(Camera::Failed(err)) => Some(Err(err.clone())),
        });
        if let Some(state) = state {
            return state;
        }
        sleep(Duration::from_millis(50)).await;
    }
    Err("the camera did not open within 10 s".into())
}

/// Turns the `kind` ("audio" or "video") tracks of local stream `key` on or off: a track that
/// is off sends silence or black, and the preview shows black.
fn set_track_enabled(key: u64, kind: &str, enabled: bool) {
    CAMERAS.with(|c| {
        if let Some(Camera::Open { stream, .. } | Camera::Drawn { stream, .. }) = c.borrow().get(&key) {
            for track in stream.get_tracks().iter() {
                if let Ok(track) = track.dyn_into::<web_sys::MediaStreamTrack>()
                    && track.kind() == kind
                {
                    track.set_enabled(enabled);
                }
            }
        }
    });
}

/// Closes the camera (or the drawn pictures) of local stream `key`.
fn close_camera(key: u64) {
    if let Some(Camera::Open { stream, .. } | Camera::Drawn { stream, .. }) =
        CAMERAS.with(|c| c.borrow_mut().remove(&key))
    {
        stop_tracks(&stream);
    }
}

fn stop_tracks(stream: &MediaStream) {
    for track in stream.get_tracks().iter() {
        if let Ok(track) = track.dyn_into::<web_sys::MediaStreamTrack>() {
            track.stop();
        }
    }
}
