//! Cameras through nokhwa (V4L2 on Linux). A camera is opened, read and dropped on a thread of
//! its own (nokhwa's camera may not cross threads); frames come out converted to I420 on a small
//! channel that keeps only the newest.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use nokhwa::Camera;
use nokhwa::utils::{ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType};

use crate::media::VideoFrame;
use crate::media::convert::{nv12_to_i420, rgb_to_i420, yuyv_to_i420};

/// A camera this machine has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraInfo {
    pub index: u32,
    pub name: String,
}

/// Why a camera could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CameraError {
    #[error("camera {0} not found")]
    NotFound(u32),
    #[error("can't open camera {index}: {reason}")]
    Open { index: u32, reason: String },
    #[error("camera {0} offers no picture format Holoroom reads (YUYV, NV12 or MJPEG)")]
    NoFormat(u32),
    #[error("can't start the camera thread: {0}")]
    Thread(String),
}

/// The cameras on this machine, by index.
pub fn cameras() -> Vec<CameraInfo> {
    let mut found: Vec<CameraInfo> = nokhwa::query(ApiBackend::Auto)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|info| {
            let index = info.index().as_index().ok()?;
            Some(CameraInfo {
                index,
                name: info.human_name(),
            })
        })
        .collect();
    found.sort_by_key(|c| c.index);
    found
}

/// The format to ask for: among those Holoroom reads, the one nearest `width`x`height` (a larger
/// one before a smaller), then the frame rate nearest `fps`, then the cheapest to convert.
pub fn choose_format(offered: &[CameraFormat], width: u32, height: u32, fps: f32) -> Option<CameraFormat> {
    let cost = |f: &FrameFormat| match f {
        FrameFormat::NV12 => Some(0),
        FrameFormat::YUYV => Some(1),
        FrameFormat::MJPEG => Some(2),
        _ => None,
    };
    let wanted = u64::from(width) * u64::from(height);
    offered
        .iter()
        .filter(|f| cost(&f.format()).is_some() && VideoFrame::check_size(f.width(), f.height()).is_ok())
        .min_by_key(|f| {
            let area = u64::from(f.width()) * u64::from(f.height());
            let (smaller, distance) = if area >= wanted {
                (false, area - wanted)
            } else {
                (true, wanted - area)
            };
            let rate = (f.frame_rate() as f32 - fps).abs() as u64;
            (smaller, distance, rate, cost(&f.format()))
        })
        .copied()
}

/// Converts one captured buffer to I420.
pub fn to_i420(format: FrameFormat, width: u32, height: u32, data: &[u8]) -> Result<VideoFrame, String> {
    match format {
        FrameFormat::YUYV => yuyv_to_i420(width, height, data).map_err(|e| e.to_string()),
        FrameFormat::NV12 => nv12_to_i420(width, height, data).map_err(|e| e.to_string()),
        FrameFormat::MJPEG => {
            let options = zune_jpeg::zune_core::options::DecoderOptions::default()
                .jpeg_set_out_colorspace(zune_jpeg::zune_core::colorspace::ColorSpace::RGB);
            let mut decoder = zune_jpeg::JpegDecoder::new_with_options(data, options);
            decoder.decode_headers().map_err(|e| format!("bad JPEG: {e:?}"))?;
            let (w, h) = decoder.dimensions().ok_or("JPEG without a size")?;
            if (w, h) != (width as usize, height as usize) {
                return Err(format!("JPEG is {w}x{h}, the camera said {width}x{height}"));
            }
            let rgb = decoder.decode().map_err(|e| format!("bad JPEG: {e:?}"))?;
            rgb_to_i420(width, height, &rgb).map_err(|e| e.to_string())
        }
        other => Err(format!("{other} is not read")),
    }
}

