//! Frame timing along the media path. Every published H.264 access unit carries its capture
//! time (microseconds since the UNIX epoch) in a small SEI message (user data unregistered,
//! under Holoroom's UUID), so anyone on the path (the SFU, a player) can tell how old a frame is
//! without decoding it. Decoders skip SEI they do not know.
//!
//! [`FrameProbe`] is a hook that components call at each stage a frame passes, keyed by that
//! capture time: benchmarks use it to break glass-to-glass latency down by stage.

use std::sync::Arc;

/// Identifies Holoroom's capture-time SEI among other user data.
pub const CAPTURE_TIME_UUID: [u8; 16] = [
    0x68, 0x6f, 0x6c, 0x6f, 0x72, 0x6f, 0x6f, 0x6d, 0x2d, 0x63, 0x61, 0x70, 0x74, 0x75, 0x72, 0x65,
];

const NAL_SEI: u8 = 6;
const NAL_STAP_A: u8 = 24;
const NAL_FU_A: u8 = 28;
const SEI_USER_DATA_UNREGISTERED: u8 = 5;

/// An Annex B SEI NAL unit (start code included) carrying `capture_us`; put it before a frame.
pub fn capture_time_sei(capture_us: u64) -> Vec<u8> {
    let mut rbsp = vec![SEI_USER_DATA_UNREGISTERED, 24];
    rbsp.extend_from_slice(&CAPTURE_TIME_UUID);
    rbsp.extend_from_slice(&capture_us.to_be_bytes());
    rbsp.push(0x80); // rbsp trailing bits
    let mut nal = vec![0, 0, 0, 1, NAL_SEI];
    // Emulation prevention: no 00 00 0x (x <= 3) may appear inside a NAL unit.
    let mut zeros = 0;
    for byte in rbsp {
        if zeros >= 2 && byte <= 3 {
            nal.push(3);
            zeros = 0;
        }
        nal.push(byte);
        zeros = if byte == 0 { zeros + 1 } else { 0 };
    }
    nal
}

/// The capture time in one NAL unit (header byte first, no start code), if it is ours.
pub fn nal_capture_time(nal: &[u8]) -> Option<u64> {
    if nal.first()? & 0x1f != NAL_SEI {
        return None;
    }
    // Undo emulation prevention on just enough bytes: type, size, UUID, the value.
    let mut rbsp = Vec::with_capacity(26);
    let mut zeros = 0;
    for &byte in &nal[1..] {
        if zeros >= 2 && byte == 3 {
            zeros = 0;
            continue;
        }
        rbsp.push(byte);
        zeros = if byte == 0 { zeros + 1 } else { 0 };
        if rbsp.len() == 26 {
            break;
        }
    }
    if rbsp.len() < 26 || rbsp[0] != SEI_USER_DATA_UNREGISTERED || rbsp[1] != 24 || rbsp[2..18] != CAPTURE_TIME_UUID {
        return None;
    }
    Some(u64::from_be_bytes(rbsp[18..26].try_into().ok()?))
}

/// The capture time in an Annex B access unit, if it carries one.
pub fn access_unit_capture_time(annex_b: &[u8]) -> Option<u64> {
    let mut rest = annex_b;
    while let Some(start) = rest.windows(3).position(|w| w == [0, 0, 1]) {
        rest = &rest[start + 3..];
        let end = rest.windows(3).position(|w| w == [0, 0, 1]).unwrap_or(rest.len());
        if let Some(time) = nal_capture_time(&rest[..end]) {
            return Some(time);
        }
        rest = &rest[end..];
    }
    None
}

/// The capture time in an RTP H.264 payload (RFC 6184: a single NAL unit or a STAP-A), if
/// this packet carries it. Fragments never do: the SEI is far smaller than a packet.
pub fn rtp_capture_time(payload: &[u8]) -> Option<u64> {
    match payload.first()? & 0x1f {
        NAL_SEI => nal_capture_time(payload),
        NAL_STAP_A => {
            let mut rest = &payload[1..];
            while rest.len() >= 2 {
                let size = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                let nal = rest.get(2..2 + size)?;
                if let Some(time) = nal_capture_time(nal) {
                    return Some(time);
                }
                rest = &rest[2 + size..];
            }
            None
        }
        NAL_FU_A => None,
        _ => None,
    }
}

/// Where a frame is on its way from one participant to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FrameStage {
    /// Encoded by the publisher, about to be packetized.
    Encoded,
    /// Its first packet reached the SFU.
    SfuIn,
    /// Its first packet was handed to every subscriber's connection.
    SfuOut,
    /// Reassembled by a player.
    Received,
    /// Decoded by a player.
    Decoded,
}

/// Called with (capture time in µs, stage) as frames pass; measuring only, never on by default.
#[derive(Clone)]
pub struct FrameProbe(pub Arc<dyn Fn(u64, FrameStage) + Send + Sync>);

impl FrameProbe {
    pub fn mark(&self, capture_us: u64, stage: FrameStage) {
        (self.0)(capture_us, stage);
    }
}

impl std::fmt::Debug for FrameProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FrameProbe")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capture_time_survives_the_round_trip_whatever_its_bytes() {
        for time in [0u64, 1, 0x0000_0300_0000_0001, 1_700_000_000_123_456, u64::MAX] {
            let nal = capture_time_sei(time);
            assert_eq!(nal_capture_time(&nal[4..]), Some(time), "{time:#x}");
            assert!(
                !nal[5..]
                    .windows(3)
                    .any(|w| w[0] == 0 && w[1] == 0 && w[2] <= 3 && w[2] != 3),
                "no start code emulation in {nal:?}"
            );
        }
    }

    #[test]
    fn it_is_found_in_an_access_unit_and_in_rtp_packets() {
        let slice = [0, 0, 0, 1, 0x65, 0x88, 0x84, 0x00, 0x33];
        let mut unit = capture_time_sei(42);
        unit.extend_from_slice(&slice);
        assert_eq!(access_unit_capture_time(&unit), Some(42));
        assert_eq!(access_unit_capture_time(&slice), None);

        let sei = &capture_time_sei(7)[4..];
        assert_eq!(rtp_capture_time(sei), Some(7), "a single NAL unit packet");
        let mut stap = vec![NAL_STAP_A];
        for nal in [&[0x67u8, 1, 2][..], sei] {
            stap.extend_from_slice(&(nal.len() as u16).to_be_bytes());
            stap.extend_from_slice(nal);
        }
        assert_eq!(rtp_capture_time(&stap), Some(7), "aggregated with the SPS");
        assert_eq!(rtp_capture_time(&[0x7c, 0x85, 1, 2]), None, "a fragment");
    }

    #[test]
    fn foreign_or_broken_sei_is_ignored() {
        let mut other = capture_time_sei(9);
        other[7] ^= 0xff; // a different UUID
        assert_eq!(nal_capture_time(&other[4..]), None);
        let short = capture_time_sei(9);
        assert_eq!(nal_capture_time(&short[4..12]), None);
        assert_eq!(
            rtp_capture_time(&[NAL_STAP_A, 0, 200, 6]),
            None,
            "a STAP-A that lies about sizes"
        );
        assert_eq!(rtp_capture_time(&[]), None);
    }
}
