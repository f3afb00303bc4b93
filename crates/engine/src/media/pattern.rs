//! A moving test picture with a machine-readable frame code, and the reader that gets the code back.
//!
//! The code is 100 bits drawn as black or white luma blocks in a 25 x 4 grid near the
//! top-left corner, on a grey quiet zone: a 4-bit marker, the frame number (32 bits), the
//! low 48 bits of the capture time in microseconds since the Unix epoch, and a CRC-16 of
//! those 84 bits. Blocks are `width / 40` pixels (at least 8), aligned to the codec's 8x8
//! transform blocks, so the code survives H.264 at 320x180 and up.

use super::frame::{FrameError, VideoFrame};

const MARKER: u8 = 0b1011;
const COLUMNS: usize = 25;
const ROWS: usize = 4;
const BITS: usize = COLUMNS * ROWS;
/// Limited-range luma for a 0 bit, a 1 bit and the quiet zone.
const BLACK: u8 = 16;
const WHITE: u8 = 235;
const QUIET: u8 = 126;

/// What a frame code says about its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameCode {
    pub frame_number: u32,
    /// Capture time, microseconds since the Unix epoch, low 48 bits.
    pub capture_micros: u64,
}

impl FrameCode {
    pub const TIME_MASK: u64 = (1 << 48) - 1;

    /// Microseconds from capture to `now_micros` (full Unix microseconds), correct across the 48-bit wrap.
    pub fn age_micros(&self, now_micros: u64) -> u64 {
        (now_micros & Self::TIME_MASK).wrapping_sub(self.capture_micros) & Self::TIME_MASK
    }

    fn bits(&self) -> [bool; BITS] {
        let mut payload = Vec::with_capacity(84);
        push_bits(&mut payload, u64::from(MARKER), 4);
        push_bits(&mut payload, u64::from(self.frame_number), 32);
        push_bits(&mut payload, self.capture_micros & Self::TIME_MASK, 48);
        let crc = crc16(&payload);
        push_bits(&mut payload, u64::from(crc), 16);
        let mut bits = [false; BITS];
        bits.copy_from_slice(&payload);
        bits
    }

    fn from_bits(bits: &[bool; BITS]) -> Option<FrameCode> {
        let marker = read_bits(&bits[0..4]) as u8;
        let crc = read_bits(&bits[84..100]) as u16;
        if marker != MARKER || crc != crc16(&bits[..84]) {
            return None;
        }
        Some(FrameCode {
            frame_number: read_bits(&bits[4..36]) as u32,
            capture_micros: read_bits(&bits[36..84]),
        })
    }
}

fn push_bits(out: &mut Vec<bool>, value: u64, count: u32) {
    for i in (0..count).rev() {
        out.push((value >> i) & 1 == 1);
    }
}

fn read_bits(bits: &[bool]) -> u64 {
    bits.iter().fold(0, |acc, &b| (acc << 1) | u64::from(b))
}

/// CRC-16/CCITT-FALSE over a bit string.
fn crc16(bits: &[bool]) -> u16 {
    let mut crc: u16 = 0xffff;
    for &bit in bits {
        let top = (crc >> 15) & 1 == 1;
        crc <<= 1;
        if top != bit {
            crc ^= 0x1021;
        }
    }
    crc
}

/// Where the code sits in a frame of a given size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeLayout {
    /// Side of one bit's block, in pixels.
    pub block: usize,
    /// Top-left corner of the first block.
    pub left: usize,
    pub top: usize,
}

impl CodeLayout {
    pub fn for_size(width: u32, height: u32) -> Option<CodeLayout> {
        let block = ((width as usize / 40).max(8) / 8) * 8;
        let layout = CodeLayout {
            block,
            left: block,
            top: block,
        };
        let (right, bottom) = (layout.left + (COLUMNS + 1) * block, layout.top + (ROWS + 1) * block);
        (right <= width as usize && bottom <= height as usize).then_some(layout)
    }

