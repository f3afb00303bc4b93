//! The SFU repairs loss on both legs: a video packet lost between the SFU and a subscriber
//! is asked for again (NACK) and resent from the SFU's history (RTX); one lost between the
//! publisher and the SFU is NACKed to the publisher and its resend forwarded; keyframe
//! requests from many subscribers reach the publisher merged and paced. Driven in memory (the
//! SFU core is sans-IO) with real str0m peers on both ends and a virtual clock; the "network"
//! drops the datagrams each test chooses.

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use holoroom_protocol::StreamId;
use holoroom_server::sfu::{Sfu, SfuConfig};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc};

const SFU: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1)), 5000);
const VIDEO_PT: u8 = 108;

type Wire = VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>;

struct Peer {
    rtc: Rtc,
    addr: SocketAddr,
    timeout: Instant,
    video: Mid,
    /// Sequence numbers of the video packets received.
    received: BTreeSet<u64>,
    /// Keyframe requests received (a publisher).
    keyframe_requests: u64,
}

impl Peer {
    fn new(now: Instant, port: u16, direction: Direction) -> (Peer, String, SdpPendingOffer) {
        let addr = SocketAddr::from(([127, 0, 0, 2], port));
        let mut config = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .set_rtp_mode(true);
        config
            .codec_config()
            .add_h264(Pt::from(VIDEO_PT), Some(Pt::from(109)), true, 0x42e01f);
        let mut rtc = config.build(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
        let mut api = rtc.sdp_api();
        let video = api.add_media(MediaKind::Video, direction, None, None, None);
        api.add_media(MediaKind::Audio, direction, None, None, None);
        let (offer, pending) = api.apply().expect("an offer");
        let peer = Peer {
            rtc,
            addr,
            timeout: now,
            video,
            received: BTreeSet::new(),
            keyframe_requests: 0,
        };
        (peer, offer.to_sdp_string(), pending)
    }

    fn drain(&mut self, wire: &mut Wire) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => wire.push_back((self.addr, t.destination, t.contents.to_vec())),
                Ok(Output::Event(Event::RtpPacket(p))) if p.header.payload_type == Pt::from(VIDEO_PT) => {
                    self.received.insert(*p.seq_no);
                }
                Ok(Output::Event(Event::KeyframeRequest(_))) => self.keyframe_requests += 1,
                Ok(Output::Event(_)) => {}
                Err(_) => return,
            }
        }
    }

    fn receive(&mut self, now: Instant, from: SocketAddr, data: &[u8], wire: &mut Wire) {
        if let Ok(contents) = data.try_into() {
            let _ = self.rtc.handle_input(Input::Receive(
                now,
                Receive {
                    proto: Protocol::Udp,
                    source: from,
                    destination: self.addr,
                    contents,
                },
            ));
            self.drain(wire);
        }
    }
}

/// Everything that happens in one millisecond: timers, then datagrams until the wire is quiet.
/// `drop` decides whether a datagram (from, to, contents) is lost.
fn step(
    now: Instant,
    sfu: &mut Sfu,
    peers: &mut [Peer],
    wire: &mut Wire,
    drop: &mut impl FnMut(SocketAddr, SocketAddr, &[u8]) -> bool,
) {
    for peer in peers.iter_mut() {
        if peer.timeout <= now {
            let _ = peer.rtc.handle_input(Input::Timeout(now));
            peer.drain(wire);
        }
    }
    if sfu.poll_timeout(now) <= now {
        sfu.handle_timeout(now);
    }
    loop {
        while let Some(t) = sfu.poll_transmit() {
            wire.push_back((SFU, t.destination, t.contents));
        }
        let Some((from, to, data)) = wire.pop_front() else {
            return;
        };
        if drop(from, to, &data) {
            continue;
        }
        if to == SFU {
            sfu.handle_receive(now, from, SFU, &data);
        } else if let Some(peer) = peers.iter_mut().find(|p| p.addr == to) {
            peer.receive(now, from, &data, wire);
        }
    }
}

