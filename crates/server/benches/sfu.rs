//! SFU fan-out: one publisher (a 720p-sized video stream at about 1.5 Mbit/s plus Opus) to
//! 10, 50 and 200 subscribers, driven in memory with a virtual clock, so the relay's own CPU
//! time per forwarded packet is what is measured. The baseline, in the same run, is a bare
//! str0m forwarding loop written for this bench: receive, decrypt, re-encrypt, send, with none
//! of the SFU's bookkeeping (sequence rebasing, payload-type mapping, keyframe throttling).
//!
//! Target: the SFU forwards >= 0.8x the baseline's packets per CPU-second and adds < 0.1% loss.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use holoroom_protocol::{RoomId, StreamId};
use holoroom_server::rooms::RoomStream;
use holoroom_server::sfu::dtls::DtlsStack;
use holoroom_server::sfu::{Sfu, SfuConfig};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

const RELAY: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1)), 5000);
const VIDEO_PT: u8 = 108;
const AUDIO_PT: u8 = 111;
/// Simulated seconds of media per run.
const SECONDS: u64 = 4;

fn config(ice_lite: bool) -> RtcConfig {
    let mut config = Rtc::builder()
        .set_ice_lite(ice_lite)
        .clear_codecs()
        .enable_opus(true, false)
        .set_rtp_mode(true);
    config
        .codec_config()
        .add_h264(Pt::from(VIDEO_PT), Some(Pt::from(109)), true, 0x42e01f);
    config
}

/// What the bench needs of a relay.
trait Relay {
    fn publish(&mut self, now: Instant, offer: &str) -> String;
    fn subscribe(&mut self, now: Instant, n: u64, offer: &str) -> String;
    fn receive(&mut self, now: Instant, from: SocketAddr, data: &[u8]);
    fn timeout(&mut self, now: Instant);
    fn next_timeout(&self, now: Instant) -> Instant;
    fn transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)>;
}

/// The one stream of the bench's room.
fn cam() -> RoomStream {
    RoomStream::new(&RoomId::new("r").expect("valid"), &StreamId::new("cam").expect("valid"))
}

impl Relay for Sfu {
    fn publish(&mut self, now: Instant, offer: &str) -> String {
        Sfu::publish(self, now, &cam(), "r/alice", offer).expect("publish").1
    }
    fn subscribe(&mut self, now: Instant, n: u64, offer: &str) -> String {
        Sfu::subscribe(self, now, n, &cam(), offer, None).expect("subscribe").1
    }
    fn receive(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.handle_receive(now, from, RELAY, data);
    }
    fn timeout(&mut self, now: Instant) {
        self.handle_timeout(now);
    }
    fn next_timeout(&self, now: Instant) -> Instant {
        self.poll_timeout(now)
    }
    fn transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.poll_transmit().map(|t| (t.destination, t.contents))
    }
}

/// The baseline: str0m connections and a plain loop that copies each publisher packet to every subscriber.
struct Bare {
    peers: Vec<(Rtc, bool, HashMap<Mid, MediaKind>, Instant)>,
    out: VecDeque<(SocketAddr, Vec<u8>)>,
}

impl Bare {
    fn add(&mut self, now: Instant, offer: &str, publisher: bool) -> String {
        let mut rtc = config(true).build(now);
        rtc.add_local_candidate(Candidate::host(RELAY, "udp").expect("candidate"));
        let answer = rtc
            .sdp_api()
            .accept_offer(SdpOffer::from_sdp_string(offer).expect("offer"))
            .expect("answer");
        self.peers.push((rtc, publisher, HashMap::new(), now));
        let index = self.peers.len() - 1;
        self.drain(index);
        answer.to_sdp_string()
    }

