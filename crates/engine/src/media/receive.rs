//! The video receive buffer: RTP packets of one H.264 stream in, whole decodable access
//! units out, in order, with the requests that repair what the network broke.
//!
//! Packets are kept by (extended) sequence number, so reordering costs nothing. A gap is
//! NACKed as soon as it is seen and asked again once a round trip has passed without an
//! answer; a frame leaves only when every packet from its first to its marker is here, and
//! only if the frame before it left too (P-frames need their reference). When a missing
//! packet's wait runs out (a bound from the measured round trip and jitter), the frames that
//! need it are dropped, a keyframe is asked for at once (then again at most once per round
//! trip) and playback resumes at the first complete keyframe, never decoding against a
//! missing reference. A complete keyframe behind a stuck frame ends the wait early.
//!
//! There is no clock and no IO here: the caller passes the time in, feeds packets with
//! [`VideoReceiveBuffer::insert`], drains [`VideoReceiveBuffer::poll`] and wakes up by
//! [`VideoReceiveBuffer::next_timeout`]. The same code serves any backend that sees RTP.

use std::collections::BTreeMap;
use std::time::Duration;

use web_time::Instant;

/// Round trip assumed before any has been measured.
const DEFAULT_RTT: Duration = Duration::from_millis(100);
/// Shortest wait before NACKing the same packet again: long enough for the SFU to have
/// recovered the packet from its publisher when it was lost before reaching the SFU.
const MIN_RENACK: Duration = Duration::from_millis(30);
/// Most NACKs sent for one packet: enough to keep asking through the longest wait.
const MAX_NACKS: u32 = 20;
/// Shortest and longest time a missing packet is waited for. The shortest covers losses on
/// both legs under heavy loss: the SFU NACKs its publisher on a ~33 ms tick and retries every
/// ~105 ms, so a packet whose first two resends are lost too arrives after ~350 ms even on a
/// short path. Giving up costs more: a keyframe, itself many packets on the same bad path.
const MIN_WAIT: Duration = Duration::from_millis(600);
const MAX_WAIT: Duration = Duration::from_millis(2000);
/// Packets held at most (about 3 s of 1.5 Mbit/s video); past that the oldest frames give way.
const MAX_PACKETS: usize = 4096;
/// A gap longer than this is not NACKed: the frames in it are given up at once.
const MAX_NACKED_GAP: u64 = 200;
/// A sequence number this far from the newest is a restarted stream, not a late packet.
const RESET_DISTANCE: u64 = 3000;
/// How long after the first packet a stream with no keyframe in sight asks for one.
const FIRST_KEYFRAME_GRACE: Duration = Duration::from_millis(150);
/// Shortest time between two keyframe requests: a keyframe is many packets, and on a lossy
/// path some of them need resending; asking again before it could arrive only brings another.
const MIN_KEYFRAME_INTERVAL: Duration = Duration::from_millis(300);

/// One received RTP packet of the stream.
#[derive(Debug, Clone, Copy)]
pub struct RtpIn<'a> {
    pub sequence_number: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: &'a [u8],
}

/// A whole access unit, ready for the decoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    /// Annex B: every NAL unit after a 4-byte start code.
    pub data: Vec<u8>,
    /// The RTP timestamp (90 kHz).
    pub timestamp: u32,
    /// Carries an IDR picture or a sequence parameter set.
    pub keyframe: bool,
    /// When its last packet arrived.
    pub completed: Instant,
}

/// What the buffer asks of its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiveOutput {
    /// Decode this next.
    Frame(EncodedFrame),
    /// Ask the sender again for these packets (an RTCP NACK).
    Nack(Vec<u16>),
    /// Ask the sender for a keyframe (an RTCP PLI).
    RequestKeyframe,
}

/// What happened so far, for reports and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiveStats {
    pub packets: u64,
    /// Packets that came twice, or after their frame was handed out or given up.
    pub duplicates: u64,
    /// Packets that came after a later one.
    pub reordered: u64,
    pub nacked: u64,
    /// NACKed packets that arrived after all.
    pub recovered: u64,
    /// Packets given up on.
    pub lost: u64,
    pub frames: u64,
    /// Frames dropped because they could not be decoded (incomplete or missing a reference).
    pub frames_dropped: u64,
    pub keyframe_requests: u64,
}

