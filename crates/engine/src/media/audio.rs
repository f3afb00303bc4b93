//! Received audio: a bounded buffer of mono 48 kHz samples per played stream. The newest
//! audio wins: when the reader falls behind by more than the capacity, the oldest samples go.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::SAMPLE_RATE;

#[derive(Debug)]
struct Inner {
    samples: VecDeque<f32>,
    capacity: usize,
    received: u64,
    dropped: u64,
}

/// One stream's decoded audio. Cheap to clone; clones share the buffer.
#[derive(Debug, Clone)]
pub struct AudioBuffer {
    inner: Arc<Mutex<Inner>>,
}

impl AudioBuffer {
    /// Whether `other` is a clone of this buffer (the same stream's audio).
    pub fn same_as(&self, other: &AudioBuffer) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Default for AudioBuffer {
    fn default() -> Self {
        Self::with_capacity(SAMPLE_RATE as usize)
    }
}

impl AudioBuffer {
    /// A buffer holding at most `capacity` samples (one second by default).
    pub fn with_capacity(capacity: usize) -> AudioBuffer {
        AudioBuffer {
            inner: Arc::new(Mutex::new(Inner {
                samples: VecDeque::with_capacity(capacity),
                capacity,
                received: 0,
                dropped: 0,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends decoded samples, dropping the oldest beyond capacity.
    pub fn push(&self, samples: &[f32]) {
        let mut inner = self.lock();
        inner.received += samples.len() as u64;
        inner.samples.extend(samples.iter().copied());
        let over = inner.samples.len().saturating_sub(inner.capacity);
        if over > 0 {
            inner.samples.drain(..over);
            inner.dropped += over as u64;
        }
    }

    /// Takes up to `max` samples from the front.
    pub fn take(&self, max: usize) -> Vec<f32> {
        let mut inner = self.lock();
        let n = max.min(inner.samples.len());
        inner.samples.drain(..n).collect()
    }

    /// Appends up to `max` samples from the front to `out`, without allocating.
    pub fn take_into(&self, max: usize, out: &mut Vec<f32>) {
        let mut inner = self.lock();
        let n = max.min(inner.samples.len());
        out.extend(inner.samples.drain(..n));
    }

    /// Drops up to `n` of the oldest samples (a reader catching up).
    pub fn skip(&self, n: usize) {
        let mut inner = self.lock();
        let n = n.min(inner.samples.len());
        inner.samples.drain(..n);
        inner.dropped += n as u64;
    }

    /// Samples waiting to be read.
    pub fn len(&self) -> usize {
        self.lock().samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Samples received in all.
    pub fn received(&self) -> u64 {
        self.lock().received
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_drops_the_oldest() {
        let buffer = AudioBuffer::with_capacity(4);
        buffer.push(&[1.0, 2.0, 3.0]);
        buffer.push(&[4.0, 5.0, 6.0]);
        assert_eq!(buffer.take(10), vec![3.0, 4.0, 5.0, 6.0]);
        assert_eq!(buffer.received(), 6);
        assert!(buffer.is_empty());
    }
}
