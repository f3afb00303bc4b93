//! Which video layer each subscriber receives, and the rewriting that hides the switches.
//!
//! A publisher sends up to three layers of its video (simulcast, [`VideoLayer::SENT`]); each
//! subscriber receives one of them, or none while paused. The layer is the one the subscriber
//! asked for (the size its view shows the stream at), capped by what its downlink carries
//! (its receiver reports, judged by `holoroom_protocol::congestion::CongestionCap`), and
//! moved to the nearest layer the publisher actually sends.
//! A switch happens only at a keyframe of the new layer, so the decoder never sees a picture
//! that refers to another layer's frames; until that keyframe arrives the old layer goes on.
//! Sequence numbers are rewritten by the caller; timestamps here, so that both run on
//! without a jump across switches and pauses.

use std::time::{Duration, Instant};

use holoroom_protocol::VideoLayer;

/// A layer not heard from for this long is taken as no longer sent (its publisher stopped
/// encoding it, or its uplink dropped it).
pub const LAYER_GONE_AFTER: Duration = Duration::from_millis(1000);

/// Frames of two layers captured closer together than this are the same moment.
const SAME_MOMENT_US: i64 = 8_000;
/// A keyframe that the sender reports place this far before the last frame written cannot
/// be of that moment: its layer's RTP clock stood still while the layer was paused, and its
/// mapping is stale until the next sender report.
const STALE_US: i64 = 500_000;

/// One layer as it arrives from the publisher: when it was last heard.
#[derive(Debug, Default, Clone)]
pub struct LayerIn {
    last_packet: Option<Instant>,
}

impl LayerIn {
    pub fn on_packet(&mut self, now: Instant) {
        self.last_packet = Some(now);
    }

    pub fn is_sent(&self, now: Instant) -> bool {
        self.last_packet
            .is_some_and(|at| now.saturating_duration_since(at) < LAYER_GONE_AFTER)
    }

    /// Whether the publisher has sent this layer at all (so it can send it when asked).
    pub fn ever_sent(&self) -> bool {
        self.last_packet.is_some()
    }
}

/// Which of the three layers are being sent now.
pub fn sent_layers(layers: &[LayerIn; 3], now: Instant) -> [bool; 3] {
    [0, 1, 2].map(|i| layers[i].is_sent(now))
}

/// A video packet as the layer choice sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketIn {
    /// Its layer's index in [`VideoLayer::SENT`].
    pub layer: usize,
    pub starts_keyframe: bool,
    /// Its RTP timestamp.
    pub ts_in: u32,
    /// When its frame was captured, by the publisher's clock, in microseconds (once the
    /// publisher's sender reports map its timestamps to that clock).
    pub capture_us: Option<i64>,
}

/// What to do with one video packet for one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forward it with this timestamp; `switched` when it begins a new layer (or the first
    /// after a pause), so the sequence numbers restart after the last written.
    Forward { timestamp: u32, switched: bool },
    /// Not for this subscriber.
    Drop,
    /// Not for this subscriber yet: it waits for a keyframe of this layer.
    AwaitKeyframe(usize),
}

/// One subscriber's video of one stream.
#[derive(Debug, Clone)]
pub struct VideoOut {
    /// What the subscriber asked for.
    pub wanted: VideoLayer,
    /// What its downlink allows.
    pub cap: VideoLayer,
    /// The layer being forwarded (None before the first keyframe and while paused).
    pub current: Option<usize>,
    /// Added to the publisher's timestamps of the current layer.
    ts_offset: u32,
    /// The last timestamp written and when.
    last: Option<(u32, Instant)>,
    /// When the last frame written was captured, by the publisher's clock (from its sender
    /// reports), in microseconds.
    last_capture: Option<i64>,
    /// The target's keyframe showed a moment already written: the current layer stops at its
    /// next frame, so that the target's next keyframe is a new moment.
    holding: bool,
    /// Layers switched so far (a pause and a resume count too).
    pub switches: u64,
}