#[derive(Debug)]
struct Packet {
    timestamp: u32,
    marker: bool,
    payload: Vec<u8>,
    arrived: Instant,
}

#[derive(Debug)]
struct Missing {
    noticed: Instant,
    last_nack: Instant,
    nacks: u32,
}

/// Reorders, repairs and assembles one H.264 stream. See the module documentation.
#[derive(Debug)]
pub struct VideoReceiveBuffer {
    packets: BTreeMap<u64, Packet>,
    missing: BTreeMap<u64, Missing>,
    /// Newest extended sequence number seen.
    highest: Option<u64>,
    /// First packet of the next frame to hand out; None while looking for a keyframe.
    next: Option<u64>,
    /// Everything below this has been handed out or given up.
    floor: u64,
    first_packet: Option<Instant>,
    last_keyframe_request: Option<Instant>,
    /// A keyframe request waiting to go out.
    keyframe_wanted: bool,
    nacks_due: Vec<u16>,
    /// The round trip to the sender, as told (ICE measures it).
    rtt: Duration,
    jitter: Jitter,
    stats: ReceiveStats,
}

impl Default for VideoReceiveBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl VideoReceiveBuffer {
    pub fn new() -> VideoReceiveBuffer {
        VideoReceiveBuffer {
            packets: BTreeMap::new(),
            missing: BTreeMap::new(),
            highest: None,
            next: None,
            floor: 0,
            first_packet: None,
            last_keyframe_request: None,
            keyframe_wanted: false,
            nacks_due: Vec::new(),
            rtt: DEFAULT_RTT,
            jitter: Jitter::new(90_000),
            stats: ReceiveStats::default(),
        }
    }

    pub fn stats(&self) -> ReceiveStats {
        self.stats
    }

    /// The round trip used for NACK pacing and waits.
    pub fn rtt(&self) -> Duration {
        self.rtt
    }

    /// The measured interarrival jitter.
    pub fn jitter(&self) -> Duration {
        self.jitter.get()
    }

    /// The round trip to the sender, measured elsewhere (ICE's checks): NACK answers cannot
    /// tell it, since a reordered packet answers at once and a packet the SFU first had to
    /// recover from its publisher answers late.
    pub fn set_rtt(&mut self, rtt: Duration) {
        self.rtt = rtt.max(Duration::from_millis(1));
    }

    /// Time to wait for an answer to a NACK before asking again.
    fn renack_interval(&self) -> Duration {
        (self.rtt + self.rtt / 4 + self.jitter().mul_f32(2.0)).max(MIN_RENACK)
    }

    /// How long a missing packet is waited for before its frames are given up.
    pub fn max_wait(&self) -> Duration {
        (self.rtt * 3 + self.jitter().mul_f32(4.0) + Duration::from_millis(20)).clamp(MIN_WAIT, MAX_WAIT)
    }

    fn keyframe_interval(&self) -> Duration {
        (self.rtt * 2).max(MIN_KEYFRAME_INTERVAL)
    }

    /// Takes one packet.
    pub fn insert(&mut self, now: Instant, packet: RtpIn<'_>) {
        self.stats.packets += 1;
        self.first_packet.get_or_insert(now);
        if let Some(highest) = self.highest
            && extend_sequence(Some(highest), packet.sequence_number).abs_diff(highest) > RESET_DISTANCE
        {
            tracing::debug!(highest, seq = packet.sequence_number, "sequence jumped; starting over");
            self.restart(now);
        }
        let seq = extend_sequence(self.highest, packet.sequence_number);
        if seq < self.floor || self.packets.contains_key(&seq) {
            self.stats.duplicates += 1;
            return;
        }
        if self.missing.remove(&seq).is_some() {
            self.stats.recovered += 1;
        }
        match self.highest {
            Some(highest) if seq < highest => self.stats.reordered += 1,
            Some(highest) if seq - highest > MAX_NACKED_GAP => {
                // An outage, not a loss: asking for every packet would only flood the sender.
                tracing::debug!(gap = seq - highest, "long gap; skipping to a keyframe");
                self.highest = Some(seq);
                self.jitter.forget_last();
                self.drop_below(seq);
                self.lose(now);
            }
            Some(highest) => {
                for gap in highest + 1..seq {
                    if gap >= self.floor {
                        self.missing.insert(
                            gap,
                            Missing {
                                noticed: now,
                                last_nack: now,
                                nacks: 1,
                            },
                        );
                        self.nacks_due.push(gap as u16);
                        self.stats.nacked += 1;
                    }
                }
                self.highest = Some(seq);
                self.jitter.update(now, packet.timestamp);
            }
            None => {
                // Packets sent just before this one may still come (reordered).
                self.highest = Some(seq);
                self.floor = seq.saturating_sub(MAX_NACKED_GAP);
                self.jitter.update(now, packet.timestamp);
            }
        }
        self.packets.insert(
            seq,
            Packet {
                timestamp: packet.timestamp,
                marker: packet.marker,
                payload: packet.payload.to_vec(),
                arrived: now,
            },
        );
        if self.packets.len() > MAX_PACKETS {
            tracing::debug!("receive buffer full; skipping to a keyframe");
            self.lose(now);
            if let Some((&oldest, _)) = self.packets.first_key_value() {
                self.drop_below(oldest + 1);
            }
        }
    }

