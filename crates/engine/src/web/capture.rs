//! Pictures from the browser: a media stream's video is drawn into a canvas at the stream's
//! rate and its pixels go, as I420, into a latest-frame slot (the local preview, or a played
//! stream's frames). The camera itself comes from getUserMedia, kept per local stream.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;
use web_sys::{CanvasRenderingContext2d, HtmlCanvasElement, HtmlVideoElement, MediaStream, MediaStreamConstraints};

use super::util::{describe, hidden_element, resolve, sleep, window};
use crate::media::convert::rgba_to_i420;
use crate::media::{FrameSlot, read_frame_code};

/// Copies a media stream's pictures into a slot while it lives.
pub(crate) struct VideoTap {
    video: HtmlVideoElement,
    canvas: HtmlCanvasElement,
    interval: i32,
    _tick: Closure<dyn FnMut()>,
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
            Closure::<dyn FnMut()>::new(move || {
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
            })
        };
        let interval = window()
            .ok_or("no page")?
            .set_interval_with_callback_and_timeout_and_arguments_0(
                tick.as_ref().unchecked_ref(),
                (1000.0 / fps.clamp(1.0, 60.0)) as i32,
            )
            .map_err(describe)?;
        Ok(VideoTap {
            video,
            canvas,
            interval,
            _tick: tick,
        })
    }
}

impl Drop for VideoTap {
    fn drop(&mut self) {
        if let Some(window) = window() {
            window.clear_interval_with_handle(self.interval);
        }
        self.video.set_src_object(None);
        self.video.remove();
        self.canvas.remove();
    }
}

/// A local stream's camera: opening, open (with its preview tap), or failed.
enum Camera {
    Opening,
    Open(MediaStream, Option<VideoTap>),
    Failed(String),
}

thread_local! {
    static CAMERAS: RefCell<HashMap<u64, Camera>> = RefCell::new(HashMap::new());
}

/// Opens the camera (and the microphone, when `audio`) for local stream `key`, showing its
/// pictures in `preview`.
pub(crate) fn open_camera(key: u64, preview: FrameSlot, width: u32, height: u32, fps: f32, audio: bool) {
    CAMERAS.with(|c| c.borrow_mut().insert(key, Camera::Opening));
    wasm_bindgen_futures::spawn_local(async move {
        let opened = get_user_media(width, height, fps, audio).await;
        let camera = match opened {
            Ok(stream) => {
                let tap = VideoTap::new(&stream, preview, fps)
                    .map_err(|err| tracing::warn!(%err, "no local preview"))
                    .ok();
                Camera::Open(stream, tap)
            }
            Err(err) => Camera::Failed(err),
        };
        CAMERAS.with(|c| {
            let mut cameras = c.borrow_mut();
            // Closed while opening: let go of it at once.
            match cameras.get_mut(&key) {
                Some(slot) => *slot = camera,
                None => {
                    if let Camera::Open(stream, _) = camera {
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

/// The camera of local stream `key`, once it is open (waiting up to 10 s for the person to allow it).
pub(crate) async fn camera_stream(key: u64) -> Result<MediaStream, String> {
    for _ in 0..200 {
        let state = CAMERAS.with(|c| match c.borrow().get(&key) {
            None => Some(Err("the stream was destroyed".to_owned())),
            Some(Camera::Opening) => None,
            Some(Camera::Open(stream, _)) => Some(Ok(stream.clone())),
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
pub(crate) fn set_track_enabled(key: u64, kind: &str, enabled: bool) {
    CAMERAS.with(|c| {
        if let Some(Camera::Open(stream, _)) = c.borrow().get(&key) {
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

/// Closes the camera of local stream `key`.
pub(crate) fn close_camera(key: u64) {
    if let Some(Camera::Open(stream, _tap)) = CAMERAS.with(|c| c.borrow_mut().remove(&key)) {
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
