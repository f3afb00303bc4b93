//! H.264 through OpenH264: an encoder set up for calls and a decoder to I420 frames.
//!
//! Call settings, not OpenH264's defaults: bitrate rate control at a set bitrate, no frame
//! skipping, real-time camera usage, Constrained Baseline, and a keyframe whenever asked
//! (a new subscriber or a PLI) plus one every few seconds as a safety net.

use openh264::OpenH264API;
use openh264::decoder::{Decoder, DecoderConfig};
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Profile, RateControlMode, UsageType,
};
use openh264::formats::YUVSource;

use crate::media::VideoFrame;

/// Why the codec failed.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("can't start the H.264 encoder: {0}")]
    EncoderInit(String),
    #[error("can't start the H.264 decoder: {0}")]
    DecoderInit(String),
    #[error("H.264 encoding failed: {0}")]
    Encode(String),
    #[error("H.264 decoding failed: {0}")]
    Decode(String),
    #[error("the decoder produced a picture of unusable size: {0}")]
    Frame(#[from] crate::media::FrameError),
}

/// Encoder settings.
#[derive(Debug, Clone, Copy)]
pub struct EncoderSettings {
    pub bitrate_bps: u32,
    pub fps: f32,
    /// A keyframe at least this often, in frames (0 for only on request).
    pub keyframe_interval: u32,
}

impl EncoderSettings {
    /// The OpenH264 configuration for these settings.
    pub fn openh264_config(&self) -> EncoderConfig {
        EncoderConfig::new()
            .bitrate(BitRate::from_bps(self.bitrate_bps))
            .max_frame_rate(FrameRate::from_hz(self.fps))
            .rate_control_mode(RateControlMode::Bitrate)
            .skip_frames(false)
            .usage_type(UsageType::CameraVideoRealTime)
            .profile(Profile::Baseline)
            .intra_frame_period(IntraFramePeriod::from_num_frames(self.keyframe_interval))
            .num_threads(1)
    }

    /// Sensible call settings for a frame size: about 0.1 bit per pixel at 30 fps.
    pub fn for_size(width: u32, height: u32, fps: f32) -> EncoderSettings {
        EncoderSettings {
            bitrate_bps: crate::stream::video_bitrate(width, height, fps),
            fps,
            keyframe_interval: (fps * 4.0) as u32,
        }
    }
}

/// Encodes `frames` pictures of the busy test pattern at `width`x`height` and `fps` into a
/// simulcast clip (full, half and quarter size), each layer starting with a keyframe.
pub fn encode_clip(width: u32, height: u32, fps: f32, frames: usize) -> Result<crate::EncodedClip, CodecError> {
    let mut pattern = crate::media::TestPattern::new(width, height)?.with_noise();
    let mut encoders =
        [4u32, 2, 1].map(|scale| H264Encoder::new(EncoderSettings::for_size(width / scale, height / scale, fps)));
    let mut layers: [Vec<Vec<u8>>; 3] = Default::default();
    for n in 0..frames {
        let full = pattern.next_frame(n as u64);
        let half = full.half();
        let quarter = half.as_ref().and_then(VideoFrame::half);
        for (layer, picture) in [quarter.as_ref(), half.as_ref(), Some(&full)].into_iter().enumerate() {
            let (Some(picture), Ok(encoder)) = (picture, encoders[layer].as_mut()) else {
                continue;
            };
            if let Some(encoded) = encoder.encode(picture)? {
                layers[layer].push(encoded.data);
            }
        }
    }
    for encoder in encoders {
        encoder?;
    }
    Ok(crate::EncodedClip::new(width, height, fps, layers))
}

/// One encoded picture: Annex B NAL units.
#[derive(Debug, Clone)]
pub struct EncodedFrame {
    pub data: Vec<u8>,
    pub keyframe: bool,
}

/// Lends a [`VideoFrame`] to OpenH264.
struct I420<'a>(&'a VideoFrame);

impl YUVSource for I420<'_> {
    fn dimensions(&self) -> (usize, usize) {
        (self.0.width as usize, self.0.height as usize)
    }

    fn strides(&self) -> (usize, usize, usize) {
        (self.0.y_stride, self.0.uv_stride, self.0.uv_stride)
    }

    fn y(&self) -> &[u8] {
        &self.0.y
    }

    fn u(&self) -> &[u8] {
        &self.0.u
    }

    fn v(&self) -> &[u8] {
        &self.0.v
    }
}

pub struct H264Encoder {
    encoder: Encoder,
    keyframe_wanted: bool,
    buffer: Vec<u8>,
}

impl std::fmt::Debug for H264Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H264Encoder").finish_non_exhaustive()
    }
}

