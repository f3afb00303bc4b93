//! Pixel formats cameras deliver, converted to I420: packed YUYV (4:2:2), semi-planar NV12
//! (4:2:0) and packed RGB (what a decoded MJPEG frame becomes, and a canvas's pixels) with
//! the frame size's colour matrix ([`ColorMatrix::for_size`]), limited range.

use super::{ColorMatrix, FrameError, VideoFrame};

fn short(plane: char, len: usize, needed: usize, width: u32, height: u32) -> FrameError {
    FrameError::ShortPlane {
        plane,
        len,
        needed,
        width,
        height,
        stride: width as usize,
    }
}

/// YUYV (`Y0 U Y1 V` per two pixels) to I420: chroma of each row pair averaged.
pub fn yuyv_to_i420(width: u32, height: u32, data: &[u8]) -> Result<VideoFrame, FrameError> {
    VideoFrame::check_size(width, height)?;
    let (w, h) = (width as usize, height as usize);
    let needed = w * h * 2;
    if data.len() < needed {
        return Err(short('y', data.len(), needed, width, height));
    }
    let mut y = Vec::with_capacity(w * h);
    let mut u = Vec::with_capacity(w * h / 4);
    let mut v = Vec::with_capacity(w * h / 4);
    for row in data[..needed].chunks_exact(w * 2) {
        y.extend(row.iter().step_by(2));
    }
    for pair in data[..needed].chunks_exact(w * 4) {
        let (top, bottom) = pair.split_at(w * 2);
        for (a, b) in top.chunks_exact(4).zip(bottom.chunks_exact(4)) {
            u.push((u16::from(a[1]) + u16::from(b[1])).div_ceil(2) as u8);
            v.push((u16::from(a[3]) + u16::from(b[3])).div_ceil(2) as u8);
        }
    }
    VideoFrame::from_planes(width, height, (y, w), (u, v, w / 2))
}

/// NV12 (a Y plane, then interleaved `U V` at quarter resolution) to I420.
pub fn nv12_to_i420(width: u32, height: u32, data: &[u8]) -> Result<VideoFrame, FrameError> {
    VideoFrame::check_size(width, height)?;
    let (w, h) = (width as usize, height as usize);
    let needed = w * h * 3 / 2;
    if data.len() < needed {
        return Err(short('y', data.len(), needed, width, height));
    }
    let (luma, chroma) = data[..needed].split_at(w * h);
    let u = chroma.iter().step_by(2).copied().collect();
    let v = chroma.iter().skip(1).step_by(2).copied().collect();
    VideoFrame::from_planes(width, height, (luma.to_vec(), w), (u, v, w / 2))
}

/// Packed RGB888 to I420, limited range, BT.601 or BT.709 by size; chroma from each 2x2
/// block's average.
pub fn rgb_to_i420(width: u32, height: u32, data: &[u8]) -> Result<VideoFrame, FrameError> {
    packed_to_i420::<3>(width, height, data)
}

/// Packed RGBA8888 (a canvas's pixels) to I420; alpha is ignored.
pub fn rgba_to_i420(width: u32, height: u32, data: &[u8]) -> Result<VideoFrame, FrameError> {
    packed_to_i420::<4>(width, height, data)
}

