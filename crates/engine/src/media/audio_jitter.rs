//! The audio jitter buffer: Opus packets of one stream in, in order, with every missing
//! packet replaced by what best stands in for it.
//!
//! Packets wait in sequence order. The next one leaves as soon as it is here; when it is not
//! but a later one is, it is waited for as long as the stream's measured jitter says a late
//! packet may still come (reordering), and then given up: the packet after it carries the
//! lost one's in-band FEC copy (Opus LBRR) and is decoded for it if it is here, otherwise the
//! decoder conceals (PLC). A packet that arrives after its turn is dropped, so the sound never
//! repeats or shifts. The mixer downstream primes its own playout delay; this buffer only
//! restores order and fills holes, so on a clean path it adds no delay at all.
//!
//! No clock and no IO: time is passed in, as in [`super::receive`].

use std::collections::BTreeMap;
use std::time::Duration;

use web_time::Instant;

use super::receive::{Jitter, extend_sequence};

/// The longest a missing packet is waited for.
const MAX_HOLD: Duration = Duration::from_millis(120);
/// Waiting for reordering never goes below this once any reordering has been seen.
const MIN_HOLD: Duration = Duration::from_millis(5);
/// A gap this long is a pause or a restart, not loss: skip it rather than conceal it.
const MAX_CONCEALED: u64 = 25;
/// Packets held at most (about 5 s of 20 ms packets).
const MAX_PACKETS: usize = 256;

/// What to decode next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioOutput {
    /// Decode this packet.
    Packet(Vec<u8>),
    /// The packet is lost; decode the FEC data that this (following) packet carries for it.
    Fec(Vec<u8>),
    /// The packet is lost with nothing to recover it from: conceal one packet's worth.
    Conceal,
}

/// What happened so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AudioJitterStats {
    pub packets: u64,
    /// Came after their turn or twice.
    pub late: u64,
    pub reordered: u64,
    pub decoded: u64,
    pub fec: u64,
    pub concealed: u64,
}

/// Orders and repairs one Opus stream. See the module documentation.
#[derive(Debug)]
pub struct AudioJitterBuffer {
    packets: BTreeMap<u64, (Vec<u8>, Instant)>,
    highest: Option<u64>,
    /// The packet to hand out next.
    next: Option<u64>,
    jitter: Jitter,
    reordering_seen: bool,
    stats: AudioJitterStats,
}

impl Default for AudioJitterBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl AudioJitterBuffer {
    pub fn new() -> AudioJitterBuffer {
        AudioJitterBuffer {
            packets: BTreeMap::new(),
            highest: None,
            next: None,
            jitter: Jitter::new(48_000),
            reordering_seen: false,
            stats: AudioJitterStats::default(),
        }
    }

    pub fn stats(&self) -> AudioJitterStats {
        self.stats
    }

    /// How long a missing packet is waited for: three times the measured jitter.
    pub fn hold(&self) -> Duration {
        let hold = (self.jitter.get() * 3).min(MAX_HOLD);
        if self.reordering_seen { hold.max(MIN_HOLD) } else { hold }
    }

    /// Takes one packet (`timestamp` at 48 kHz).
    pub fn insert(&mut self, now: Instant, sequence_number: u16, timestamp: u32, payload: &[u8]) {
        self.stats.packets += 1;
        if self
            .highest
            .is_some_and(|h| extend_sequence(Some(h), sequence_number).abs_diff(h) > MAX_CONCEALED * 8)
        {
            // A restarted stream: start over at this packet.
            self.packets.clear();
            self.highest = None;
            self.next = None;
            self.jitter.forget_last();
        }
        let seq = extend_sequence(self.highest, sequence_number);
        if self.packets.contains_key(&seq) {
            self.stats.late += 1;
            return;
        }
        if self.next.is_some_and(|next| seq < next) {
            // Its turn passed: this path reorders, so holes are waited for from now on.
            self.stats.late += 1;
            self.reordering_seen = true;
            return;
        }
        match self.highest {
            Some(highest) if seq < highest => {
                self.stats.reordered += 1;
                self.reordering_seen = true;
            }
            _ => {
                self.highest = Some(seq);
                self.jitter.update(now, timestamp);
            }
        }
        self.next.get_or_insert(seq);
        self.packets.insert(seq, (payload.to_vec(), now));
        while self.packets.len() > MAX_PACKETS {
            // The reader stopped reading: keep the newest.
            if let Some((&oldest, _)) = self.packets.first_key_value() {
                self.packets.remove(&oldest);
                self.next = self.packets.first_key_value().map(|(&s, _)| s);
            }
        }
    }

    /// The next thing to decode, if it is due at `now`.
    pub fn poll(&mut self, now: Instant) -> Option<AudioOutput> {
        let next = self.next?;
        if let Some((payload, _)) = self.packets.remove(&next) {
            self.next = Some(next + 1);
            self.stats.decoded += 1;
            return Some(AudioOutput::Packet(payload));
        }
        // A hole: give up on it once the packet after it has waited long enough.
        let (&after, &(_, arrived)) = self.packets.first_key_value()?;
        if now.saturating_duration_since(arrived) < self.hold() {
            return None;
        }
        if after - next > MAX_CONCEALED {
            self.next = Some(after);
            return self.poll(now);
        }
        self.next = Some(next + 1);
        match self.packets.get(&(next + 1)) {
            Some((payload, _)) => {
                self.stats.fec += 1;
                Some(AudioOutput::Fec(payload.clone()))
            }
            None => {
                self.stats.concealed += 1;
                Some(AudioOutput::Conceal)
            }
        }
    }