    /// The layout of a picture drawn with this one and scaled down `scale` times; None when
    /// its blocks would be too small to read (under 4 pixels).
    fn scaled_down(self, scale: usize) -> Option<CodeLayout> {
        (self.block / scale >= 4).then_some(CodeLayout {
            block: self.block / scale,
            left: self.left / scale,
            top: self.top / scale,
        })
    }

    fn block_origin(&self, bit: usize) -> (usize, usize) {
        (
            self.left + (bit % COLUMNS) * self.block,
            self.top + (bit / COLUMNS) * self.block,
        )
    }
}

/// Draws moving test frames: scrolling colour bars, a sweeping square, and the frame code.
#[derive(Debug, Clone)]
pub struct TestPattern {
    width: u32,
    height: u32,
    layout: CodeLayout,
    frame_number: u32,
    /// Draw a band of noise that changes every frame.
    noise: bool,
}

impl TestPattern {
    /// A pattern of the given size; the frame code needs at least 272x48.
    pub fn new(width: u32, height: u32) -> Result<TestPattern, FrameError> {
        VideoFrame::check_size(width, height)?;
        let layout = CodeLayout::for_size(width, height).ok_or(FrameError::BadSize { width, height })?;
        Ok(TestPattern {
            width,
            height,
            layout,
            frame_number: 0,
            noise: false,
        })
    }

    /// With a band of noise across the middle that changes every frame, as a camera's sensor
    /// noise and detail do: the picture then costs an encoder about as many bits as a camera's.
    pub fn with_noise(self) -> TestPattern {
        TestPattern { noise: true, ..self }
    }

    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// The next frame, stamped with `capture_micros` (Unix microseconds).
    pub fn next_frame(&mut self, capture_micros: u64) -> VideoFrame {
        let code = FrameCode {
            frame_number: self.frame_number,
            capture_micros: capture_micros & FrameCode::TIME_MASK,
        };
        let mut frame = VideoFrame::black(self.width, self.height).expect("size checked in new");
        self.draw(&mut frame, code);
        self.frame_number = self.frame_number.wrapping_add(1);
        frame
    }

    fn draw(&self, frame: &mut VideoFrame, code: FrameCode) {
        let (w, h) = (self.width as usize, self.height as usize);
        let shift = (code.frame_number as usize * 4) % w;
        // Eight bars, BT.601 limited-range YUV, scrolling left to right.
        const BARS: [(u8, u8, u8); 8] = [
            (180, 128, 128),
            (162, 44, 142),
            (131, 156, 44),
            (112, 72, 58),
            (84, 184, 198),
            (65, 100, 212),
            (35, 212, 114),
            (16, 128, 128),
        ];
        let bar_of = |x: usize| BARS[((x + w - shift) % w) * BARS.len() / w];
        for y in 0..h {
            let row = &mut frame.y[y * frame.y_stride..y * frame.y_stride + w];
            for (x, px) in row.iter_mut().enumerate() {
                *px = bar_of(x).0;
            }
        }
        for y in 0..h / 2 {
            for x in 0..w / 2 {
                let (_, u, v) = bar_of(x * 2);
                frame.u[y * frame.uv_stride + x] = u;
                frame.v[y * frame.uv_stride + x] = v;
            }
        }
        if self.noise {
            // Luma noise over the bars, from a generator seeded by the frame.
            let mut state = code.frame_number.wrapping_mul(0x9e37_79b9) | 1;
            for y in h * 3 / 8..h * 5 / 8 {
                for px in &mut frame.y[y * frame.y_stride..y * frame.y_stride + w] {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    *px = px.saturating_add((state & 63) as u8).saturating_sub(32).max(16);
                }
            }
        }
        // A white square sweeping along the bottom half.
        let side = (h / 6).max(8);
        let sx = (code.frame_number as usize * 6) % (w - side);
        let sy = h - side - h / 10;
        for y in sy..sy + side {
            frame.y[y * frame.y_stride + sx..y * frame.y_stride + sx + side].fill(WHITE);
        }
        // The code on its quiet zone.
        let b = self.layout.block;
        let (qx, qy) = (self.layout.left - b / 2, self.layout.top - b / 2);
        let (qw, qh) = (COLUMNS * b + b, ROWS * b + b);
        for y in qy..qy + qh {
            frame.y[y * frame.y_stride + qx..y * frame.y_stride + qx + qw].fill(QUIET);
        }
        for y in qy / 2..(qy + qh) / 2 {
            frame.u[y * frame.uv_stride + qx / 2..y * frame.uv_stride + (qx + qw) / 2].fill(128);
            frame.v[y * frame.uv_stride + qx / 2..y * frame.uv_stride + (qx + qw) / 2].fill(128);
        }
        for (bit, on) in code.bits().iter().enumerate() {
            let (bx, by) = self.layout.block_origin(bit);
            let value = if *on { WHITE } else { BLACK };
            for y in by..by + b {
                frame.y[y * frame.y_stride + bx..y * frame.y_stride + bx + b].fill(value);
            }
        }
    }
}

