//! Video frames in I420 (planar Y, U, V with 2x2-subsampled chroma), the format between capture, codec and display.

/// One I420 picture. Planes are tightly packed unless built from a decoder with strides.
#[derive(Clone, PartialEq, Eq)]
pub struct VideoFrame {
    pub width: u32,
    pub height: u32,
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
    pub y_stride: usize,
    pub uv_stride: usize,
}

impl std::fmt::Debug for VideoFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoFrame")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("y_stride", &self.y_stride)
            .field("uv_stride", &self.uv_stride)
            .finish_non_exhaustive()
    }
}

/// Why a frame could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame size {width}x{height} is not usable: both must be even and at least 16")]
    BadSize { width: u32, height: u32 },
    #[error("plane {plane} has {len} bytes; {needed} are needed for {width}x{height} with stride {stride}")]
    ShortPlane {
        plane: char,
        len: usize,
        needed: usize,
        width: u32,
        height: u32,
        stride: usize,
    },
}

impl VideoFrame {
    /// Checks a size for I420: even, at least 16x16, at most 4096x4096.
    pub fn check_size(width: u32, height: u32) -> Result<(), FrameError> {
        if width < 16 || height < 16 || width % 2 == 1 || height % 2 == 1 || width > 4096 || height > 4096 {
            return Err(FrameError::BadSize { width, height });
        }
        Ok(())
    }

    /// A black frame (limited range: Y 16, U and V 128).
    pub fn black(width: u32, height: u32) -> Result<VideoFrame, FrameError> {
        Self::check_size(width, height)?;
        let (w, h) = (width as usize, height as usize);
        Ok(VideoFrame {
            width,
            height,
            y: vec![16; w * h],
            u: vec![128; w / 2 * (h / 2)],
            v: vec![128; w / 2 * (h / 2)],
            y_stride: w,
            uv_stride: w / 2,
        })
    }

    /// A frame from planes with strides, checked for length.
    pub fn from_planes(
        width: u32,
        height: u32,
        (y, y_stride): (Vec<u8>, usize),
        (u, v, uv_stride): (Vec<u8>, Vec<u8>, usize),
    ) -> Result<VideoFrame, FrameError> {
        Self::check_size(width, height)?;
        let (w, h) = (width as usize, height as usize);
        let check = |plane, len: usize, stride: usize, pw: usize, ph: usize| {
            let needed = stride * (ph - 1) + pw;
            if stride < pw || len < needed {
                return Err(FrameError::ShortPlane {
                    plane,
                    len,
                    needed,
                    width,
                    height,
                    stride,
                });
            }
            Ok(())
        };
        check('Y', y.len(), y_stride, w, h)?;
        check('U', u.len(), uv_stride, w / 2, h / 2)?;
        check('V', v.len(), uv_stride, w / 2, h / 2)?;
        Ok(VideoFrame {
            width,
            height,
            y,
            u,
            v,
            y_stride,
            uv_stride,
        })
    }

    /// Luma at (x, y).
    pub fn luma(&self, x: usize, y: usize) -> u8 {
        self.y[y * self.y_stride + x]
    }

    /// The picture at half the width and height (each output pixel the mean of a 2x2 block),
    /// rounded down to even sizes; None when that would be below the smallest usable size.
    pub fn half(&self) -> Option<VideoFrame> {
        let (width, height) = ((self.width / 2) & !1, (self.height / 2) & !1);
        let mut out = VideoFrame::black(width, height).ok()?;
        let shrink = |src: &[u8], stride: usize, dst: &mut [u8], w: usize, h: usize| {
            for y in 0..h {
                let (top, bottom) = (&src[2 * y * stride..], &src[(2 * y + 1) * stride..]);
                let row = &mut dst[y * w..(y + 1) * w];
                for (x, px) in row.iter_mut().enumerate() {
                    let sum = u16::from(top[2 * x])
                        + u16::from(top[2 * x + 1])
                        + u16::from(bottom[2 * x])
                        + u16::from(bottom[2 * x + 1]);
                    *px = ((sum + 2) / 4) as u8;
                }
            }
        };
        let (w, h) = (width as usize, height as usize);
        shrink(&self.y, self.y_stride, &mut out.y, w, h);
        shrink(&self.u, self.uv_stride, &mut out.u, w / 2, h / 2);
        shrink(&self.v, self.uv_stride, &mut out.v, w / 2, h / 2);
        Some(out)
    }

    /// Copies the planes into tightly packed I420 (`width * height * 3 / 2` bytes).
    pub fn to_packed_i420(&self) -> Vec<u8> {
        let (w, h) = (self.width as usize, self.height as usize);
        let mut out = Vec::with_capacity(w * h * 3 / 2);
        for row in 0..h {
            out.extend_from_slice(&self.y[row * self.y_stride..row * self.y_stride + w]);
        }
        for plane in [&self.u, &self.v] {
            for row in 0..h / 2 {
                out.extend_from_slice(&plane[row * self.uv_stride..row * self.uv_stride + w / 2]);
            }
        }
        out
    }
}

/// How a frame's YUV values relate to RGB (limited range). Where a stream does not say, the
/// convention of cameras and encoders applies, and Holoroom follows it on both ends: BT.709
/// for HD (720 lines or 1280 columns and up), BT.601 below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorMatrix {
    Bt601,
    Bt709,
}

impl ColorMatrix {
    /// The matrix for a frame of this size.
    pub fn for_size(width: u32, height: u32) -> ColorMatrix {
        if height >= 720 || width >= 1280 {
            ColorMatrix::Bt709
        } else {
            ColorMatrix::Bt601
        }
    }

    /// RGB (0..=255) to limited-range Y, U and V, each row the three weights of R, G and B
    /// in 1/256ths (Y gets 16 added, U and V 128).
    pub fn forward(self) -> [[i32; 3]; 3] {
        match self {
            ColorMatrix::Bt601 => [[66, 129, 25], [-38, -74, 112], [112, -94, -18]],
            ColorMatrix::Bt709 => [[47, 157, 16], [-26, -87, 113], [112, -102, -10]],
        }
    }

    /// Limited-range YUV back to RGB: with `y` in 0..=1 and `u`, `v` in -0.5..=0.5,
    /// R = y + a·v, G = y - b·u - c·v, B = y + d·u for `[a, b, c, d]`.
    pub fn inverse(self) -> [f32; 4] {
        match self {
            ColorMatrix::Bt601 => [1.402, 0.3441, 0.7141, 1.772],
            ColorMatrix::Bt709 => [1.5748, 0.1873, 0.4681, 1.8556],
        }
    }

    /// Limited-range Y, U, V bytes to RGB bytes.
    pub fn to_rgb(self, y: u8, u: u8, v: u8) -> [u8; 3] {
        let [a, b, c, d] = self.inverse();
        let y = (f32::from(y) - 16.0) / 219.0;
        let (u, v) = ((f32::from(u) - 128.0) / 224.0, (f32::from(v) - 128.0) / 224.0);
        [y + a * v, y - b * u - c * v, y + d * u].map(|x| (x * 255.0).round().clamp(0.0, 255.0) as u8)
    }
}