    /// When [`poll`](Self::poll) next has something to do without a new packet.
    pub fn next_timeout(&self) -> Option<Instant> {
        let next = self.next?;
        if self.packets.contains_key(&next) {
            return None;
        }
        self.packets
            .first_key_value()
            .map(|(_, &(_, arrived))| arrived + self.hold())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(20);

    fn drain(buffer: &mut AudioJitterBuffer, now: Instant) -> Vec<AudioOutput> {
        std::iter::from_fn(|| buffer.poll(now)).collect()
    }

    fn packet(n: u8) -> Vec<u8> {
        vec![n]
    }

    #[test]
    fn in_order_packets_leave_at_once() {
        let t0 = Instant::now();
        let mut buffer = AudioJitterBuffer::new();
        for i in 0..10u16 {
            let now = t0 + TICK * u32::from(i);
            buffer.insert(now, 65_530u16.wrapping_add(i), u32::from(i) * 960, &packet(i as u8));
            assert_eq!(drain(&mut buffer, now), vec![AudioOutput::Packet(packet(i as u8))]);
        }
        assert_eq!(buffer.hold(), Duration::ZERO);
    }

    #[test]
    fn reordered_packets_are_put_back_in_order() {
        let t0 = Instant::now();
        let mut buffer = AudioJitterBuffer::new();
        let order = [0u16, 2, 1, 3, 5, 4, 6];
        let mut out = Vec::new();
        for (i, &seq) in order.iter().enumerate() {
            let now = t0 + TICK * i as u32 + Duration::from_millis(u64::from(seq % 3) * 4);
            buffer.insert(now, seq, u32::from(seq) * 960, &packet(seq as u8));
            out.extend(drain(&mut buffer, now));
        }
        let expected: Vec<_> = (0..7).map(|n| AudioOutput::Packet(packet(n))).collect();
        assert_eq!(out, expected);
        assert_eq!(buffer.stats().concealed + buffer.stats().fec, 0);
    }

    #[test]
    fn a_lost_packet_is_recovered_from_the_next_ones_fec_or_concealed() {
        let t0 = Instant::now();
        let mut buffer = AudioJitterBuffer::new();
        buffer.insert(t0, 0, 0, &packet(0));
        assert_eq!(drain(&mut buffer, t0), vec![AudioOutput::Packet(packet(0))]);
        // 1 is lost, 2 is here: after the hold, 2's FEC stands in for 1.
        let t2 = t0 + TICK * 2;
        buffer.insert(t2, 2, 2 * 960, &packet(2));
        let due = t2 + buffer.hold();
        let out = drain(&mut buffer, due);
        assert_eq!(out, vec![AudioOutput::Fec(packet(2)), AudioOutput::Packet(packet(2))]);
        // 3 and 4 lost, 5 here: 3 is concealed, 4 comes from 5's FEC.
        let t5 = t0 + TICK * 5;
        buffer.insert(t5, 5, 5 * 960, &packet(5));
        let due = t5 + buffer.hold();
        let out = drain(&mut buffer, due);
        assert_eq!(
            out,
            vec![
                AudioOutput::Conceal,
                AudioOutput::Fec(packet(5)),
                AudioOutput::Packet(packet(5))
            ]
        );
        // A straggler after its turn is dropped.
        buffer.insert(t5, 3, 3 * 960, &packet(3));
        assert!(drain(&mut buffer, t5 + TICK).is_empty());
        assert_eq!(buffer.stats().late, 1);
    }

    #[test]
    fn a_late_packet_within_the_hold_is_waited_for() {
        let t0 = Instant::now();
        let mut buffer = AudioJitterBuffer::new();
        // Jittery arrivals teach the buffer to wait.
        for i in 0..50u16 {
            let wobble = Duration::from_millis(u64::from(i % 2) * 8);
            let now = t0 + TICK * u32::from(i) + wobble;
            buffer.insert(now, i, u32::from(i) * 960, &packet(i as u8));
            drain(&mut buffer, now);
        }
        let t = t0 + TICK * 51;
        buffer.insert(t, 51, 51 * 960, &packet(51));
        let hold = buffer.hold();
        assert!(hold >= Duration::from_millis(10), "{hold:?}");
        assert!(drain(&mut buffer, t + hold / 2).is_empty(), "50 may still come");
        assert_eq!(buffer.next_timeout(), Some(t + hold));
        buffer.insert(t + hold / 2, 50, 50 * 960, &packet(50));
        assert_eq!(
            drain(&mut buffer, t + hold / 2),
            vec![AudioOutput::Packet(packet(50)), AudioOutput::Packet(packet(51))]
        );
    }

    #[test]
    fn a_long_pause_is_skipped_not_concealed() {
        let t0 = Instant::now();
        let mut buffer = AudioJitterBuffer::new();
        buffer.insert(t0, 10, 0, &packet(0));
        drain(&mut buffer, t0);
        buffer.insert(t0 + Duration::from_secs(2), 110, 100 * 960, &packet(1));
        let out = drain(&mut buffer, t0 + Duration::from_secs(3));
        assert_eq!(out, vec![AudioOutput::Packet(packet(1))]);
    }
}