    /// The decoder lost its place (e.g. it fell behind and a frame was dropped): start again
    /// at the next keyframe.
    pub fn lost_sync(&mut self, now: Instant) {
        self.lose(now);
    }

    /// Everything since the last frame handed out is undecodable: wait for a keyframe and ask
    /// for one now.
    fn lose(&mut self, now: Instant) {
        self.next = None;
        let interval = self.keyframe_interval();
        if self
            .last_keyframe_request
            .is_none_or(|at| now.saturating_duration_since(at) >= interval)
        {
            self.keyframe_wanted = true;
        }
    }

    fn restart(&mut self, now: Instant) {
        let dropped = self.packets.len() as u64;
        self.stats.lost += self.missing.len() as u64;
        self.packets.clear();
        self.missing.clear();
        self.highest = None;
        self.next = None;
        self.floor = 0;
        self.jitter.forget_last();
        if dropped > 0 {
            self.stats.frames_dropped += 1;
        }
        self.lose(now);
    }

    /// Forgets every packet below `seq`.
    fn drop_below(&mut self, seq: u64) {
        if seq <= self.floor {
            return;
        }
        let kept = self.packets.split_off(&seq);
        let mut dropped_timestamps = 0u64;
        let mut last_ts = None;
        for packet in self.packets.values() {
            if last_ts != Some(packet.timestamp) {
                dropped_timestamps += 1;
                last_ts = Some(packet.timestamp);
            }
        }
        self.stats.frames_dropped += dropped_timestamps;
        self.packets = kept;
        let still_missing = self.missing.split_off(&seq);
        self.stats.lost += self.missing.len() as u64;
        self.missing = still_missing;
        self.floor = seq;
    }

    /// The next thing to do, if any is due at `now`.
    pub fn poll(&mut self, now: Instant) -> Option<ReceiveOutput> {
        if !self.nacks_due.is_empty() {
            return Some(ReceiveOutput::Nack(std::mem::take(&mut self.nacks_due)));
        }
        self.expire(now);
        if !self.nacks_due.is_empty() {
            return Some(ReceiveOutput::Nack(std::mem::take(&mut self.nacks_due)));
        }
        if let Some(frame) = self.next_frame() {
            return Some(ReceiveOutput::Frame(frame));
        }
        if self.next.is_none() && !self.keyframe_wanted {
            // Nothing decodable yet: ask for a keyframe once the first one is overdue.
            let overdue = match self.last_keyframe_request {
                Some(at) => now.saturating_duration_since(at) >= self.keyframe_interval(),
                None => self
                    .first_packet
                    .is_some_and(|first| now.saturating_duration_since(first) >= FIRST_KEYFRAME_GRACE),
            };
            self.keyframe_wanted = overdue && !self.packets.is_empty();
        }
        if self.keyframe_wanted {
            self.keyframe_wanted = false;
            self.last_keyframe_request = Some(now);
            self.stats.keyframe_requests += 1;
            return Some(ReceiveOutput::RequestKeyframe);
        }
        None
    }