    fn drain(&mut self, index: usize) {
        let mut forward = Vec::new();
        let (rtc, publisher, kinds, timeout) = &mut self.peers[index];
        loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    *timeout = t;
                    break;
                }
                Ok(Output::Transmit(t)) => self.out.push_back((t.destination, t.contents.to_vec())),
                Ok(Output::Event(Event::MediaAdded(m))) => {
                    kinds.insert(m.mid, m.kind);
                }
                Ok(Output::Event(Event::RtpPacket(p))) if *publisher => {
                    let mid = rtc.direct_api().stream_rx(&p.header.ssrc).map(|s| s.mid());
                    if let Some(kind) = mid.and_then(|m| kinds.get(&m)) {
                        forward.push((*kind, p));
                    }
                }
                Ok(Output::Event(_)) => {}
                Err(_) => break,
            }
        }
        for (kind, packet) in forward {
            for i in 0..self.peers.len() {
                if self.peers[i].1 || !self.peers[i].0.is_connected() {
                    continue;
                }
                let Some(mid) = self.peers[i].2.iter().find(|(_, k)| **k == kind).map(|(m, _)| *m) else {
                    continue;
                };
                if let Some(tx) = self.peers[i].0.direct_api().stream_tx_by_mid(mid, None) {
                    tx.write_rtp(
                        RtpWrite::new(
                            packet.header.payload_type,
                            packet.seq_no,
                            packet.header.timestamp,
                            packet.timestamp,
                            packet.payload.clone(),
                        )
                        .marker(packet.header.marker),
                    );
                }
                self.drain(i);
            }
        }
    }
}

impl Relay for Bare {
    fn publish(&mut self, now: Instant, offer: &str) -> String {
        self.add(now, offer, true)
    }
    fn subscribe(&mut self, now: Instant, _n: u64, offer: &str) -> String {
        self.add(now, offer, false)
    }
    fn receive(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let Ok(contents) = data.try_into() else { return };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source: from,
                destination: RELAY,
                contents,
            },
        );
        if let Some(index) = self.peers.iter().position(|p| p.0.accepts(&input)) {
            let _ = self.peers[index].0.handle_input(input);
            self.drain(index);
        }
    }
    fn timeout(&mut self, now: Instant) {
        for index in 0..self.peers.len() {
            if self.peers[index].3 <= now {
                let _ = self.peers[index].0.handle_input(Input::Timeout(now));
                self.drain(index);
            }
        }
    }
    fn next_timeout(&self, now: Instant) -> Instant {
        self.peers
            .iter()
            .map(|p| p.3)
            .min()
            .unwrap_or(now + Duration::from_secs(1))
    }
    fn transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.out.pop_front()
    }
}

struct Client {
    rtc: Rtc,
    addr: SocketAddr,
    timeout: Instant,
    received: u64,
    mids: Vec<(Mid, MediaKind)>,
}

impl Client {
    fn new(now: Instant, n: u16, direction: Direction) -> (Client, String, str0m::change::SdpPendingOffer) {
        let addr = SocketAddr::from(([127, 0, 1, (n % 250) as u8 + 1], 6000 + n));
        let mut rtc = config(false).build(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
        let mut api = rtc.sdp_api();
        let video = api.add_media(MediaKind::Video, direction, None, None, None);
        let audio = api.add_media(MediaKind::Audio, direction, None, None, None);
        let (offer, pending) = api.apply().expect("an offer");
        let client = Client {
            rtc,
            addr,
            timeout: now,
            received: 0,
            mids: vec![(video, MediaKind::Video), (audio, MediaKind::Audio)],
        };
        (client, offer.to_sdp_string(), pending)
    }

    fn drain(&mut self, wire: &mut VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.timeout = t;
                    break;
                }
                Ok(Output::Transmit(t)) => wire.push_back((self.addr, t.destination, t.contents.to_vec())),
                Ok(Output::Event(Event::RtpPacket(_))) => self.received += 1,
                Ok(Output::Event(_)) => {}
                Err(_) => break,
            }
        }
    }
}