/// A camera being read. Dropping it stops the capture.
#[derive(Debug)]
pub struct CameraCapture {
    name: String,
    format: CameraFormat,
    frames: crossbeam_channel::Receiver<VideoFrame>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl CameraCapture {
    /// Opens camera `index` in the format nearest `width`x`height` at `fps`.
    pub fn open(index: u32, width: u32, height: u32, fps: f32) -> Result<CameraCapture, CameraError> {
        if !cameras().iter().any(|c| c.index == index) {
            return Err(CameraError::NotFound(index));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
        let (frames_tx, frames) = crossbeam_channel::bounded::<VideoFrame>(2);
        let thread = {
            let stop = stop.clone();
            let oldest = frames.clone();
            std::thread::Builder::new()
                .name(format!("camera-{index}"))
                .spawn(move || {
                    let mut camera = match open_camera(index, width, height, fps) {
                        Ok((camera, name, format)) => {
                            let _ = ready_tx.send(Ok((name, format)));
                            camera
                        }
                        Err(err) => {
                            let _ = ready_tx.send(Err(err));
                            return;
                        }
                    };
                    let format = camera.camera_format();
                    let mut failures = 0;
                    while !stop.load(Ordering::Relaxed) {
                        // Blocks until the camera has a picture.
                        let converted = camera
                            .frame()
                            .map_err(|e| e.to_string())
                            .and_then(|b| to_i420(format.format(), format.width(), format.height(), b.buffer()));
                        match converted {
                            Ok(frame) => {
                                failures = 0;
                                if let Err(crossbeam_channel::TrySendError::Full(frame)) = frames_tx.try_send(frame) {
                                    // Newest wins: make room and offer it again.
                                    let _ = oldest.try_recv();
                                    let _ = frames_tx.try_send(frame);
                                }
                            }
                            Err(err) => {
                                failures += 1;
                                tracing::debug!(%err, "camera frame lost");
                                if failures >= 30 {
                                    tracing::warn!(%err, "camera {index} stopped delivering");
                                    break;
                                }
                            }
                        }
                    }
                })
                .map_err(|e| CameraError::Thread(e.to_string()))?
        };
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok((name, format))) => Ok(CameraCapture {
                name,
                format,
                frames,
                stop,
                thread: Some(thread),
            }),
            Ok(Err(err)) => {
                let _ = thread.join();
                Err(err)
            }
            Err(_) => {
                stop.store(true, Ordering::Relaxed);
                Err(CameraError::Open {
                    index,
                    reason: "it did not open within 5 s".into(),
                })
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Width, height and frame rate the camera delivers.
    pub fn format(&self) -> (u32, u32, f32) {
        (
            self.format.width(),
            self.format.height(),
            self.format.frame_rate() as f32,
        )
    }

    /// Converted frames, newest kept; disconnected when the camera stops.
    pub fn frames(&self) -> &crossbeam_channel::Receiver<VideoFrame> {
        &self.frames
    }
}

impl Drop for CameraCapture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // The thread releases the camera after its current picture (a frame time, normally).
        // Wait that long, so the camera can be opened again at once; a stalled driver is left
        // to its thread.
        if let Some(thread) = self.thread.take() {
            let deadline = std::time::Instant::now() + Duration::from_secs(1);
            while !thread.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

fn open_camera(index: u32, width: u32, height: u32, fps: f32) -> Result<(Camera, String, CameraFormat), CameraError> {
    let open_error = |e: nokhwa::NokhwaError| CameraError::Open {
        index,
        reason: e.to_string(),
    };
    let readable = [FrameFormat::NV12, FrameFormat::YUYV, FrameFormat::MJPEG];
    let mut camera = Camera::new(
        CameraIndex::Index(index),
        RequestedFormat::with_formats(RequestedFormatType::None, &readable),
    )
    .map_err(open_error)?;
    let offered = camera.compatible_camera_formats().map_err(open_error)?;
    let chosen = choose_format(&offered, width, height, fps).ok_or(CameraError::NoFormat(index))?;
    camera
        .set_camera_requset(RequestedFormat::with_formats(
            RequestedFormatType::Exact(chosen),
            &[chosen.format()],
        ))
        .map_err(open_error)?;
    camera.open_stream().map_err(open_error)?;
    let name = camera.info().human_name();
    Ok((camera, name, chosen))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(w: u32, h: u32, format: FrameFormat, fps: u32) -> CameraFormat {
        CameraFormat::new_from(w, h, format, fps)
    }

    #[test]
    fn the_format_nearest_the_wish_and_cheapest_to_read_wins() {
        let offered = [
            offer(1920, 1080, FrameFormat::MJPEG, 30),
            offer(640, 480, FrameFormat::YUYV, 30),
            offer(640, 480, FrameFormat::MJPEG, 30),
            offer(320, 240, FrameFormat::YUYV, 30),
            offer(640, 360, FrameFormat::GRAY, 30),
        ];
        let chosen = choose_format(&offered, 640, 360, 30.0).expect("one");
        assert_eq!(
            (chosen.width(), chosen.height(), chosen.format()),
            (640, 480, FrameFormat::YUYV)
        );
        // Nothing large enough: the largest smaller one.
        let chosen = choose_format(&offered[3..], 1280, 720, 30.0).expect("one");
        assert_eq!((chosen.width(), chosen.height()), (320, 240));
        assert!(
            choose_format(&offered[4..], 640, 360, 30.0).is_none(),
            "GRAY is not read"
        );
    }

    #[test]
    fn frame_rate_breaks_ties() {
        let offered = [
            offer(640, 360, FrameFormat::NV12, 5),
            offer(640, 360, FrameFormat::NV12, 30),
        ];
        assert_eq!(
            choose_format(&offered, 640, 360, 30.0).map(|f| f.frame_rate()),
            Some(30)
        );
    }

    #[test]
    fn an_mjpeg_frame_is_decoded_to_i420() {
        let jpeg = include_bytes!("testdata/red-32x16.jpg");
        let frame = to_i420(FrameFormat::MJPEG, 32, 16, jpeg).expect("decodes");
        // Red in BT.601 limited range is about Y 82, U 90, V 240 (JPEG rounding aside).
        let near = |got: u8, want: i32| (i32::from(got) - want).abs() <= 4;
        assert!(near(frame.y[100], 82) && near(frame.u[10], 90) && near(frame.v[10], 240));
        assert!(
            to_i420(FrameFormat::MJPEG, 640, 480, jpeg).is_err(),
            "size must match the camera's"
        );
    }

    #[test]
    fn a_bad_jpeg_is_an_error_not_a_panic() {
        assert!(to_i420(FrameFormat::MJPEG, 640, 480, b"not a jpeg").is_err());
        assert!(to_i420(FrameFormat::MJPEG, 640, 480, &[0xFF, 0xD8, 0xFF]).is_err());
        assert!(to_i420(FrameFormat::GRAY, 16, 16, &[0; 256]).is_err());
    }

    #[test]
    fn a_missing_camera_is_a_clear_error() {
        let missing = (0..64)
            .find(|i| !cameras().iter().any(|c| c.index == *i))
            .expect("a free index");
        assert_eq!(
            CameraCapture::open(missing, 640, 360, 30.0).expect_err("no camera"),
            CameraError::NotFound(missing)
        );
    }
}
