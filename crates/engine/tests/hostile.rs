//! A call goes on while one address floods the server with connections beyond its cap and
//! the media port takes thousands of random and mutated datagrams (STUN, DTLS-, RTP- and
//! RTCP-looking): every extra connection is refused with a reason, the relay learns none of
//! the strangers' addresses, memory stays flat, and the viewer's video never stalls.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use holoroom_engine::protocol::{RoomStateReason, close_code};
use holoroom_engine::{EngineEvent, StreamConfig};
use holoroom_server::Server;
use tokio_tungstenite::tungstenite::Message;

mod common;

use common::{first_frame, join, play, publish};

/// A small deterministic generator (xorshift64*), so a failing run can be replayed.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// One hostile datagram: random bytes, or a STUN, DTLS, RTP or RTCP header over garbage,
/// sometimes with a few bytes flipped or cut short.
fn datagram(noise: &mut Noise) -> Vec<u8> {
    let body = noise.below(1200);
    let mut packet = match noise.below(6) {
        0 => noise.bytes(1 + body),
        1 => {
            // A STUN binding request with a USERNAME the relay never gave out.
            let ufrag_len = 4 + noise.below(300);
            let ufrag = noise.bytes(ufrag_len);
            let mut p = vec![0x00, 0x01];
            let len = 4 + ufrag.len() + 24;
            p.extend_from_slice(&(len as u16).to_be_bytes());
            p.extend_from_slice(&0x2112_a442u32.to_be_bytes());
            p.extend(noise.bytes(12));
            p.extend_from_slice(&[0x00, 0x06]);
            p.extend_from_slice(&(ufrag.len() as u16).to_be_bytes());
            p.extend(ufrag);
            p.extend_from_slice(&[0x00, 0x08, 0x00, 0x14]);
            p.extend(noise.bytes(20));
            p
        }
        2 => {
            // A DTLS handshake record (ClientHello-looking).
            let mut p = vec![22, 0xfe, 0xfd];
            p.extend(noise.bytes(8));
            p.extend_from_slice(&(body as u16).to_be_bytes());
            p.push(1);
            p.extend(noise.bytes(body));
            p
        }
        3 => {
            // RTP: version 2, a payload type the relay uses, random SSRC.
            let mut p = vec![0x80 | (noise.below(2) as u8) << 4, [96u8, 111, 97, 127][noise.below(4)]];
            p.extend(noise.bytes(10 + body));
            p
        }
        4 => {
            // RTCP: sender/receiver report, feedback or SDES with a length that lies.
            let mut p = vec![
                0x80 | noise.below(32) as u8,
                [200u8, 201, 202, 205, 206][noise.below(5)],
            ];
            p.extend(noise.bytes(2 + body));
            p
        }
        _ => vec![0u8; noise.below(4)],
    };
    if !packet.is_empty() && noise.below(3) == 0 {
        for _ in 0..1 + noise.below(4) {
            let at = noise.below(packet.len());
            packet[at] ^= noise.next() as u8;
        }
    }
    if noise.below(5) == 0 {
        packet.truncate(noise.below(packet.len() + 1));
    }
    packet
}

/// This process's resident memory, in KiB.
fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Sends `count` hostile datagrams at `target` from a few sockets of their own.
async fn spray(target: SocketAddr, count: usize, seed: u64) {
    let mut sockets = Vec::new();
    for _ in 0..8 {
        sockets.push(tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("binds"));
    }
    let mut noise = Noise(seed);
    for i in 0..count {
        let packet = datagram(&mut noise);
        let _ = sockets[i % sockets.len()].send_to(&packet, target).await;
        if i % 25 == 0 {
            // Paced a little, as a stream of junk rather than one burst the kernel drops.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Opens `count` WebSocket connections (a few at a time) and returns how many were closed with
/// the policy code and a reason naming the cap.
async fn flood(server: &Server, count: usize) -> usize {
    let mut refused = 0;
    for _ in 0..count / 10 {
        let attempts = (0..10).map(|_| async {
            let (mut socket, _) = tokio_tungstenite::connect_async(server.ws_url()).await.ok()?;
            match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
                Ok(Some(Ok(Message::Close(Some(frame)))))
                    if u16::from(frame.code) == close_code::POLICY && frame.reason.contains("too many connections") =>
                {
                    Some(())
                }
                _ => None,
            }
        });
        refused += futures_util::future::join_all(attempts)
            .await
            .into_iter()
            .flatten()
            .count();
    }
    refused
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_goes_on_through_a_connection_flood_and_garbage_at_the_media_port() {
    let mut config = common::config(b"hostile-test-secret-0123456789");
    config.per_address.connections = 12;
    config.login_timeout = Duration::from_secs(120);
    let server = Server::bind("127.0.0.1:0", config).await.expect("server binds");
    let alice = join(&server, "alice").await;
    let _camera = publish(&alice, "alice-cam", StreamConfig::test_pattern(320, 180, 15.0)).await;
    let bob = join(&server, "bob").await;
    let (remote, _) = play(&bob, "alice-cam").await;
    first_frame(&remote.video).await;
    let known_sources = server.media_counters().await.expect("counters").sources;
    let rss_before = resident_kib();

    // The address's other places are taken by idle connections, so every further one is over the cap.
    let mut idle = Vec::new();
    for _ in 0..10 {
        idle.push(
            tokio_tungstenite::connect_async(server.ws_url())
                .await
                .expect("connects"),
        );
    }

    let media = server.media_addr();
    let done = AtomicBool::new(false);
    let attack = async {
        let (refused, ()) = tokio::join!(flood(&server, 300), spray(media, 10_000, 0x5eed_1234_abcd_0001));
        refused
    };
    let watch = async {
        // The longest the viewer went without a new frame while under attack.
        let mut stall = Duration::ZERO;
        let mut last = (remote.video.count(), Instant::now());
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let count = remote.video.count();
            if count != last.0 {
                last = (count, Instant::now());
            }
            stall = stall.max(last.1.elapsed());
            if done.load(Ordering::Relaxed) {
                break;
            }
        }
        stall
    };
    let attack = async {
        let refused = attack.await;
        done.store(true, Ordering::Relaxed);
        refused
    };
    let (refused, stall) = tokio::join!(attack, watch);
    assert_eq!(
        refused, 300,
        "every connection over the cap is refused with 1008 and a reason"
    );
    assert!(stall < Duration::from_secs(1), "the video stalled for {stall:?}");
    let counters = server.media_counters().await.expect("the relay still answers");
    assert_eq!(counters.sources, known_sources, "no stranger's address was learnt");
    // Memory stays flat (this process holds the server and both participants; 10,000
    // datagrams kept anywhere would be over 6 MB, connections kept far more).
    let grown = resident_kib().saturating_sub(rss_before);
    eprintln!("resident memory grew by {grown} KiB during the attack");
    assert!(grown < 24 * 1024, "resident memory grew by {grown} KiB");

    // Neither participant noticed anything.
    for engine in [&alice, &bob] {
        while let Ok(event) = engine.events().try_recv() {
            assert!(
                !matches!(
                    event,
                    EngineEvent::RoomStateChanged {
                        reason: RoomStateReason::Reconnecting | RoomStateReason::Kickout,
                        ..
                    }
                ),
                "{event:?}"
            );
        }
    }
    let before = remote.video.count();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(remote.video.count() > before, "the video still flows");
    drop(idle);
}