/// Moves datagrams until the wire is empty; returns the relay's time spent.
fn pump(
    now: Instant,
    relay: &mut dyn Relay,
    clients: &mut [Client],
    by_addr: &HashMap<SocketAddr, usize>,
    wire: &mut VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
) -> Duration {
    let mut relay_time = Duration::ZERO;
    loop {
        while let Some((to, data)) = relay.transmit() {
            wire.push_back((RELAY, to, data));
        }
        let Some((from, to, data)) = wire.pop_front() else {
            return relay_time;
        };
        if to == RELAY {
            let start = Instant::now();
            relay.receive(now, from, &data);
            relay_time += start.elapsed();
        } else if let Some(&i) = by_addr.get(&to) {
            let client = &mut clients[i];
            if let Ok(contents) = data.as_slice().try_into() {
                let input = Input::Receive(
                    now,
                    Receive {
                        proto: Protocol::Udp,
                        source: from,
                        destination: to,
                        contents,
                    },
                );
                let _ = client.rtc.handle_input(input);
                client.drain(wire);
            }
        }
    }
}

struct Outcome {
    sent: u64,
    received: u64,
    relay_time: Duration,
    /// The relay's time while everyone connected (ICE and DTLS).
    connect_time: Duration,
}

/// Connects a publisher and `subscribers`, then runs `seconds` of media.
fn run(relay: &mut dyn Relay, subscribers: u16, seconds: u64) -> Outcome {
    let start = Instant::now();
    let mut now = start;
    let mut wire = VecDeque::new();
    let (mut publisher, offer, pending) = Client::new(now, 0, Direction::SendOnly);
    let answer = relay.publish(now, &offer);
    publisher
        .rtc
        .sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).expect("answer"))
        .expect("accepted");
    publisher.drain(&mut wire);
    let mut clients = vec![publisher];
    for n in 1..=subscribers {
        let (mut client, offer, pending) = Client::new(now, n, Direction::RecvOnly);
        let answer = relay.subscribe(now, u64::from(n), &offer);
        client
            .rtc
            .sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).expect("answer"))
            .expect("accepted");
        client.drain(&mut wire);
        clients.push(client);
    }
    let by_addr: HashMap<SocketAddr, usize> = clients.iter().enumerate().map(|(i, c)| (c.addr, i)).collect();

    let tick = Duration::from_millis(1);
    let step = |now: Instant, relay: &mut dyn Relay, clients: &mut Vec<Client>, wire: &mut VecDeque<_>| {
        let mut relay_time = Duration::ZERO;
        for client in clients.iter_mut() {
            if client.timeout <= now {
                let _ = client.rtc.handle_input(Input::Timeout(now));
                client.drain(wire);
            }
        }
        if relay.next_timeout(now) <= now {
            let started = Instant::now();
            relay.timeout(now);
            relay_time += started.elapsed();
        }
        relay_time + pump(now, relay, clients, &by_addr, wire)
    };
    // Connect everyone.
    let deadline = now + Duration::from_secs(10);
    let mut connect_time = Duration::ZERO;
    while !clients.iter().all(|c| c.rtc.is_connected()) {
        assert!(now < deadline, "clients did not connect");
        now += tick;
        connect_time += step(now, relay, &mut clients, &mut wire);
    }
    for _ in 0..200 {
        now += tick;
        step(now, relay, &mut clients, &mut wire);
    }
    let before: u64 = clients[1..].iter().map(|c| c.received).sum();

    // Media: 1200-byte video packets at ~1.5 Mbit/s (a 30 fps frame of 5 or 6 packets, marker on
    // the last) and one 100-byte Opus packet every 20 ms.
    let video_mid = clients[0].mids[0].0;
    let audio_mid = clients[0].mids[1].0;
    let (mut video_seq, mut audio_seq, mut sent) = (1000u64, 1000u64, 0u64);
    let mut relay_time = Duration::ZERO;
    let media_start = now;
    // Each video packet a whole IDR slice (NAL type 5): the SFU starts a subscriber's video at
    // a keyframe.
    let mut payload = vec![0x5au8; 1200];
    payload[0] = 0x65;
    let voice = vec![0x11u8; 100];
    while now < media_start + Duration::from_secs(seconds) {
        now += tick;
        let ms = now.duration_since(media_start).as_millis() as u64;
        if ms.is_multiple_of(33) {
            let packets = if (ms / 33).is_multiple_of(2) { 5 } else { 6 };
            for p in 0..packets {
                let mut api = clients[0].rtc.direct_api();
                if let Some(tx) = api.stream_tx_by_mid(video_mid, None) {
                    tx.write_rtp(
                        RtpWrite::new(
                            Pt::from(VIDEO_PT),
                            SeqNo::from(video_seq),
                            (ms * 90) as u32,
                            now,
                            payload.clone(),
                        )
                        .marker(p + 1 == packets),
                    );
                    video_seq += 1;
                    sent += 1;
                }
                clients[0].drain(&mut wire);
            }
        }
        if ms.is_multiple_of(20) {
            let mut api = clients[0].rtc.direct_api();
            if let Some(tx) = api.stream_tx_by_mid(audio_mid, None) {
                tx.write_rtp(RtpWrite::new(
                    Pt::from(AUDIO_PT),
                    SeqNo::from(audio_seq),
                    (ms * 48) as u32,
                    now,
                    voice.clone(),
                ));
                audio_seq += 1;
                sent += 1;
            }
            clients[0].drain(&mut wire);
        }
        relay_time += step(now, relay, &mut clients, &mut wire);
    }
    // Let the last packets land.
    for _ in 0..100 {
        now += tick;
        relay_time += step(now, relay, &mut clients, &mut wire);
    }
    let received = clients[1..].iter().map(|c| c.received).sum::<u64>() - before;
    Outcome {
        sent,
        received,
        relay_time,
        connect_time,
    }
}