impl VideoOut {
    pub fn new(wanted: VideoLayer) -> Self {
        VideoOut {
            wanted,
            cap: VideoLayer::High,
            current: None,
            ts_offset: 0,
            last: None,
            last_capture: None,
            holding: false,
            switches: 0,
        }
    }

    /// The layer to forward given what is sent: the asked-for layer within the cap, else the
    /// nearest sent layer below it, else the nearest above. None when paused or nothing is sent.
    pub fn target(&self, sent: [bool; 3]) -> Option<usize> {
        let want = self.wanted.min(self.cap).index()?;
        (0..=want)
            .rev()
            .find(|&l| sent[l])
            .or_else(|| (want + 1..3).find(|&l| sent[l]))
    }

    /// The layer this subscriber receives or is about to, for reports.
    pub fn layer(&self) -> VideoLayer {
        match self.current {
            Some(i) => VideoLayer::SENT[i],
            None => VideoLayer::Off,
        }
    }

    /// Decides on a packet of `layer`: whether it `starts_keyframe`, its timestamp `ts_in`, and
    /// when it was captured by the publisher's clock (`capture_us`, once its sender reports tell).
    pub fn on_packet(&mut self, now: Instant, packet: PacketIn, sent: [bool; 3]) -> Verdict {
        let PacketIn {
            layer,
            starts_keyframe,
            ts_in,
            capture_us,
        } = packet;
        let Some(target) = self.target(sent) else {
            if self.current.take().is_some() {
                self.switches += 1;
            }
            return Verdict::Drop;
        };
        if target == layer && self.current != Some(layer) {
            if !starts_keyframe {
                return Verdict::AwaitKeyframe(layer);
            }
            if self.shown_already(capture_us) {
                self.holding = true;
                return Verdict::AwaitKeyframe(layer);
            }
            // The first packet of the new layer follows the last one written by the time that
            // passed between their captures (or, before sender reports, their arrivals), so
            // the receiver's clock sees no jump.
            let next = match self.last {
                Some((last_ts, at)) => {
                    // By the capture clock while it is plausible, else by arrival.
                    let elapsed_us = match (capture_us, self.last_capture) {
                        (Some(new), Some(old)) if (0..=5_000_000).contains(&(new - old)) => (new - old) as u128,
                        _ => now.saturating_duration_since(at).as_micros(),
                    };
                    let ticks = (elapsed_us * 90 / 1000).clamp(1, u32::MAX as u128) as u32;
                    last_ts.wrapping_add(ticks)
                }
                None => ts_in,
            };
            self.ts_offset = next.wrapping_sub(ts_in);
            self.current = Some(layer);
            self.switches += 1;
            self.holding = false;
            self.last_capture = capture_us;
            let timestamp = self.stamp(now, ts_in);
            return Verdict::Forward {
                timestamp,
                switched: true,
            };
        }
        if self.current == Some(layer) {
            // The current layer goes on until the target's keyframe arrives.
            let new_frame = self
                .last
                .is_none_or(|(last_ts, _)| last_ts != ts_in.wrapping_add(self.ts_offset));
            if new_frame {
                if self.holding && target != layer {
                    // The old layer stops here: should the target turn back to it, it starts
                    // again at a keyframe, as any switch does.
                    self.current = None;
                    self.holding = false;
                    return Verdict::Drop;
                }
                self.holding = false;
                self.last_capture = capture_us.or(self.last_capture);
            }
            let timestamp = self.stamp(now, ts_in);
            return Verdict::Forward {
                timestamp,
                switched: false,
            };
        }
        Verdict::Drop
    }

    /// Whether a keyframe of another layer shows the moment of the last frame written (the
    /// layers of one capture arrive one after another): switching on it would show that moment
    /// twice, so the switch waits for a later keyframe. Known from the sender reports' clock,
    /// which the publisher sends within its first second or so; before that, a switch may
    /// show one moment twice (arrival times cannot tell: every layer's keyframe arrives right
    /// after another layer's frame of the same moment).
    fn shown_already(&self, capture_us: Option<i64>) -> bool {
        self.current.is_some()
            && matches!(
                (capture_us, self.last_capture),
                (Some(new), Some(old)) if new <= old + SAME_MOMENT_US && new >= old - STALE_US
            )
    }

