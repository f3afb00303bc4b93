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
