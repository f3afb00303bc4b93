//! YUV4MPEG2 (`.y4m`) files: 4:2:0 frames one after another, a simple source of real video.

use std::io::{BufRead, BufReader};
use std::path::Path;

use super::frame::VideoFrame;

/// Frame rates above this in a header are not believed (the default 30 is used instead).
const MAX_FPS: f32 = 240.0;

/// Why a Y4M file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Y4mError {
    #[error("can't read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} is not a YUV4MPEG2 file: {reason}")]
    Format { path: String, reason: String },
}

/// All frames of a Y4M file, loaded into memory (files used as sources are short loops).
#[derive(Debug)]
pub struct Y4mClip {
    pub width: u32,
    pub height: u32,
    pub fps: f32,
    pub frames: Vec<VideoFrame>,
}

impl Y4mClip {
    /// Reads a 4:2:0 Y4M file (colour space `420`, `420jpeg`, `420paldv`, `420mpeg2`, or unspecified).
    pub fn open(path: &Path) -> Result<Y4mClip, Y4mError> {
        let name = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|source| Y4mError::Io {
            path: name.clone(),
            source,
        })?;
        Self::read(&name, BufReader::new(file))
    }

    /// Reads a clip from `reader`; `name` says where it came from in errors.
    pub fn read(name: &str, mut reader: impl BufRead) -> Result<Y4mClip, Y4mError> {
        let io = |source| Y4mError::Io {
            path: name.to_owned(),
            source,
        };
        let format = |reason: String| Y4mError::Format {
            path: name.to_owned(),
            reason,
        };
        let mut header = String::new();
        reader.read_line(&mut header).map_err(io)?;
        let mut tokens = header.split_whitespace();
        if tokens.next() != Some("YUV4MPEG2") {
            return Err(format("no YUV4MPEG2 signature".into()));
        }
        let (mut width, mut height, mut fps) = (0u32, 0u32, 30.0f32);
        for token in tokens {
            // The tag is the first character, whatever it is (a byte split could cut one).
            let mut chars = token.chars();
            let tag = chars.next().map(String::from).unwrap_or_default();
            let value = chars.as_str();
            match tag.as_str() {
                "W" => width = value.parse().map_err(|_| format(format!("bad width {value:?}")))?,
                "H" => height = value.parse().map_err(|_| format(format!("bad height {value:?}")))?,
                "F" => {
                    let (n, d) = value.split_once(':').unwrap_or((value, "1"));
                    let (n, d): (f32, f32) = (n.parse().unwrap_or(30.0), d.parse().unwrap_or(1.0));
                    let rate = n / d;
                    if rate.is_finite() && rate > 0.0 && rate <= MAX_FPS {
                        fps = rate;
                    }
                }
                "C" if !value.starts_with("420") => {
                    return Err(format(format!("colour space {value} is not 4:2:0")));
                }
                _ => {}
            }
        }
        VideoFrame::check_size(width, height).map_err(|e| format(e.to_string()))?;
        let (w, h) = (width as usize, height as usize);
        let mut frames = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).map_err(io)? == 0 {
                break;
            }
            if !line.starts_with("FRAME") {
                return Err(format(format!("expected FRAME, found {:?}", line.trim_end())));
            }
            let mut y = vec![0u8; w * h];
            let mut u = vec![0u8; w * h / 4];
            let mut v = vec![0u8; w * h / 4];
            for plane in [&mut y, &mut u, &mut v] {
                reader
                    .read_exact(plane)
                    .map_err(|_| format("the last frame is cut short".into()))?;
            }
            frames.push(
                VideoFrame::from_planes(width, height, (y, w), (u, v, w / 2)).map_err(|e| format(e.to_string()))?,
            );
        }
        if frames.is_empty() {
            return Err(format("no frames".into()));
        }
        Ok(Y4mClip {
            width,
            height,
            fps,
            frames,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{TestPattern, read_frame_code};

    #[test]
    fn a_written_clip_reads_back_frame_for_frame() {
        let dir = std::env::temp_dir().join(format!("holoroom-y4m-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("clip.y4m");
        let mut pattern = TestPattern::new(320, 180).expect("size");
        let mut bytes = b"YUV4MPEG2 W320 H180 F15:1 Ip A1:1 C420jpeg\n".to_vec();
        for n in 0..3 {
            bytes.extend_from_slice(b"FRAME\n");
            bytes.extend_from_slice(&pattern.next_frame(n).to_packed_i420());
        }
        std::fs::write(&path, &bytes).expect("write clip");
        let clip = Y4mClip::open(&path).expect("reads");
        assert_eq!(
            (clip.width, clip.height, clip.fps, clip.frames.len()),
            (320, 180, 15.0, 3)
        );
        assert_eq!(read_frame_code(&clip.frames[2]).map(|c| c.frame_number), Some(2));

        std::fs::write(&path, b"YUV4MPEG2 W320 H180 C444\nFRAME\n").expect("write");
        assert!(matches!(Y4mClip::open(&path), Err(Y4mError::Format { .. })));
        std::fs::write(&path, &bytes[..bytes.len() - 10]).expect("write");
        assert!(matches!(Y4mClip::open(&path), Err(Y4mError::Format { .. })));
        assert!(matches!(
            Y4mClip::open(&dir.join("missing.y4m")),
            Err(Y4mError::Io { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn odd_headers_are_errors_or_defaults_never_panics() {
        let frame = |header: &str| {
            let mut bytes = header.as_bytes().to_vec();
            bytes.extend_from_slice(b"\nFRAME\n");
            bytes.extend_from_slice(&[0x80; 16 * 16 * 3 / 2]);
            bytes
        };
        // A tag that is not one byte long (found by fuzzing: it used to split inside it).
        assert!(Y4mClip::read("t", &frame("YUV4MPEG2 W16 H16 \u{3f9}:EmG2")[..]).is_ok());
        let clip = Y4mClip::read("t", &frame("YUV4MPEG2 W16 H16 F1000000000:1")[..]).expect("reads");
        assert_eq!(clip.fps, 30.0, "an unbelievable rate falls back to the default");
        let clip = Y4mClip::read("t", &frame("YUV4MPEG2 W16 H16 F30000:1001")[..]).expect("reads");
        assert!((clip.fps - 29.97).abs() < 0.01);
    }
}