impl H264Encoder {
    pub fn new(settings: EncoderSettings) -> Result<H264Encoder, CodecError> {
        let config = settings.openh264_config();
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| CodecError::EncoderInit(e.to_string()))?;
        Ok(H264Encoder {
            encoder,
            keyframe_wanted: true,
            buffer: Vec::new(),
        })
    }

    /// The next frame will be a keyframe.
    pub fn request_keyframe(&mut self) {
        self.keyframe_wanted = true;
    }

    /// Encodes one frame. Returns None when the encoder produced nothing for it.
    pub fn encode(&mut self, frame: &VideoFrame) -> Result<Option<EncodedFrame>, CodecError> {
        if std::mem::take(&mut self.keyframe_wanted) {
            self.encoder.force_intra_frame();
        }
        let stream = self
            .encoder
            .encode(&I420(frame))
            .map_err(|e| CodecError::Encode(e.to_string()))?;
        let keyframe = matches!(stream.frame_type(), FrameType::IDR | FrameType::I);
        if matches!(stream.frame_type(), FrameType::Skip | FrameType::Invalid) {
            return Ok(None);
        }
        self.buffer.clear();
        stream.write_vec(&mut self.buffer);
        if self.buffer.is_empty() {
            return Ok(None);
        }
        Ok(Some(EncodedFrame {
            data: self.buffer.clone(),
            keyframe,
        }))
    }
}

pub struct H264Decoder {
    decoder: Decoder,
}

impl std::fmt::Debug for H264Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H264Decoder").finish_non_exhaustive()
    }
}

impl H264Decoder {
    pub fn new() -> Result<H264Decoder, CodecError> {
        let decoder = Decoder::with_api_config(OpenH264API::from_source(), DecoderConfig::new())
            .map_err(|e| CodecError::DecoderInit(e.to_string()))?;
        Ok(H264Decoder { decoder })
    }

    /// Decodes one access unit (Annex B). Returns None while the decoder has no picture yet
    /// (for example before the first keyframe).
    pub fn decode(&mut self, access_unit: &[u8]) -> Result<Option<VideoFrame>, CodecError> {
        let Some(picture) = self
            .decoder
            .decode(access_unit)
            .map_err(|e| CodecError::Decode(e.to_string()))?
        else {
            return Ok(None);
        };
        let (width, height) = picture.dimensions();
        let (y_stride, uv_stride, _) = picture.strides();
        let frame = VideoFrame::from_planes(
            width as u32,
            height as u32,
            (picture.y()[..y_stride * height].to_vec(), y_stride),
            (
                picture.u()[..uv_stride * (height / 2)].to_vec(),
                picture.v()[..uv_stride * (height / 2)].to_vec(),
                uv_stride,
            ),
        )?;
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{TestPattern, read_frame_code};

    #[test]
    fn frame_codes_survive_h264_at_320x180() {
        let mut pattern = TestPattern::new(320, 180).expect("usable size");
        let mut encoder = H264Encoder::new(EncoderSettings::for_size(320, 180, 15.0)).expect("encoder");
        let mut decoder = H264Decoder::new().expect("decoder");
        let mut read = Vec::new();
        for n in 0..30u64 {
            let frame = pattern.next_frame(1_000_000 + n * 66_666);
            let encoded = encoder.encode(&frame).expect("encodes").expect("not skipped");
            assert_eq!(encoded.keyframe, n == 0, "frame {n}");
            if let Some(decoded) = decoder.decode(&encoded.data).expect("decodes") {
                assert_eq!((decoded.width, decoded.height), (320, 180));
                read.push(read_frame_code(&decoded).map(|c| c.frame_number));
            }
        }
        let expected: Vec<Option<u32>> = (0..30).map(Some).collect();
        assert_eq!(read, expected);
    }

    #[test]
    fn a_keyframe_comes_when_asked() {
        let mut pattern = TestPattern::new(320, 180).expect("usable size");
        let mut encoder = H264Encoder::new(EncoderSettings::for_size(320, 180, 15.0)).expect("encoder");
        for _ in 0..5 {
            encoder.encode(&pattern.next_frame(0)).expect("encodes");
        }
        encoder.request_keyframe();
        let key = encoder
            .encode(&pattern.next_frame(0))
            .expect("encodes")
            .expect("a frame");
        assert!(key.keyframe);
        // A late decoder starts from it.
        let mut late = H264Decoder::new().expect("decoder");
        let decoded = late
            .decode(&key.data)
            .expect("decodes")
            .expect("a picture from a keyframe");
        assert_eq!(read_frame_code(&decoded).map(|c| c.frame_number), Some(5));
    }

    #[test]
    fn garbage_is_an_error_or_nothing_never_a_panic() {
        let mut decoder = H264Decoder::new().expect("decoder");
        let garbage: Vec<u8> = (0..2000u32).map(|i| (i * 7919 % 251) as u8).collect();
        let mut annex_b = vec![0, 0, 0, 1, 0x65];
        annex_b.extend_from_slice(&garbage);
        let _ = decoder.decode(&annex_b);
        let _ = decoder.decode(&[]);
    }
}
