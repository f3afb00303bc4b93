//! Fuzz harnesses: one function per target, for everything Holoroom reads from the network or
//! from files. Each takes arbitrary bytes and must neither panic nor hang; where a reading has
//! a property beyond that (a message read back reads the same), it is asserted.
//!
//! `fuzz/` (cargo-fuzz, `make fuzz`) drives these with libFuzzer; `tests/regressions.rs` replays
//! every input kept in `regressions/<target>/` in the normal tests.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use holoroom_engine::codec::H264Decoder;
use holoroom_engine::devices::camera;
use holoroom_engine::media::{ReceiveOutput, RtpIn, VideoReceiveBuffer, Y4mClip};
use holoroom_protocol::{ClientMessage, RoomId, ServerMessage, StreamId, VideoGrant, timing};
use holoroom_server::rooms::RoomStream;
use holoroom_server::sfu::offer::{OfferUse, check_offer};
use holoroom_server::sfu::{Sfu, SfuConfig, starts_keyframe};
use holoroom_server::{SigningKey, TokenKeys};

/// A harness: arbitrary bytes in, a panic only for a bug.
pub type Harness = fn(&[u8]);

/// Every target, by name (the names of `fuzz/fuzz_targets/*.rs` and `regressions/*/`).
pub const TARGETS: &[(&str, Harness)] = &[
    ("signaling", signaling),
    ("token", token),
    ("offer", offer),
    ("capture_time", capture_time),
    ("h264_receive", h264_receive),
    ("y4m", y4m),
    ("camera", camera),
    ("sfu", sfu),
];

/// Messages on the signaling socket, both ways: whatever parses serializes to text that
/// parses to the same message. A number too large for an `f32` reads as infinity (the server
/// refuses such a pose after parsing) and is written as `null`, which does not read back:
/// such messages are only parsed.
pub fn signaling(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(message) = ClientMessage::parse(text) {
        let json = serde_json::to_string(&message).expect("messages serialize");
        let again = ClientMessage::parse(&json);
        assert!(
            matches!(&again, Ok(m) if *m == message) || json.contains("null"),
            "{message:?} reads back as {again:?}"
        );
    }
    if let Ok(message) = ServerMessage::parse(text) {
        let json = message.to_json();
        let again = ServerMessage::parse(&json);
        assert!(
            matches!(&again, Ok(m) if *m == message) || json.contains("null"),
            "{message:?} reads back as {again:?}"
        );
    }
}

/// A token as a login carries it. Nothing but a token this process signed verifies.
pub fn token(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let keys = TokenKeys::new(SigningKey::new("k1", b"fuzzing-secret-0123456789".to_vec()));
    let now = 1_800_000_000;
    assert!(
        keys.verify(text, now).is_err(),
        "a token nobody signed was accepted: {text:?}"
    );
    // A real token with these bytes in its name (when they are a name a server accepts)
    // still round-trips.
    if holoroom_protocol::validate_user_name(text).is_err() {
        return;
    }
    let user = holoroom_protocol::UserId::new("u").expect("valid");
    let minted = keys.mint_at(now, VideoGrant::participant("r"), &user, Some(text.to_owned()), 60);
    let claims = keys.verify(&minted, now).expect("a token just minted verifies");
    assert_eq!(claims.name.as_deref(), Some(text));
}

/// An SDP offer as a publish or play request carries it.
pub fn offer(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = check_offer(text, OfferUse::Publish);
    let _ = check_offer(text, OfferUse::Play);
    let _ = holoroom_server::sfu::offer::simulcast_ssrcs(text);
}

/// The capture-time SEI, in a NAL unit, an access unit and an RTP payload.
pub fn capture_time(data: &[u8]) {
    let _ = timing::nal_capture_time(data);
    let _ = timing::access_unit_capture_time(data);
    let _ = timing::rtp_capture_time(data);
    let _ = starts_keyframe(data);
    // What we write, we read.
    if data.len() >= 8 {
        let us = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
        let sei = timing::capture_time_sei(us);
        assert_eq!(timing::nal_capture_time(&sei[4..]), Some(us), "{us}");
    }
}

/// Reads little-endian fields off the front of a fuzz input.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.u8()?, self.u8()?]))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes([self.u8()?, self.u8()?, self.u8()?, self.u8()?]))
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        taken
    }
}

/// RTP packets of H.264 into the receive buffer (reordering, loss, access-unit assembly, the
/// keyframe check), with time passing between them; whatever it hands out goes to the decoder.
pub fn h264_receive(data: &[u8]) {
    let mut input = Input(data);
    let mut buffer = VideoReceiveBuffer::new();
    let mut decoder = H264Decoder::new().ok();
    let start = Instant::now();
    let mut now = start;
    let mut frames = 0;
    while let (Some(seq), Some(timestamp), Some(flags), Some(len)) = (input.u16(), input.u32(), input.u8(), input.u8())
    {
        now += Duration::from_millis(u64::from(flags >> 2));
        let payload = input.bytes(usize::from(len));
        buffer.insert(
            now,
            RtpIn {
                sequence_number: seq,
                timestamp,
                marker: flags & 1 == 1,
                payload,
            },
        );
        if flags & 2 == 2 {
            buffer.lost_sync(now);
        }
        while let Some(output) = buffer.poll(now) {
            if let ReceiveOutput::Frame(frame) = output {
                frames += 1;
                // Decoding is slow; a few frames per input reach the decoder.
                if frames <= 4
                    && let Some(decoder) = decoder.as_mut()
                {
                    let _ = decoder.decode(&frame.data);
                }
            }
        }
        let _ = buffer.next_timeout();
    }
}

