//! Latest-frame slots: the newest decoded or captured frame overwrites the last one, so a
//! slow reader (a render loop, a test) never makes the producer wait and never sees stale queues.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use web_time::Instant;

use super::{FrameCode, VideoFrame};

/// A frame with what is known about it.
#[derive(Debug, Clone)]
pub struct SlotFrame {
    pub frame: Arc<VideoFrame>,
    /// The frame code, when the picture carries one.
    pub code: Option<FrameCode>,
    /// Counts frames put into the slot, from 1.
    pub sequence: u64,
    /// When the frame was put into the slot.
    pub at: Instant,
    /// When the frame was captured (µs since the UNIX epoch), as its publisher stamped it.
    pub capture_us: Option<u64>,
}

#[derive(Debug, Default)]
struct Inner {
    latest: Option<SlotFrame>,
    sequence: u64,
    closed: bool,
}

/// One stream's newest frame. Cheap to clone; clones share the slot.
#[derive(Debug, Clone, Default)]
pub struct FrameSlot {
    inner: Arc<(Mutex<Inner>, Condvar)>,
}

impl FrameSlot {
    pub fn new() -> FrameSlot {
        FrameSlot::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Replaces the frame in the slot and wakes waiting readers.
    pub fn put(&self, frame: VideoFrame, code: Option<FrameCode>) {
        self.put_captured(frame, code, None);
    }

    /// Like [`FrameSlot::put`], with the frame's capture time when it is known.
    pub fn put_captured(&self, frame: VideoFrame, code: Option<FrameCode>, capture_us: Option<u64>) {
        let mut inner = self.lock();
        inner.sequence += 1;
        let sequence = inner.sequence;
        inner.latest = Some(SlotFrame {
            frame: Arc::new(frame),
            code,
            sequence,
            at: Instant::now(),
            capture_us,
        });
        drop(inner);
        self.inner.1.notify_all();
    }

    /// The newest frame, if any.
    pub fn latest(&self) -> Option<SlotFrame> {
        self.lock().latest.clone()
    }

    /// The newest frame if it is newer than `seen` (a sequence number from an earlier frame; 0 for none).
    pub fn newer_than(&self, seen: u64) -> Option<SlotFrame> {
        self.lock().latest.clone().filter(|f| f.sequence > seen)
    }

    /// Waits up to `timeout` for a frame newer than `seen`. None on timeout or when closed.
    pub fn wait_newer_than(&self, seen: u64, timeout: Duration) -> Option<SlotFrame> {
        let deadline = Instant::now() + timeout;
        let mut inner = self.lock();
        loop {
            if let Some(frame) = inner.latest.as_ref().filter(|f| f.sequence > seen) {
                return Some(frame.clone());
            }
            let now = Instant::now();
            if inner.closed || now >= deadline {
                return None;
            }
            inner = self
                .inner
                .1
                .wait_timeout(inner, deadline - now)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
        }
    }

    /// How many frames have been put so far.
    pub fn count(&self) -> u64 {
        self.lock().sequence
    }

    /// No more frames will come; wakes waiting readers.
    pub fn close(&self) {
        self.lock().closed = true;
        self.inner.1.notify_all();
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_frame_wins_and_readers_see_each_once() {
        let slot = FrameSlot::new();
        assert!(slot.latest().is_none());
        for _ in 0..3 {
            slot.put(VideoFrame::black(16, 16).expect("valid"), None);
        }
        let latest = slot.latest().expect("a frame");
        assert_eq!(latest.sequence, 3);
        assert!(slot.newer_than(3).is_none());
        assert_eq!(slot.newer_than(2).map(|f| f.sequence), Some(3));
    }

    #[test]
    fn waiting_readers_wake_on_put_and_on_close() {
        let slot = FrameSlot::new();
        let writer = slot.clone();
        let handle = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            writer.put(VideoFrame::black(16, 16).expect("valid"), None);
        });
        assert!(slot.wait_newer_than(0, Duration::from_secs(5)).is_some());
        handle.join().expect("writer thread");
        slot.close();
        assert!(slot.wait_newer_than(1, Duration::from_secs(5)).is_none());
    }
}