/// A publisher and `subscribers` subscribers of one stream, connected, the wire quiet.
fn connected(start: Instant, subscribers: u16) -> (Instant, Sfu, Vec<Peer>, Wire) {
    let mut now = start;
    let mut sfu = Sfu::new(SfuConfig {
        public_addr: SFU,
        keyframe_interval: Duration::from_millis(500),
        connect_deadline: Duration::from_secs(15),
        dtls: Default::default(),
        probe: None,
    })
    .expect("sfu");
    let stream = holoroom_server::rooms::RoomStream::new(
        &holoroom_protocol::RoomId::new("r").expect("valid"),
        &StreamId::new("cam").expect("valid"),
    );
    let mut wire = Wire::new();
    let (mut publisher, offer, pending) = Peer::new(now, 6000, Direction::SendOnly);
    let (_, answer) = sfu.publish(now, &stream, "r/alice", &offer).expect("publish");
    publisher
        .rtc
        .sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).expect("answer"))
        .expect("accepted");
    let mut peers = vec![publisher];
    for i in 0..subscribers {
        let (mut subscriber, offer, pending) = Peer::new(now, 6001 + i, Direction::RecvOnly);
        let (_, answer) = sfu
            .subscribe(now, u64::from(i) + 1, &stream, &offer, None)
            .expect("subscribe");
        subscriber
            .rtc
            .sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).expect("answer"))
            .expect("accepted");
        peers.push(subscriber);
    }
    for peer in peers.iter_mut() {
        peer.drain(&mut wire);
    }
    let mut keep = |_: SocketAddr, _: SocketAddr, _: &[u8]| false;
    while !peers.iter().all(|p| p.rtc.is_connected()) {
        assert!(now < start + Duration::from_secs(10), "peers did not connect");
        now += Duration::from_millis(1);
        step(now, &mut sfu, &mut peers, &mut wire, &mut keep);
    }
    for _ in 0..200 {
        now += Duration::from_millis(1);
        step(now, &mut sfu, &mut peers, &mut wire, &mut keep);
    }
    (now, sfu, peers, wire)
}

/// Sends `count` video packets of 1000 bytes (keyframes), one every 10 ms, then lets the network settle
/// for a second; `drop` is the network.
fn send_video(
    start: Instant,
    mut now: Instant,
    sfu: &mut Sfu,
    peers: &mut [Peer],
    wire: &mut Wire,
    count: u64,
    drop: &mut impl FnMut(SocketAddr, SocketAddr, &[u8]) -> bool,
) -> Instant {
    let video = peers[0].video;
    // Each packet a whole IDR slice (NAL type 5): a subscriber's video begins at a keyframe.
    let mut payload = vec![0x5a; 1000];
    payload[0] = 0x65;
    for seq in 1000..1000 + count {
        for _ in 0..10 {
            now += Duration::from_millis(1);
            step(now, sfu, peers, wire, drop);
        }
        let ms = now.duration_since(start).as_millis() as u32;
        if let Some(tx) = peers[0].rtc.direct_api().stream_tx_by_mid(video, None) {
            tx.write_rtp(
                RtpWrite::new(Pt::from(VIDEO_PT), SeqNo::from(seq), ms * 90, now, payload.clone())
                    .marker(true)
                    .nackable(true),
            );
        }
        peers[0].drain(wire);
    }
    for _ in 0..1000 {
        now += Duration::from_millis(1);
        step(now, sfu, peers, wire, drop);
    }
    now
}

/// The subscriber's video sequence numbers that never arrived, and how many did.
fn gaps(peer: &Peer) -> (Vec<u64>, u64) {
    let received = &peer.received;
    let (Some(&first), Some(&last)) = (received.first(), received.last()) else {
        panic!("the subscriber received no video");
    };
    let missing = (first..=last).filter(|s| !received.contains(s)).collect();
    (missing, last - first + 1)
}

/// A deterministic network losing about `percent` % of large (media) datagrams on the
/// chosen legs.
fn lossy(percent: u64, upstream: bool, downstream: bool) -> impl FnMut(SocketAddr, SocketAddr, &[u8]) -> bool {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    move |from, to, data| {
        let leg_chosen = (to == SFU && upstream) || (from == SFU && downstream);
        if !leg_chosen || data.len() < 1000 {
            return false;
        }
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % 100 < percent
    }
}