    fn stamp(&mut self, now: Instant, ts_in: u32) -> u32 {
        let out = ts_in.wrapping_add(self.ts_offset);
        self.last = Some((out, now));
        out
    }

    /// The publisher's connection was replaced: its layers start over from keyframes, and the
    /// timestamps go on from the last written.
    pub fn restart(&mut self) {
        self.current = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [bool; 3] = [true, true, true];

    fn out(wanted: VideoLayer) -> VideoOut {
        VideoOut::new(wanted)
    }

    /// A subscriber that got the high layer's keyframe (captured at `capture_us`) and now
    /// wants the low layer.
    fn high_then_low_wanted(t0: Instant, capture_us: i64) -> VideoOut {
        let mut v = out(VideoLayer::High);
        assert!(matches!(
            v.on_packet(t0, at(2, true, 0, capture_us), ALL),
            Verdict::Forward { .. }
        ));
        v.wanted = VideoLayer::Low;
        v
    }

    /// A packet whose sender report places its capture at `capture_us`.
    fn at(layer: usize, starts_keyframe: bool, ts_in: u32, capture_us: i64) -> PacketIn {
        PacketIn {
            layer,
            starts_keyframe,
            ts_in,
            capture_us: Some(capture_us),
        }
    }

    /// A packet without a capture time (no sender report yet).
    fn p(layer: usize, starts_keyframe: bool, ts_in: u32) -> PacketIn {
        PacketIn {
            layer,
            starts_keyframe,
            ts_in,
            capture_us: None,
        }
    }

    #[test]
    fn the_target_is_the_wanted_layer_within_the_cap_and_what_is_sent() {
        let mut v = out(VideoLayer::High);
        assert_eq!(v.target(ALL), Some(2));
        v.cap = VideoLayer::Medium;
        assert_eq!(v.target(ALL), Some(1));
        assert_eq!(v.target([true, false, true]), Some(0), "nearest below");
        assert_eq!(v.target([false, false, true]), Some(2), "else nearest above");
        assert_eq!(v.target([false; 3]), None);
        v.wanted = VideoLayer::Off;
        assert_eq!(v.target(ALL), None, "paused");
    }

    #[test]
    fn a_switch_waits_for_a_keyframe_of_the_new_layer_and_the_old_layer_goes_on_until_then() {
        let t0 = Instant::now();
        let mut v = out(VideoLayer::Low);
        assert_eq!(v.on_packet(t0, p(0, false, 100), ALL), Verdict::AwaitKeyframe(0));
        assert!(matches!(
            v.on_packet(t0, p(0, true, 100), ALL),
            Verdict::Forward { switched: true, .. }
        ));
        v.wanted = VideoLayer::High;
        assert!(matches!(
            v.on_packet(t0, p(0, false, 3100), ALL),
            Verdict::Forward { switched: false, .. }
        ));
        let t1 = t0 + Duration::from_millis(70);
        assert_eq!(v.on_packet(t1, p(2, false, 90_000), ALL), Verdict::AwaitKeyframe(2));
        assert!(matches!(
            v.on_packet(t1, p(2, true, 93_000), ALL),
            Verdict::Forward { switched: true, .. }
        ));
        assert_eq!(
            v.on_packet(t1, p(0, false, 6100), ALL),
            Verdict::Drop,
            "the old layer stops"
        );
        assert_eq!(v.switches, 2);
    }

    #[test]
    fn a_keyframe_of_a_moment_already_shown_does_not_switch() {
        let t0 = Instant::now();
        let mut v = high_then_low_wanted(t0, 1_000_000);
        // The low layer's keyframe of the same capture, 20 ms later (encoded after the high one).
        let t1 = t0 + Duration::from_millis(20);
        assert_eq!(
            v.on_packet(t1, at(0, true, 555, 1_000_000), ALL),
            Verdict::AwaitKeyframe(0),
            "the moment was shown already"
        );
        // The high layer stops at its next frame, so the low layer's next keyframe is new.
        let t2 = t0 + Duration::from_millis(66);
        assert_eq!(v.on_packet(t2, at(2, false, 6000, 1_066_000), ALL), Verdict::Drop);
        let Verdict::Forward { timestamp, switched } = v.on_packet(t2, at(0, true, 6555, 1_066_500), ALL) else {
            panic!("a later keyframe switches")
        };
        assert!(switched);
        assert_eq!(timestamp, 5985, "66.5 ms at 90 kHz after the last frame written");
    }

    #[test]
    fn timestamps_run_on_across_a_switch_by_the_time_that_passed() {
        let t0 = Instant::now();
        let mut v = out(VideoLayer::Low);
        let Verdict::Forward { timestamp: first, .. } = v.on_packet(t0, p(0, true, 1_000_000), ALL) else {
            panic!("the keyframe goes through")
        };
        assert_eq!(first, 1_000_000, "the first layer keeps its timestamps");
        v.wanted = VideoLayer::High;
        let later = t0 + Duration::from_millis(100);
        // The high layer's clock has another random start.
        let Verdict::Forward { timestamp, .. } = v.on_packet(later, p(2, true, 7), ALL) else {
            panic!("the keyframe goes through")
        };
        assert_eq!(timestamp, 1_000_000 + 9000, "100 ms at 90 kHz after the last");
        let Verdict::Forward { timestamp: next, .. } =
            v.on_packet(later + Duration::from_millis(66), p(2, false, 7 + 6000), ALL)
        else {
            panic!("the layer goes on")
        };
        assert_eq!(next, 1_000_000 + 9000 + 6000, "then the new layer's own pace");
    }

    #[test]
    fn a_layer_back_from_a_pause_switches_though_its_clock_mapping_is_stale() {
        let t0 = Instant::now();
        let mut v = high_then_low_wanted(t0, 10_000_000);
        // The quarter layer was paused for 3 s: its sender report maps it 3 s into the past.
        let later = t0 + Duration::from_millis(66);
        let Verdict::Forward { timestamp, switched } = v.on_packet(later, at(0, true, 500, 7_000_000), ALL) else {
            panic!("a stale mapping is no reason to wait")
        };
        assert!(switched);
        assert_eq!(timestamp, 66 * 90, "timed by arrival instead");
    }

    #[test]
    fn a_held_layer_asked_for_again_restarts_at_a_keyframe() {
        let t0 = Instant::now();
        let mut v = high_then_low_wanted(t0, 1_000_000);
        // The low keyframe of the moment shown: hold the high layer at its next frame.
        assert_eq!(
            v.on_packet(t0, at(0, true, 9, 1_000_000), ALL),
            Verdict::AwaitKeyframe(0)
        );
        assert_eq!(v.on_packet(t0, at(2, false, 6000, 1_066_000), ALL), Verdict::Drop);
        // Asked for the high layer again: it lost a frame, so it starts at a keyframe.
        v.wanted = VideoLayer::High;
        assert_eq!(
            v.on_packet(t0, at(2, false, 12_000, 1_133_000), ALL),
            Verdict::AwaitKeyframe(2)
        );
        assert!(matches!(
            v.on_packet(t0, at(2, true, 18_000, 1_200_000), ALL),
            Verdict::Forward { switched: true, .. }
        ));
    }

    #[test]
    fn a_pause_drops_everything_and_a_resume_starts_at_a_keyframe() {
        let t0 = Instant::now();
        let mut v = out(VideoLayer::High);
        assert!(matches!(v.on_packet(t0, p(2, true, 0), ALL), Verdict::Forward { .. }));
        v.wanted = VideoLayer::Off;
        assert_eq!(v.on_packet(t0, p(2, true, 3000), ALL), Verdict::Drop);
        assert_eq!(v.layer(), VideoLayer::Off);
        v.wanted = VideoLayer::High;
        assert_eq!(v.on_packet(t0, p(2, false, 6000), ALL), Verdict::AwaitKeyframe(2));
        assert!(matches!(
            v.on_packet(t0, p(2, true, 9000), ALL),
            Verdict::Forward { switched: true, .. }
        ));
    }
}