    /// When [`poll`](Self::poll) next has something to do without a new packet.
    pub fn next_timeout(&self) -> Option<Instant> {
        let renack = self.renack_interval();
        let wait = self.max_wait();
        let missing = self
            .missing
            .values()
            .map(|m| {
                if m.nacks < MAX_NACKS {
                    (m.last_nack + renack).min(m.noticed + wait)
                } else {
                    m.noticed + wait
                }
            })
            .min();
        let keyframe = if self.next.is_none() && !self.packets.is_empty() {
            match self.last_keyframe_request {
                Some(at) => Some(at + self.keyframe_interval()),
                None => self.first_packet.map(|first| first + FIRST_KEYFRAME_GRACE),
            }
        } else {
            None
        };
        match (missing, keyframe) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// NACKs again what is still missing, and gives up on what waited too long.
    fn expire(&mut self, now: Instant) {
        let renack = self.renack_interval();
        let wait = self.max_wait();
        let mut given_up = None;
        for (&seq, missing) in &mut self.missing {
            if now.saturating_duration_since(missing.noticed) >= wait {
                given_up = Some(seq);
            } else if missing.nacks < MAX_NACKS && now.saturating_duration_since(missing.last_nack) >= renack {
                missing.nacks += 1;
                missing.last_nack = now;
                self.nacks_due.push(seq as u16);
                self.stats.nacked += 1;
            }
        }
        if let Some(seq) = given_up {
            // Every frame up to the newest packet given up is lost; so are those that depend on it.
            tracing::debug!(seq, "packet given up; waiting for a keyframe");
            self.drop_below(seq + 1);
            self.lose(now);
        }
    }

    /// The next complete, decodable frame, if there is one.
    fn next_frame(&mut self) -> Option<EncodedFrame> {
        if let Some(start) = self.next {
            if let Some(end) = self.complete_from(start) {
                return Some(self.take_frame(start, end));
            }
            // Stuck on an incomplete frame: a complete keyframe further on ends the wait.
            let after = self.packets.range(start + 1..).next().map(|(&s, _)| s)?;
            let (key_start, key_end) = self.find_keyframe(after)?;
            self.drop_below(key_start);
            // The keyframe answers any request still to go out.
            self.keyframe_wanted = false;
            return Some(self.take_frame(key_start, key_end));
        }
        let first = self.packets.first_key_value().map(|(&s, _)| s)?;
        let (key_start, key_end) = self.find_keyframe(first)?;
        self.drop_below(key_start);
        // The keyframe answers any request still to go out.
        self.keyframe_wanted = false;
        Some(self.take_frame(key_start, key_end))
    }

    /// If the frame starting at `start` is complete, its last packet.
    fn complete_from(&self, start: u64) -> Option<u64> {
        let timestamp = self.packets.get(&start)?.timestamp;
        let mut seq = start;
        loop {
            let packet = self.packets.get(&seq)?;
            if packet.timestamp != timestamp {
                // The next frame began without a marker on this one: it ended before.
                return (seq > start).then_some(seq - 1);
            }
            if packet.marker {
                return Some(seq);
            }
            seq += 1;
        }
    }

    /// The first complete keyframe at or after `from`: its first and last packet.
    fn find_keyframe(&self, from: u64) -> Option<(u64, u64)> {
        let mut candidates = self.packets.range(from..).filter(|(seq, packet)| {
            // A frame starts where the packet before is another frame's, or (when that one is
            // missing) with a NAL unit that only ever opens an access unit (SEI, SPS, AUD):
            // never at a slice, which may be the second of its picture.
            match self.packets.get(&(**seq - 1)) {
                Some(before) => before.timestamp != packet.timestamp || before.marker,
                None => opens_access_unit(&packet.payload),
            }
        });
        candidates.find_map(|(&start, _)| {
            let end = self.complete_from(start)?;
            self.packets
                .range(start..=end)
                .any(|(_, p)| has_keyframe_nal(&p.payload))
                .then_some((start, end))
        })
    }

    fn take_frame(&mut self, start: u64, end: u64) -> EncodedFrame {
        let mut data = Vec::new();
        let mut keyframe = false;
        let mut completed = None;
        let mut timestamp = 0;
        let mut broken = false;
        for (_, packet) in self.packets.range(start..=end) {
            keyframe |= has_keyframe_nal(&packet.payload);
            timestamp = packet.timestamp;
            completed = Some(packet.arrived);
            broken |= !depacketize(&packet.payload, &mut data);
        }
        self.drop_below(end + 1);
        // drop_below counted this frame as dropped; it was not.
        self.stats.frames_dropped = self.stats.frames_dropped.saturating_sub(1);
        self.next = Some(end + 1);
        if broken {
            // Unknown packetization: nothing after this can be trusted until a keyframe.
            self.next = None;
            self.keyframe_wanted = true;
            data.clear();
        }
        self.stats.frames += 1;
        EncodedFrame {
            data,
            timestamp,
            keyframe,
            completed: completed.unwrap_or_else(Instant::now),
        }
    }
}

/// RFC 3550 interarrival jitter of one RTP stream: how much the spacing of arrivals differs
/// from the spacing of the packets' timestamps, smoothed.
#[derive(Debug)]
pub(crate) struct Jitter {
    clock_rate: f64,
    /// In seconds.
    value: f64,
    last: Option<(Instant, u32)>,
}

impl Jitter {
    pub(crate) fn new(clock_rate: u32) -> Jitter {
        Jitter {
            clock_rate: f64::from(clock_rate),
            value: 0.0,
            last: None,
        }
    }

