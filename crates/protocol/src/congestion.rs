//! Judging a media link by its receiver reports, the same way at both ends: the SFU for each
//! subscriber's downlink, the desktop engine for its uplink. Pure; no clock of its own.

use std::time::{Duration, Instant};

use crate::VideoLayer;

/// A media link as the receiver reports on it tell, and the video layer it allows: a
/// subscriber's downlink at the SFU, a publisher's uplink at the desktop engine. Congestion
/// shows as loss or as a round trip grown well past the best seen (a queue building up): two
/// such reports in a row step the cap a layer below what is being sent. After a quiet while
/// the cap goes up a layer again; each climb that congestion undoes soon doubles the wait
/// before the next (up to half a minute), so a link that cannot carry a layer is not flooded
/// every few seconds. Random loss below [`CONGESTED_LOSS`] and jitter do not count: they are
/// no reason to send less.
#[derive(Debug, Clone)]
pub struct CongestionCap {
    pub cap: VideoLayer,
    /// The best round trip of this window and the one before (windows of [`RTT_WINDOW`]), and
    /// this window's best and start: the baseline follows a route that changed.
    min_rtt: Option<Duration>,
    window_min: Option<(Duration, Instant)>,
    congested_reports: u32,
    last_change: Option<Instant>,
    quiet_since: Option<Instant>,
    climb_after: Duration,
    raised_at: Option<Instant>,
    /// The last report showed a queue building up.
    queued: bool,
}

/// Loss (as a receiver reports it) at or above which a link counts as congested.
pub const CONGESTED_LOSS: f32 = 0.10;
/// How far the round trip may grow past the best seen before a link counts as congested.
pub const QUEUE_DELAY: Duration = Duration::from_millis(150);
/// How long a window of round trips is; the baseline is the best of the last one or two.
const RTT_WINDOW: Duration = Duration::from_secs(30);
/// The first wait before a layer is tried again, and the longest.
const CLIMB_AFTER: Duration = Duration::from_secs(2);
const CLIMB_AFTER_MAX: Duration = Duration::from_secs(30);
/// A climb undone within this long was too early.
const CLIMB_FAILED_WITHIN: Duration = Duration::from_secs(10);

impl Default for CongestionCap {
    fn default() -> Self {
        CongestionCap {
            cap: VideoLayer::High,
            min_rtt: None,
            window_min: None,
            congested_reports: 0,
            last_change: None,
            quiet_since: None,
            climb_after: CLIMB_AFTER,
            raised_at: None,
            queued: false,
        }
    }
}

impl CongestionCap {
    /// Whether the last report showed a queue building up on the link (resends would only
    /// lengthen it).
    pub fn queue_building(&self) -> bool {
        self.queued
    }