#[test]
fn a_lost_video_packet_is_resent_to_the_subscriber() {
    let start = Instant::now();
    let (now, mut sfu, mut peers, mut wire) = connected(start, 1);
    // The network loses the 50th large datagram on its way to the subscriber.
    let mut big = 0;
    let mut lose_one = |from: SocketAddr, _: SocketAddr, data: &[u8]| {
        if from != SFU || data.len() < 1000 {
            return false;
        }
        big += 1;
        big == 50
    };
    send_video(start, now, &mut sfu, &mut peers, &mut wire, 200, &mut lose_one);
    assert!(big >= 50, "the loss happened ({big} large datagrams)");
    let (missing, span) = gaps(&peers[1]);
    assert!(missing.is_empty(), "still missing after NACK/RTX: {missing:?}");
    assert!(span >= 195, "most of the stream arrived: {span}");
}

#[test]
fn packets_lost_upstream_are_nacked_to_the_publisher_and_forwarded() {
    let start = Instant::now();
    let (now, mut sfu, mut peers, mut wire) = connected(start, 1);
    let mut network = lossy(5, true, false);
    send_video(start, now, &mut sfu, &mut peers, &mut wire, 200, &mut network);
    let (missing, span) = gaps(&peers[1]);
    assert!(
        missing.is_empty(),
        "still missing after the SFU's NACKs upstream: {missing:?}"
    );
    assert!(span >= 195, "most of the stream arrived: {span}");
}

#[test]
fn random_loss_on_both_legs_is_repaired() {
    let start = Instant::now();
    let (now, mut sfu, mut peers, mut wire) = connected(start, 2);
    let mut network = lossy(10, true, true);
    send_video(start, now, &mut sfu, &mut peers, &mut wire, 200, &mut network);
    for subscriber in &peers[1..] {
        let (missing, span) = gaps(subscriber);
        assert!(
            missing.is_empty(),
            "still missing after NACK/RTX on both legs: {missing:?}"
        );
        assert!(span >= 195, "most of the stream arrived: {span}");
    }
}

/// Each subscriber (every peer but the first) sends a PLI.
fn every_subscriber_asks_for_a_keyframe(peers: &mut [Peer], wire: &mut Wire) {
    for subscriber in peers[1..].iter_mut() {
        let mid = subscriber.video;
        if let Some(rx) = subscriber.rtc.direct_api().stream_rx_by_mid(mid, None) {
            rx.request_keyframe(KeyframeRequestKind::Pli);
        }
        subscriber.drain(wire);
    }
}

#[test]
fn keyframe_requests_from_many_subscribers_are_merged_and_paced() {
    let start = Instant::now();
    let (mut now, mut sfu, mut peers, mut wire) = connected(start, 4);
    let mut keep = |_: SocketAddr, _: SocketAddr, _: &[u8]| false;
    // Connecting asked for a keyframe; let that request's interval (500 ms) run out.
    for _ in 0..600 {
        now += Duration::from_millis(1);
        step(now, &mut sfu, &mut peers, &mut wire, &mut keep);
    }
    let before = peers[0].keyframe_requests;
    // Every subscriber asks at once, then again and again for 400 ms: no keyframe comes.
    for round in 0..4 {
        every_subscriber_asks_for_a_keyframe(&mut peers, &mut wire);
        for _ in 0..100 {
            now += Duration::from_millis(1);
            step(now, &mut sfu, &mut peers, &mut wire, &mut keep);
        }
        assert_eq!(
            peers[0].keyframe_requests - before,
            1,
            "round {round}: one request reaches the publisher while the keyframe is awaited"
        );
    }
    // Past the keyframe interval without a keyframe, the SFU asks again (once).
    for _ in 0..150 {
        now += Duration::from_millis(1);
        step(now, &mut sfu, &mut peers, &mut wire, &mut keep);
    }
    every_subscriber_asks_for_a_keyframe(&mut peers, &mut wire);
    for _ in 0..100 {
        now += Duration::from_millis(1);
        step(now, &mut sfu, &mut peers, &mut wire, &mut keep);
    }
    assert_eq!(peers[0].keyframe_requests - before, 2);
}