fn sfu(dtls: DtlsStack) -> Sfu {
    Sfu::new(SfuConfig {
        public_addr: RELAY,
        keyframe_interval: Duration::from_millis(500),
        connect_deadline: Duration::from_secs(15),
        dtls,
        probe: None,
    })
    .expect("SFU")
}

fn main() {
    println!("# SFU fan-out (in memory, virtual clock; relay CPU time only)\n");
    println!(
        "subscribers | SFU packets/CPU-s | baseline packets/CPU-s | ratio (target >= 0.80) | SFU loss | baseline loss | SFU us/packet | SFU with the built-in DTLS, packets/CPU-s"
    );
    for subscribers in [10u16, 50, 200] {
        let start = Instant::now();
        let ours = run(&mut sfu(DtlsStack::default()), subscribers, SECONDS);
        let mut bare = Bare {
            peers: Vec::new(),
            out: VecDeque::new(),
        };
        let baseline = run(&mut bare, subscribers, SECONDS);
        // The same relay with str0m's built-in DTLS: the handshake's stack must not change
        // what forwarding costs.
        let builtin = run(&mut sfu(DtlsStack::Builtin), subscribers, SECONDS);
        let rate = |o: &Outcome| o.received as f64 / o.relay_time.as_secs_f64();
        let loss = |o: &Outcome| 1.0 - o.received as f64 / (o.sent as f64 * f64::from(subscribers));
        println!(
            "{subscribers} | {:.0} | {:.0} | {:.2}x | {:.3}% | {:.3}% | {:.2} | {:.0}   ({:.1} s)",
            rate(&ours),
            rate(&baseline),
            rate(&ours) / rate(&baseline),
            loss(&ours) * 100.0,
            loss(&baseline) * 100.0,
            ours.relay_time.as_secs_f64() * 1e6 / ours.received.max(1) as f64,
            rate(&builtin),
            start.elapsed().as_secs_f64()
        );
    }

    // The handshake on OpenSSL (RSA and ECDSA peers) against str0m's built-in DTLS (ECDSA
    // peers only), in the same run: the relay's CPU time while 100 connections come up.
    println!("\n# Connection setup (ICE and DTLS), relay CPU time per connection\n");
    println!("connections | OpenSSL us/connection | built-in us/connection | ratio");
    let connections = 100u16;
    let openssl = run(&mut sfu(DtlsStack::OpenSsl), connections - 1, 0).connect_time;
    let builtin = run(&mut sfu(DtlsStack::Builtin), connections - 1, 0).connect_time;
    let per = |d: Duration| d.as_secs_f64() * 1e6 / f64::from(connections);
    println!(
        "{connections} | {:.0} | {:.0} | {:.2}x",
        per(openssl),
        per(builtin),
        openssl.as_secs_f64() / builtin.as_secs_f64()
    );
}
