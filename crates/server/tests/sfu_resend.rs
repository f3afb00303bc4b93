//! The SFU repairs loss on the way to a subscriber: a video packet lost between the SFU and
//! the subscriber is asked for again (NACK) and resent from the SFU's history (RTX), so the
//! subscriber ends up with every packet. Driven in memory (the SFU core is sans-IO) with real
//! str0m peers on both ends and a virtual clock; the "network" drops one datagram.

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use holoroom_protocol::StreamId;
use holoroom_server::sfu::{Sfu, SfuConfig};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind, Mid, Pt};
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
/// `drop` decides whether a datagram from the SFU to the subscriber is lost.
fn step(now: Instant, sfu: &mut Sfu, peers: &mut [Peer; 2], wire: &mut Wire, drop: &mut impl FnMut(&[u8]) -> bool) {
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
        if to == SFU {
            sfu.handle_receive(now, from, SFU, &data);
        } else if to == peers[0].addr {
            peers[0].receive(now, from, &data, wire);
        } else if to == peers[1].addr && !drop(&data) {
            peers[1].receive(now, from, &data, wire);
        }
    }
}

#[test]
fn a_lost_video_packet_is_resent_to_the_subscriber() {
    let start = Instant::now();
    let mut now = start;
    let mut sfu = Sfu::new(SfuConfig {
        public_addr: SFU,
        keyframe_interval: Duration::from_millis(500),
        probe: None,
    })
    .expect("sfu");
    let stream = StreamId::new("cam").expect("valid");
    let mut wire = Wire::new();

    let (mut publisher, offer, pending) = Peer::new(now, 6000, Direction::SendOnly);
    let (_, answer) = sfu.publish(now, &stream, &offer).expect("publish");
    publisher
        .rtc
        .sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).expect("answer"))
        .expect("accepted");
    let (mut subscriber, offer, pending) = Peer::new(now, 6001, Direction::RecvOnly);
    let (_, answer) = sfu.subscribe(now, 1, &stream, &offer).expect("subscribe");
    subscriber
        .rtc
        .sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).expect("answer"))
        .expect("accepted");
    let mut peers = [publisher, subscriber];
    for peer in peers.iter_mut() {
        peer.drain(&mut wire);
    }

    let mut keep = |_: &[u8]| false;
    while !peers.iter().all(|p| p.rtc.is_connected()) {
        assert!(now < start + Duration::from_secs(10), "peers did not connect");
        now += Duration::from_millis(1);
        step(now, &mut sfu, &mut peers, &mut wire, &mut keep);
    }
    for _ in 0..200 {
        now += Duration::from_millis(1);
        step(now, &mut sfu, &mut peers, &mut wire, &mut keep);
    }

    // Two seconds of video (a 1000-byte packet every 10 ms); the network loses the 50th
    // large datagram on its way to the subscriber.
    let mut big = 0;
    let mut lose_one = |data: &[u8]| {
        if data.len() < 1000 {
            return false;
        }
        big += 1;
        big == 50
    };
    let video = peers[0].video;
    let payload = vec![0x5a; 1000];
    let sent: Vec<u64> = (1000..1200).collect();
    for &seq in &sent {
        for _ in 0..10 {
            now += Duration::from_millis(1);
            step(now, &mut sfu, &mut peers, &mut wire, &mut lose_one);
        }
        let ms = now.duration_since(start).as_millis() as u32;
        if let Some(tx) = peers[0].rtc.direct_api().stream_tx_by_mid(video, None) {
            tx.write_rtp(
                RtpWrite::new(Pt::from(VIDEO_PT), SeqNo::from(seq), ms * 90, now, payload.clone()).marker(true),
            );
        }
        peers[0].drain(&mut wire);
    }
    for _ in 0..1000 {
        now += Duration::from_millis(1);
        step(now, &mut sfu, &mut peers, &mut wire, &mut lose_one);
    }

    assert!(big >= 50, "the loss happened ({big} large datagrams)");
    let received = &peers[1].received;
    let (first, last) = (received.first().copied(), received.last().copied());
    let (Some(first), Some(last)) = (first, last) else {
        panic!("the subscriber received no video");
    };
    let missing: Vec<u64> = (first..=last).filter(|s| !received.contains(s)).collect();
    assert!(missing.is_empty(), "still missing after NACK/RTX: {missing:?}");
    assert!(
        last - first + 1 >= sent.len() as u64 - 5,
        "{first}..={last}: most of the stream arrived"
    );
}