fn packed_to_i420<const BYTES: usize>(width: u32, height: u32, data: &[u8]) -> Result<VideoFrame, FrameError> {
    VideoFrame::check_size(width, height)?;
    let (w, h) = (width as usize, height as usize);
    let needed = w * h * BYTES;
    if data.len() < needed {
        return Err(short('y', data.len(), needed, width, height));
    }
    let [ky, ku, kv] = ColorMatrix::for_size(width, height).forward();
    let weigh = |k: [i32; 3], r: i32, g: i32, b: i32, offset: i32| {
        (((k[0] * r + k[1] * g + k[2] * b + 128) >> 8) + offset).clamp(0, 255) as u8
    };
    let luma = |r: i32, g: i32, b: i32| weigh(ky, r, g, b, 16);
    let y = data[..needed]
        .chunks_exact(BYTES)
        .map(|p| luma(i32::from(p[0]), i32::from(p[1]), i32::from(p[2])))
        .collect();
    let mut u = Vec::with_capacity(w * h / 4);
    let mut v = Vec::with_capacity(w * h / 4);
    for row in (0..h).step_by(2) {
        for col in (0..w).step_by(2) {
            let (mut r, mut g, mut b) = (0i32, 0i32, 0i32);
            for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                let at = ((row + dy) * w + col + dx) * BYTES;
                r += i32::from(data[at]);
                g += i32::from(data[at + 1]);
                b += i32::from(data[at + 2]);
            }
            let (r, g, b) = ((r + 2) / 4, (g + 2) / 4, (b + 2) / 4);
            u.push(weigh(ku, r, g, b, 128));
            v.push(weigh(kv, r, g, b, 128));
        }
    }
    VideoFrame::from_planes(width, height, (y, w), (u, v, w / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuyv_keeps_luma_and_averages_chroma_over_row_pairs() {
        // 16x16: every pixel pair `Y=row*2+col, U=100 (top) / 110 (bottom), V=200`.
        let (w, h) = (16u32, 16u32);
        let mut data = Vec::new();
        for row in 0..h {
            for pair in 0..w / 2 {
                let u = if row % 2 == 0 { 100 } else { 110 };
                data.extend([(row * 2 + pair * 2) as u8, u, (row * 2 + pair * 2 + 1) as u8, 200]);
            }
        }
        let frame = yuyv_to_i420(w, h, &data).expect("converts");
        assert_eq!(frame.y[0..3], [0, 1, 2]);
        assert_eq!(frame.y[16], 2, "row 1 starts at 2");
        assert!(frame.u.iter().all(|&u| u == 105));
        assert!(frame.v.iter().all(|&v| v == 200));
        assert!(yuyv_to_i420(w, h, &data[..100]).is_err(), "short data is an error");
    }

    #[test]
    fn nv12_splits_the_interleaved_chroma() {
        let (w, h) = (16u32, 16u32);
        let mut data = vec![50u8; 256];
        for _ in 0..64 {
            data.extend([90u8, 170]);
        }
        let frame = nv12_to_i420(w, h, &data).expect("converts");
        assert!(frame.y.iter().all(|&y| y == 50));
        assert!(frame.u.iter().all(|&u| u == 90) && frame.v.iter().all(|&v| v == 170));
        // A padded driver buffer is fine; a short one is not.
        data.extend([0; 64]);
        assert!(nv12_to_i420(w, h, &data).is_ok());
        assert!(nv12_to_i420(w, h, &data[..300]).is_err());
    }

    #[test]
    fn rgb_primaries_land_on_bt601_limited_range() {
        let (w, h) = (16u32, 16u32);
        let solid = |rgb: [u8; 3]| rgb_to_i420(w, h, &rgb.repeat(256)).expect("converts");
        let white = solid([255, 255, 255]);
        assert_eq!((white.y[0], white.u[0], white.v[0]), (235, 128, 128));
        let black = solid([0, 0, 0]);
        assert_eq!((black.y[0], black.u[0], black.v[0]), (16, 128, 128));
        let red = solid([255, 0, 0]);
        assert_eq!((red.y[0], red.u[0], red.v[0]), (82, 90, 240));
        let red_rgba = rgba_to_i420(w, h, &[255, 0, 0, 255].repeat(256)).expect("converts");
        assert_eq!(red_rgba, red, "alpha is ignored");
    }

    #[test]
    fn hd_frames_use_bt709_and_come_back_to_their_colours() {
        let (w, h) = (1280u32, 720u32);
        let red = rgb_to_i420(w, h, &[255, 0, 0].repeat((w * h) as usize)).expect("converts");
        // BT.709 red: Y 63, U 102, V 240 (BT.601 would give 82, 90, 240).
        assert_eq!((red.y[0], red.u[0], red.v[0]), (63, 102, 240));
        for (size, rgb) in [
            ((16, 16), [200u8, 120, 40]),
            ((1280, 720), [200, 120, 40]),
            ((640, 360), [30, 90, 220]),
        ] {
            let frame = rgb_to_i420(size.0, size.1, &rgb.repeat((size.0 * size.1) as usize)).expect("converts");
            let back = ColorMatrix::for_size(size.0, size.1).to_rgb(frame.y[0], frame.u[0], frame.v[0]);
            for (was, is) in rgb.iter().zip(back) {
                assert!(was.abs_diff(is) <= 3, "{size:?}: {rgb:?} came back as {back:?}");
            }
        }
    }
}