/// Reads the frame code from a decoded frame, if it has a valid one: drawn at this size, or
/// at twice or four times it and scaled down since (a lower simulcast layer).
pub fn read_frame_code(frame: &VideoFrame) -> Option<FrameCode> {
    [1, 2, 4].into_iter().find_map(|scale| {
        let layout = CodeLayout::for_size(frame.width * scale, frame.height * scale)?.scaled_down(scale as usize)?;
        read_code_with(|x, y| frame.luma(x, y), layout)
    })
}

/// Reads a frame code through a luma sampler, for pictures that are not [`VideoFrame`]s (screenshots).
pub fn read_code_with(luma: impl Fn(usize, usize) -> u8, layout: CodeLayout) -> Option<FrameCode> {
    let b = layout.block;
    let inner = (b / 4, b - b / 4);
    let mut bits = [false; BITS];
    for (bit, out) in bits.iter_mut().enumerate() {
        let (bx, by) = layout.block_origin(bit);
        let mut sum = 0u32;
        let mut count = 0u32;
        for y in by + inner.0..by + inner.1 {
            for x in bx + inner.0..bx + inner.1 {
                sum += u32::from(luma(x, y));
                count += 1;
            }
        }
        *out = sum / count.max(1) > u32::from(QUIET);
    }
    FrameCode::from_bits(&bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_the_pixels() {
        for (w, h) in [(320, 180), (640, 360), (1280, 720)] {
            let mut pattern = TestPattern::new(w, h).expect("usable size");
            for n in 0..3u64 {
                let frame = pattern.next_frame(1_700_000_000_000_000 + n * 33_333);
                let code = read_frame_code(&frame).expect("code reads back");
                assert_eq!(code.frame_number, n as u32);
                assert_eq!(
                    code.capture_micros,
                    (1_700_000_000_000_000 + n * 33_333) & FrameCode::TIME_MASK
                );
            }
        }
    }

    #[test]
    fn a_flipped_bit_fails_the_checksum() {
        let mut pattern = TestPattern::new(320, 180).expect("usable size");
        let mut frame = pattern.next_frame(42);
        let layout = CodeLayout::for_size(320, 180).expect("fits");
        let (bx, by) = layout.block_origin(50);
        let flipped = if frame.luma(bx + 2, by + 2) > QUIET {
            BLACK
        } else {
            WHITE
        };
        for y in by..by + layout.block {
            for x in bx..bx + layout.block {
                frame.y[y * frame.y_stride + x] = flipped;
            }
        }
        assert_eq!(read_frame_code(&frame), None);
    }

    #[test]
    fn frames_without_a_code_read_as_none() {
        let frame = VideoFrame::black(320, 180).expect("valid");
        assert_eq!(read_frame_code(&frame), None);
    }

    #[test]
    fn ages_wrap_around_48_bits() {
        let code = FrameCode {
            frame_number: 0,
            capture_micros: FrameCode::TIME_MASK - 10,
        };
        assert_eq!(code.age_micros((1 << 48) + 5), 16);
    }

    #[test]
    fn too_small_for_a_code_is_an_error() {
        assert!(TestPattern::new(64, 48).is_err());
        assert!(TestPattern::new(321, 180).is_err());
    }
}