    /// Takes a report on the video (`loss` as a fraction, `rtt` when known) while `sending`
    /// the layer at that index; returns whether the cap changed.
    pub fn on_report(
        &mut self,
        now: Instant,
        loss: Option<f32>,
        rtt: Option<Duration>,
        sending: Option<usize>,
    ) -> bool {
        if let Some(rtt) = rtt {
            let (best, since) = self.window_min.unwrap_or((rtt, now));
            if now.saturating_duration_since(since) >= RTT_WINDOW {
                // A window ends: its best, with the new window's, is the baseline from now.
                self.min_rtt = Some(best.min(rtt));
                self.window_min = Some((rtt, now));
            } else {
                self.window_min = Some((best.min(rtt), since));
                self.min_rtt = Some(self.min_rtt.map_or(rtt, |min| min.min(rtt)));
            }
        }
        let queued = matches!((rtt, self.min_rtt), (Some(rtt), Some(min)) if rtt > min + QUEUE_DELAY);
        self.queued = queued;
        let lossy = loss.is_some_and(|loss| loss >= CONGESTED_LOSS);
        let settled = self
            .last_change
            .is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(1));
        if queued || lossy {
            self.quiet_since = None;
            self.congested_reports += 1;
            if self.congested_reports < 2 || !settled {
                return false;
            }
            self.congested_reports = 0;
            let below = sending.map_or(self.cap, |i| VideoLayer::SENT[i]).min(self.cap);
            let lower = match below {
                VideoLayer::High => VideoLayer::Medium,
                _ => VideoLayer::Low,
            };
            if self
                .raised_at
                .is_some_and(|at| now.saturating_duration_since(at) < CLIMB_FAILED_WITHIN)
            {
                self.climb_after = (self.climb_after * 2).min(CLIMB_AFTER_MAX);
            }
            self.raised_at = None;
            self.last_change = Some(now);
            let changed = lower != self.cap;
            self.cap = lower;
            return changed;
        }
        self.congested_reports = 0;
        let quiet = *self.quiet_since.get_or_insert(now);
        if self
            .raised_at
            .is_some_and(|at| now.saturating_duration_since(at) >= CLIMB_AFTER_MAX)
        {
            // A climb that held for long: the link is good again.
            self.climb_after = CLIMB_AFTER;
        }
        if self.cap == VideoLayer::High || now.saturating_duration_since(quiet) < self.climb_after || !settled {
            return false;
        }
        self.cap = match self.cap {
            VideoLayer::Low | VideoLayer::Off => VideoLayer::Medium,
            _ => VideoLayer::High,
        };
        self.raised_at = Some(now);
        self.last_change = Some(now);
        self.quiet_since = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn congestion_steps_the_cap_down_and_a_quiet_link_lets_it_climb() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let rtt = |ms: u64| Some(Duration::from_millis(ms));
        let mut link = CongestionCap::default();
        // Random loss under 10% and jitter in the round trip: nothing changes.
        for (i, (loss, r)) in [(0.02, 50), (0.05, 90), (0.08, 60), (0.0, 120)].into_iter().enumerate() {
            assert!(!link.on_report(at(500 * i as u64), Some(loss), rtt(r), Some(2)));
        }
        assert_eq!(link.cap, VideoLayer::High);
        // A queue builds (the round trip 300 ms over the best): after two reports, a layer down.
        assert!(!link.on_report(at(3000), Some(0.0), rtt(350), Some(2)));
        assert!(link.on_report(at(3500), Some(0.0), rtt(360), Some(2)));
        assert_eq!(link.cap, VideoLayer::Medium);
        // Still congested: not again within a second, then down to the lowest.
        assert!(!link.on_report(at(4000), Some(0.2), rtt(300), Some(1)));
        assert!(!link.on_report(at(4400), Some(0.2), rtt(300), Some(1)));
        assert!(link.on_report(at(4600), Some(0.2), rtt(300), Some(1)));
        assert_eq!(link.cap, VideoLayer::Low);
        // Quiet for two seconds: a layer up; two more: the full picture.
        assert!(!link.on_report(at(5000), Some(0.0), rtt(50), Some(0)));
        assert!(link.on_report(at(7000), Some(0.0), rtt(50), Some(0)));
        assert_eq!(link.cap, VideoLayer::Medium);
        assert!(link.on_report(at(9000), Some(0.0), rtt(50), Some(1)));
        assert_eq!(link.cap, VideoLayer::High);
        // That climb fails at once: down, and the next climb waits twice as long.
        link.on_report(at(9500), Some(0.3), rtt(50), Some(2));
        assert!(link.on_report(at(10_000), Some(0.3), rtt(50), Some(2)));
        assert_eq!(link.cap, VideoLayer::Medium);
        assert!(!link.on_report(at(10_500), Some(0.0), rtt(50), Some(1)));
        assert!(
            !link.on_report(at(12_600), Some(0.0), rtt(50), Some(1)),
            "2 s is not enough now"
        );
        assert!(link.on_report(at(14_600), Some(0.0), rtt(50), Some(1)));
    }

    #[test]
    fn a_round_trip_that_stays_longer_becomes_the_new_baseline() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut link = CongestionCap::default();
        link.on_report(at(0), Some(0.0), Some(Duration::from_millis(20)), Some(2));
        // The route changes: 300 ms from now on. At first that reads as a queue...
        link.on_report(at(1), Some(0.0), Some(Duration::from_millis(300)), Some(2));
        assert!(link.queue_building());
        // ...but two windows on, 300 ms is the baseline and nothing is queued.
        for s in (2..=70).step_by(2) {
            link.on_report(at(s), Some(0.0), Some(Duration::from_millis(300)), Some(2));
        }
        assert!(!link.queue_building(), "the baseline moved with the route");
    }
}