    /// Takes the newest packet's arrival and timestamp (not a late one's).
    pub(crate) fn update(&mut self, now: Instant, timestamp: u32) {
        if let Some((then, then_ts)) = self.last {
            let arrival = now.saturating_duration_since(then).as_secs_f64();
            let sent = f64::from(timestamp.wrapping_sub(then_ts) as i32) / self.clock_rate;
            let d = (arrival - sent).abs();
            // A second's difference is a pause or a restart, not jitter.
            if d < 1.0 {
                self.value += (d - self.value) / 16.0;
            }
        }
        self.last = Some((now, timestamp));
    }

    /// Starts over at the next packet (the stream restarted), keeping the estimate.
    pub(crate) fn forget_last(&mut self) {
        self.last = None;
    }

    pub(crate) fn get(&self) -> Duration {
        Duration::from_secs_f64(self.value)
    }
}

/// A 16-bit RTP sequence number made monotonic: the extended number nearest `highest`
/// (the newest so far), or a fresh start well away from zero.
pub(crate) fn extend_sequence(highest: Option<u64>, seq: u16) -> u64 {
    match highest {
        None => u64::from(seq) + (1 << 32),
        Some(highest) => highest.wrapping_add_signed(i64::from(seq.wrapping_sub(highest as u16) as i16)),
    }
}

const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// Appends the NAL units of one RTP payload (RFC 6184: single NAL, STAP-A, FU-A) in Annex B
/// form. False for a payload it cannot read.
fn depacketize(payload: &[u8], out: &mut Vec<u8>) -> bool {
    let Some(&first) = payload.first() else {
        // Padding only.
        return true;
    };
    match first & 0x1f {
        1..=23 => {
            out.extend_from_slice(&START_CODE);
            out.extend_from_slice(payload);
            true
        }
        24 => {
            let mut rest = &payload[1..];
            while rest.len() >= 2 {
                let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                let Some(nal) = rest.get(2..2 + len) else {
                    return false;
                };
                out.extend_from_slice(&START_CODE);
                out.extend_from_slice(nal);
                rest = &rest[2 + len..];
            }
            rest.is_empty()
        }
        28 => {
            let Some(&header) = payload.get(1) else {
                return false;
            };
            if header & 0x80 != 0 {
                out.extend_from_slice(&START_CODE);
                out.push((first & 0xe0) | (header & 0x1f));
            }
            out.extend_from_slice(&payload[2..]);
            true
        }
        _ => false,
    }
}

/// Whether a payload begins with a NAL unit that can only open an access unit: an SEI, a
/// sequence parameter set or an access unit delimiter (alone or first in a STAP-A).
fn opens_access_unit(payload: &[u8]) -> bool {
    let opens = |nal: u8| matches!(nal & 0x1f, 6 | 7 | 9);
    match payload.first().map(|b| b & 0x1f) {
        Some(24) => payload.get(3).is_some_and(|&nal| opens(nal)),
        Some(nal) => opens(nal),
        None => false,
    }
}

/// Whether a payload carries (the start of) an IDR slice or a sequence parameter set.
fn has_keyframe_nal(payload: &[u8]) -> bool {
    let is_key = |nal: u8| matches!(nal & 0x1f, 5 | 7);
    match payload.first().map(|b| b & 0x1f) {
        Some(24) => {
            let mut rest = &payload[1..];
            while rest.len() >= 3 {
                let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                if is_key(rest[2]) {
                    return true;
                }
                rest = rest.get(2 + len..).unwrap_or_default();
            }
            false
        }
        Some(28) => payload.get(1).is_some_and(|h| h & 0x80 != 0 && is_key(*h)),
        Some(t) => is_key(t),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test packet: sequence number, timestamp, marker, payload.
    type Pkt = (u16, u32, bool, Vec<u8>);

    /// Packets of one frame: a keyframe starts with SPS, PPS and an IDR in FU-A pieces; a
    /// P-frame is FU-A pieces of a non-IDR slice. `parts` >= 1.
    fn frame(first_seq: u16, timestamp: u32, key: bool, parts: usize) -> Vec<Pkt> {
        let mut payloads = Vec::new();
        if key {
            payloads.push(vec![0x67, 0x42, 0xe0, 0x1f]);
            payloads.push(vec![0x68, 0xce, 0x3c, 0x80]);
        }
        let nal_type = if key { 5 } else { 1 };
        for i in 0..parts {
            let mut header = nal_type;
            if i == 0 {
                header |= 0x80;
            }
            if i + 1 == parts {
                header |= 0x40;
            }
            payloads.push(vec![0x7c, header, i as u8, 0xaa]);
        }
        let n = payloads.len();
        payloads
            .into_iter()
            .enumerate()
            .map(|(i, p)| (first_seq.wrapping_add(i as u16), timestamp, i + 1 == n, p))
            .collect()
    }

    /// A stream of `count` frames (the first a keyframe), each `parts` FU-A pieces.
    fn stream(first_seq: u16, count: usize, parts: usize) -> Vec<Vec<Pkt>> {
        let mut seq = first_seq;
        (0..count)
            .map(|i| {
                let f = frame(seq, 3000 * i as u32, i == 0, parts);
                seq = seq.wrapping_add(f.len() as u16);
                f
            })
            .collect()
    }

    fn feed(buffer: &mut VideoReceiveBuffer, now: Instant, packet: &Pkt) {
        buffer.insert(
            now,
            RtpIn {
                sequence_number: packet.0,
                timestamp: packet.1,
                marker: packet.2,
                payload: &packet.3,
            },
        );
    }

    #[derive(Debug, Default)]
    struct Drained {
        frames: Vec<EncodedFrame>,
        nacks: Vec<u16>,
        keyframe_requests: usize,
    }

    fn drain(buffer: &mut VideoReceiveBuffer, now: Instant) -> Drained {
        let mut out = Drained::default();
        while let Some(output) = buffer.poll(now) {
            match output {
                ReceiveOutput::Frame(f) => out.frames.push(f),
                ReceiveOutput::Nack(seqs) => out.nacks.extend(seqs),
                ReceiveOutput::RequestKeyframe => out.keyframe_requests += 1,
            }
        }
        out
    }

    #[test]
    fn frames_in_order_leave_whole_and_at_once() {
        let t0 = Instant::now();
        let mut buffer = VideoReceiveBuffer::new();
        let frames = stream(100, 5, 3);
        let mut out = Vec::new();
        for f in &frames {
            for p in f {
                feed(&mut buffer, t0, p);
            }
            out.extend(drain(&mut buffer, t0).frames);
        }
        assert_eq!(out.len(), 5);
        assert!(out[0].keyframe && !out[1].keyframe);
        // SPS, PPS and one IDR reassembled from its pieces.
        assert_eq!(
            out[0].data,
            [
                &START_CODE[..],
                &[0x67, 0x42, 0xe0, 0x1f],
                &START_CODE,
                &[0x68, 0xce, 0x3c, 0x80],
                &START_CODE,
                &[0x65, 0, 0xaa, 1, 0xaa, 2, 0xaa]
            ]
            .concat()
        );
        assert_eq!(buffer.stats().nacked, 0);
    }

    #[test]
    fn reordered_packets_cost_nothing_but_a_nack() {
        let t0 = Instant::now();
        let mut buffer = VideoReceiveBuffer::new();
        let frames = stream(65_530, 4, 4);
        let mut packets: Vec<_> = frames.iter().flatten().cloned().collect();
        // Swap neighbours all along (and across the sequence number wrap).
        for pair in packets.chunks_mut(2) {
            pair.reverse();
        }
        let mut out = Vec::new();
        for p in &packets {
            feed(&mut buffer, t0, p);
            out.extend(drain(&mut buffer, t0).frames);
        }
        assert_eq!(out.len(), 4);
        assert_eq!(buffer.stats().frames_dropped, 0);
        assert_eq!(buffer.stats().recovered, buffer.stats().nacked);
    }

    #[test]
    fn a_gap_is_nacked_at_once_then_again_after_a_round_trip() {
        let t0 = Instant::now();
        let mut buffer = VideoReceiveBuffer::new();
        buffer.set_rtt(Duration::from_millis(40));
        let frames = stream(10, 3, 3);
        let lost = frames[1][1].0;
        for p in frames.iter().flatten().filter(|p| p.0 != lost) {
            feed(&mut buffer, t0, p);
        }
        let first = drain(&mut buffer, t0);
        assert_eq!(first.nacks, vec![lost]);
        assert_eq!(first.frames.len(), 1, "only the frame before the gap leaves");
        assert!(drain(&mut buffer, t0 + Duration::from_millis(20)).nacks.is_empty());
        let wake = buffer.next_timeout().expect("a NACK retry is due");
        assert!(wake <= t0 + Duration::from_millis(60), "{:?}", wake - t0);
        assert_eq!(drain(&mut buffer, wake).nacks, vec![lost]);

        // The resend arrives: both waiting frames leave, nothing is asked.
        let resent = frames[1][1].clone();
        feed(&mut buffer, wake + Duration::from_millis(30), &resent);
        let after = drain(&mut buffer, wake + Duration::from_millis(30));
        assert_eq!(after.frames.len(), 2);
        assert_eq!(after.keyframe_requests, 0);
        assert_eq!(buffer.stats().recovered, 1);
    }

    #[test]
    fn an_unrecovered_loss_skips_to_the_next_keyframe_and_asks_for_one() {
        let t0 = Instant::now();
        let mut buffer = VideoReceiveBuffer::new();
        buffer.set_rtt(Duration::from_millis(20));
        let frames = stream(1000, 4, 2);
        let lost = frames[1][0].0;
        for p in frames.iter().flatten().filter(|p| p.0 != lost) {
            feed(&mut buffer, t0, p);
        }
        assert_eq!(drain(&mut buffer, t0).frames.len(), 1);
        let give_up = t0 + buffer.max_wait();
        let out = drain(&mut buffer, give_up);
        assert!(out.frames.is_empty(), "P-frames after the loss are never decoded");
        assert_eq!(out.keyframe_requests, 1);
        assert_eq!(buffer.stats().lost, 1);
        // Not asked again within a round trip or two.
        assert_eq!(
            drain(&mut buffer, give_up + Duration::from_millis(10)).keyframe_requests,
            0
        );

        // The keyframe comes: playback resumes there and goes on.
        let next = frames[3].last().expect("packets").0.wrapping_add(1);
        let key = frame(next, 4 * 3000, true, 2);
        let p = frame(next + key.len() as u16, 5 * 3000, false, 2);
        for packet in key.iter().chain(&p) {
            feed(&mut buffer, give_up, packet);
        }
        let resumed = drain(&mut buffer, give_up);
        assert_eq!(resumed.frames.len(), 2);
        assert!(resumed.frames[0].keyframe);
    }

    #[test]
    fn a_complete_keyframe_ends_the_wait_for_a_stuck_frame() {
        let t0 = Instant::now();
        let mut buffer = VideoReceiveBuffer::new();
        let frames = stream(7, 2, 2);
        let lost = frames[1][1].0;
        for p in frames.iter().flatten().filter(|p| p.0 != lost) {
            feed(&mut buffer, t0, p);
        }
        let key = frame(lost + 1, 2 * 3000, true, 2);
        for p in &key {
            feed(&mut buffer, t0, p);
        }
        let out = drain(&mut buffer, t0);
        assert_eq!(out.frames.len(), 2, "the first keyframe, then the new one");
        assert!(out.frames[1].keyframe);
        assert_eq!(buffer.stats().frames_dropped, 1);
    }

    #[test]
    fn a_stream_joined_mid_way_waits_for_a_keyframe_and_asks_for_one() {
        let t0 = Instant::now();
        let mut buffer = VideoReceiveBuffer::new();
        let p = frame(500, 0, false, 2);
        for packet in &p {
            feed(&mut buffer, t0, packet);
        }
        assert!(drain(&mut buffer, t0).frames.is_empty());
        let later = t0 + FIRST_KEYFRAME_GRACE;
        assert_eq!(buffer.next_timeout(), Some(later));
        assert_eq!(drain(&mut buffer, later).keyframe_requests, 1);
        let key = frame(502, 3000, true, 1);
        for packet in &key {
            feed(&mut buffer, later, packet);
        }
        let out = drain(&mut buffer, later);
        assert_eq!(out.frames.len(), 1);
        assert!(out.frames[0].keyframe);
    }

    #[test]
    fn the_round_trip_paces_nacks_and_bounds_the_wait() {
        let t0 = Instant::now();
        let mut buffer = VideoReceiveBuffer::new();
        buffer.set_rtt(Duration::from_millis(200));
        let frames = stream(1, 3, 3);
        let (lost, reordered) = (frames[1][1].clone(), frames[2][1].clone());
        for p in frames.iter().flatten().filter(|p| p.0 != lost.0 && p.0 != reordered.0) {
            feed(&mut buffer, t0, p);
        }
        assert_eq!(drain(&mut buffer, t0).nacks, vec![lost.0, reordered.0]);
        // A reordered packet answers at once: that says nothing of the round trip.
        feed(&mut buffer, t0 + Duration::from_millis(1), &reordered);
        assert_eq!(buffer.rtt(), Duration::from_millis(200));
        let again = buffer.next_timeout().expect("a NACK retry is due");
        assert!(again >= t0 + Duration::from_millis(250), "{:?}", again - t0);
        assert!(buffer.max_wait() >= Duration::from_millis(620));
    }

    #[test]
    fn a_keyframe_missing_its_first_packets_is_not_handed_out() {
        let t0 = Instant::now();
        let mut buffer = VideoReceiveBuffer::new();
        // A keyframe whose SPS and PPS are missing: its IDR slice alone is not a start.
        let key = frame(100, 0, true, 3);
        for p in key.iter().skip(2) {
            feed(&mut buffer, t0, p);
        }
        assert!(drain(&mut buffer, t0).frames.is_empty());
        // The SPS and PPS come late: now it is whole.
        for p in key.iter().take(2) {
            feed(&mut buffer, t0, p);
        }
        let out = drain(&mut buffer, t0);
        assert_eq!(out.frames.len(), 1);
        assert!(out.frames[0].data.starts_with(&[0, 0, 0, 1, 0x67]));
    }

    #[test]
    fn an_outage_is_skipped_not_nacked_packet_by_packet() {
        let t0 = Instant::now();
        let mut buffer = VideoReceiveBuffer::new();
        for p in &frame(10, 0, true, 2) {
            feed(&mut buffer, t0, p);
        }
        assert_eq!(drain(&mut buffer, t0).frames.len(), 1);
        // 1000 packets later (a second or more without media), a P-frame: nothing to NACK.
        for p in &frame(1014, 90_000, false, 2) {
            feed(&mut buffer, t0 + Duration::from_secs(1), p);
        }
        let out = drain(&mut buffer, t0 + Duration::from_secs(1));
        assert!(out.nacks.is_empty());
        assert!(out.frames.is_empty());
        assert_eq!(out.keyframe_requests, 1);
    }

    #[test]
    fn junk_never_panics() {
        let t0 = Instant::now();
        let mut buffer = VideoReceiveBuffer::new();
        let junk: [&[u8]; 6] = [&[], &[24], &[24, 0, 9, 5], &[28], &[28, 0x85], &[0x1f, 1, 2]];
        for (i, payload) in junk.iter().enumerate() {
            buffer.insert(
                t0,
                RtpIn {
                    sequence_number: (i * 7919) as u16,
                    timestamp: i as u32,
                    marker: i % 2 == 0,
                    payload,
                },
            );
            drain(&mut buffer, t0 + Duration::from_secs(i as u64));
        }
    }
}