/// A Y4M clip file (the `--video` file source).
pub fn y4m(data: &[u8]) {
    let _ = Y4mClip::read("fuzz input", data);
}

/// A camera buffer in each format the capture reads, at a size named by the input.
pub fn camera(data: &[u8]) {
    use nokhwa::utils::FrameFormat;
    let mut input = Input(data);
    let (Some(kind), Some(width), Some(height)) = (input.u8(), input.u8(), input.u8()) else {
        return;
    };
    let format = match kind % 3 {
        0 => FrameFormat::YUYV,
        1 => FrameFormat::NV12,
        _ => FrameFormat::MJPEG,
    };
    let (width, height) = (u32::from(width) * 2, u32::from(height) * 2);
    if let Ok(frame) = camera::to_i420(format, width, height, input.0) {
        assert_eq!((frame.width, frame.height), (width, height));
    }
}

/// The relay's core fed datagrams, from a publisher's address, a subscriber's and strangers',
/// some dressed as STUN requests naming a real connection's ICE username, with time passing.
pub fn sfu(data: &[u8]) {
    let start = Instant::now();
    let public: SocketAddr = ([127, 0, 0, 1], 7882).into();
    let Ok(mut sfu) = Sfu::new(SfuConfig {
        public_addr: public,
        keyframe_interval: Duration::from_millis(500),
        connect_deadline: Duration::from_secs(15),
        dtls: Default::default(),
        probe: None,
    }) else {
        return;
    };
    let stream = RoomStream::new(
        &RoomId::new("r").expect("valid"),
        &StreamId::new("fuzz-cam").expect("valid"),
    );
    let publisher = client_offer(start, ([127, 0, 0, 2], 5000).into(), str0m::media::Direction::SendOnly);
    let subscriber = client_offer(start, ([127, 0, 0, 3], 5000).into(), str0m::media::Direction::RecvOnly);
    let (Some((pub_addr, pub_offer, pub_ufrag)), Some((sub_addr, sub_offer, _))) = (publisher, subscriber) else {
        return;
    };
    let Ok((_, answer)) = sfu.publish(start, &stream, "r/alice", &pub_offer) else {
        return;
    };
    let Some(relay_ufrag) = ice_ufrag(&answer) else { return };
    let username = format!("{relay_ufrag}:{pub_ufrag}");
    let _ = sfu.subscribe(start, 7, &stream, &sub_offer, None);
    let mut input = Input(data);
    let mut now = start;
    while let (Some(kind), Some(len)) = (input.u8(), input.u16()) {
        now += Duration::from_millis(u64::from(kind >> 3));
        let body = input.bytes(usize::from(len));
        let from = match kind & 3 {
            0 => pub_addr,
            1 => sub_addr,
            _ => SocketAddr::from(([10, 0, 0, kind], 4000 + u16::from(kind))),
        };
        let datagram = if kind & 4 == 4 {
            stun_request(&username, body)
        } else {
            body.to_vec()
        };
        sfu.handle_receive(now, from, public, &datagram);
        sfu.handle_timeout(now);
        while sfu.poll_transmit().is_some() {}
        while sfu.poll_notice().is_some() {}
    }
}

/// A client's offer (from str0m, as a browser or the engine would make one) with its host
/// candidate at `addr`, and the ICE username it expects the relay's checks to carry.
fn client_offer(
    now: Instant,
    addr: SocketAddr,
    direction: str0m::media::Direction,
) -> Option<(SocketAddr, String, String)> {
    use str0m::media::MediaKind;
    let mut rtc = str0m::Rtc::builder().build(now);
    rtc.add_local_candidate(str0m::Candidate::host(addr, "udp").ok()?);
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, direction, None, None, None);
    api.add_media(MediaKind::Audio, direction, None, None, None);
    let (offer, _) = api.apply()?;
    let sdp = offer.to_sdp_string();
    let ufrag = ice_ufrag(&sdp)?;
    Some((addr, sdp, ufrag))
}

fn ice_ufrag(sdp: &str) -> Option<String> {
    Some(
        sdp.lines()
            .find_map(|l| l.strip_prefix("a=ice-ufrag:"))?
            .trim()
            .to_owned(),
    )
}

/// A STUN binding request with a real connection's USERNAME (so the relay routes it to that
/// connection), then the fuzz bytes as its other attributes.
fn stun_request(username: &str, rest: &[u8]) -> Vec<u8> {
    let padded = username.len().div_ceil(4) * 4;
    let length = 4 + padded + rest.len();
    let mut packet = vec![0x00, 0x01];
    packet.extend_from_slice(&(length as u16).to_be_bytes());
    packet.extend_from_slice(&0x2112_a442u32.to_be_bytes());
    packet.extend_from_slice(b"fuzzfuzzfuzz");
    packet.extend_from_slice(&[0x00, 0x06]);
    packet.extend_from_slice(&(username.len() as u16).to_be_bytes());
    packet.extend_from_slice(username.as_bytes());
    packet.resize(20 + 4 + padded, 0);
    packet.extend_from_slice(rest);
    packet
}
