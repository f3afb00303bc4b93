//! The network bench: one publisher (the test pattern at 640x360, 30 fps, and a tone) and two
//! receivers of the same stream in the same run, the desktop player and Chromium's own WebRTC
//! receiver (`tests/web/receive.mjs`), all media through the impairment relay, for each
//! network condition in turn. Printed per condition and receiver: frames decoded of those
//! sent, freezes per minute, glass-to-glass p50/p95 (desktop, from the capture time frames
//! carry), Chromium's jitter buffer delay, and audio concealment.
//!
//! Targets: the desktop player decodes at least as many frames as Chromium and freezes no
//! more often, in every condition; its glass-to-glass p95 is within 1.2x of Chromium's jitter
//! buffer delay plus the path delay.
//!
//! Run with `make bench` (or `cargo bench --profile dev -p holoroom-engine --bench network`).
//! Without Chromium or `tests/web/node_modules` (made by `make test`), only the desktop runs.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use holoroom_engine::media::{FrameSlot, SlotFrame, unix_micros};
use holoroom_engine::protocol::{LoginConfig, RoomId, RoomStateReason, StreamId, UserId, UserInfo, VideoGrant};
use holoroom_engine::{Engine, EngineConfig, EngineEvent, PlayerState, PublisherState, RemoteStream, StreamConfig};
use holoroom_server::{Server, ServerConfig, SigningKey, TokenKeys};
use holoroom_testkit::{GilbertElliott, Impairment, UdpRelay};

const WINDOW: Duration = Duration::from_secs(20);
const SETTLE: Duration = Duration::from_secs(2);
const FREEZE: Duration = Duration::from_millis(200);

/// A network condition: what the relay does on each leg, and the one-way delay it adds from
/// publisher to player (both legs).
struct Condition {
    name: &'static str,
    leg: Impairment,
}

impl Condition {
    fn path_delay(&self) -> Duration {
        self.leg.delay * 2
    }
}

fn conditions() -> Vec<Condition> {
    let ms = Duration::from_millis;
    let clean = Impairment::default();
    vec![
        Condition {
            name: "clean",
            leg: clean,
        },
        Condition {
            name: "1% loss",
            leg: clean.with_loss(0.01),
        },
        Condition {
            name: "5% loss",
            leg: clean.with_loss(0.05),
        },
        Condition {
            name: "15% loss",
            leg: clean.with_loss(0.15),
        },
        Condition {
            name: "bursty 5% (bursts of 4)",
            leg: clean.with_burst(GilbertElliott::bursts(0.05, 4.0)),
        },
        Condition {
            name: "200 ms RTT",
            leg: clean.with_delay(ms(50)),
        },
        Condition {
            name: "±20 ms jitter",
            leg: clean.with_delay(ms(20)).with_jitter(ms(20)),
        },
        Condition {
            name: "±20 ms jitter, 2% loss",
            leg: clean.with_delay(ms(20)).with_jitter(ms(20)).with_loss(0.02),
        },
    ]
}

/// What one receiver showed in one condition.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    decoded_share: f64,
    /// Gaps over 200 ms between frames (desktop); Chromium's freezeCount (its own rule: a frame
    /// later than 3 frame durations or 150 ms past the average).
    freezes: f64,
    freezes_per_minute: f64,
    g2g_p50_ms: f64,
    g2g_p95_ms: f64,
    /// Chromium: average jitter buffer delay.
    jitter_buffer_ms: f64,
    concealed_share: f64,
}

/// Chromium's receiver, driven by `receive.mjs`; its answers arrive through a reader thread,
/// so a page that stops answering costs a timeout, not the bench.
struct Chromium {
    child: Child,
    input: ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
}

/// How long Chromium may take to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// Chromium's cumulative stats at one moment.
#[derive(Debug, Default, Clone, Copy)]
struct Snapshot {
    at_ms: f64,
    frames_decoded: f64,
    freeze_count: f64,
    jitter_buffer_delay: f64,
    jitter_buffer_emitted: f64,
    concealed: f64,
    samples: f64,
}

impl Chromium {
    fn start(server: &Server, token: &str, stream: &str) -> Option<Chromium> {
        let web = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/web");
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        if !web.join("node_modules/playwright-core").exists() || !std::path::Path::new(&chromium).exists() {
            println!("Chromium or tests/web/node_modules missing (run `make test` once): desktop only");
            return None;
        }
        let mut child = Command::new("node")
            .arg(web.join("receive.mjs"))
            .args([&server.ws_url(), "bench", "chromium", token, stream])
            .current_dir(&web)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .ok()?;
        let input = child.stdin.take()?;
        let output: BufReader<ChildStdout> = BufReader::new(child.stdout.take()?);
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in output.lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let line = lines.recv_timeout(Duration::from_secs(120)).unwrap_or_default();
        if !line.contains("\"ready\":true") {
            println!("Chromium did not start playing ({}): desktop only", line.trim());
            let _ = child.kill();
            return None;
        }
        Some(Chromium { child, input, lines })
    }

    fn snapshot(&mut self) -> Option<Snapshot> {
        writeln!(self.input, "snap").ok()?;
        let Ok(line) = self.lines.recv_timeout(ANSWER_WITHIN) else {
            println!("Chromium did not answer within {ANSWER_WITHIN:?}");
            return None;
        };
        let stats: serde_json::Value = serde_json::from_str(&line).ok()?;
        let value = |key: &str| stats.get(key).and_then(serde_json::Value::as_f64).unwrap_or(0.0);
        Some(Snapshot {
            at_ms: value("at"),
            frames_decoded: value("framesDecoded"),
            freeze_count: value("freezeCount"),
            jitter_buffer_delay: value("jitterBufferDelay"),
            jitter_buffer_emitted: value("jitterBufferEmittedCount"),
            concealed: value("concealedSamples"),
            samples: value("totalSamplesReceived"),
        })
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = writeln!(self.input, "quit");
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn join(server: &Server, user: &str) -> Engine {
    let engine = Engine::new(EngineConfig::new(server.ws_url())).expect("engine starts");
    let user_id = UserId::new(user).expect("valid");
    let token = server
        .keys()
        .mint(VideoGrant::participant("bench"), &user_id, None, 3600);
    engine.login_room(
        RoomId::new("bench").expect("valid"),
        token,
        UserInfo {
            user_id,
            user_name: user.to_owned(),
        },
        LoginConfig { user_update: false },
    );
    wait_for(&engine, |e| {
        matches!(
            e,
            EngineEvent::RoomStateChanged {
                reason: RoomStateReason::Logined,
                ..
            }
        )
    })
    .await;
    engine
}

async fn wait_for(engine: &Engine, mut pick: impl FnMut(&EngineEvent) -> bool) {
    holoroom_testkit::wait_for_event_in_runtime(engine.events(), Duration::from_secs(20), |e| pick(e).then_some(()))
        .expect("the bench's call did not start");
}

/// Watches the desktop player for `window`: frames decoded of those sent, freezes, g2g.
async fn watch_desktop(remote: &RemoteStream, window: Duration) -> (Seen, f64) {
    let slot: &FrameSlot = &remote.video;
    let code = |f: &SlotFrame| f.code.map_or(0, |c| c.frame_number);
    let start = slot.latest().expect("frames before the window");
    let audio_before = remote.receive.audio();
    let mut last = start.clone();
    let mut last_change = Instant::now();
    let mut freezes = 0u32;
    let mut g2g = Vec::new();
    let began = Instant::now();
    while began.elapsed() < window {
        if let Some(frame) = slot.newer_than(last.sequence) {
            let now = Instant::now();
            if now - last_change > FREEZE {
                freezes += 1;
            }
            last_change = now;
            if let Some(captured) = frame.capture_us {
                g2g.push(unix_micros().saturating_sub(captured) as f64 / 1000.0);
            }
            last = frame;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    if last_change.elapsed() > FREEZE {
        freezes += 1;
    }
    g2g.sort_by(f64::total_cmp);
    let at = |p: f64| {
        g2g.get(((g2g.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let sent = f64::from(code(&last).saturating_sub(code(&start))).max(1.0);
    let audio = remote.receive.audio();
    let packets = (audio.decoded + audio.fec + audio.concealed)
        .saturating_sub(audio_before.decoded + audio_before.fec + audio_before.concealed);
    let seen = Seen {
        decoded_share: (last.sequence - start.sequence) as f64 / sent,
        freezes: f64::from(freezes),
        freezes_per_minute: f64::from(freezes) * 60.0 / window.as_secs_f64(),
        g2g_p50_ms: at(0.5),
        g2g_p95_ms: at(0.95),
        jitter_buffer_ms: f64::NAN,
        concealed_share: (audio.concealed - audio_before.concealed) as f64 / packets.max(1) as f64,
    };
    (seen, sent)
}

/// Chromium's figures between two snapshots; `sent_per_second` is the publisher's frame rate
/// over the desktop's window (Chromium's window is a little longer: its snapshots bracket it).
fn chromium_seen(before: Snapshot, after: Snapshot, sent_per_second: f64) -> Seen {
    let minutes = ((after.at_ms - before.at_ms) / 60_000.0).max(1e-6);
    let sent = sent_per_second * minutes * 60.0;
    let emitted = (after.jitter_buffer_emitted - before.jitter_buffer_emitted).max(1.0);
    let samples = (after.samples - before.samples).max(1.0);
    Seen {
        decoded_share: (after.frames_decoded - before.frames_decoded) / sent.max(1.0),
        freezes: after.freeze_count - before.freeze_count,
        freezes_per_minute: (after.freeze_count - before.freeze_count) / minutes,
        g2g_p50_ms: f64::NAN,
        g2g_p95_ms: f64::NAN,
        jitter_buffer_ms: (after.jitter_buffer_delay - before.jitter_buffer_delay) * 1000.0 / emitted,
        concealed_share: (after.concealed - before.concealed) / samples,
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let mut config = ServerConfig::new(TokenKeys::new(SigningKey::new(
        "k1",
        b"network-bench-secret-0123456".to_vec(),
    )));
    config.media.public_ip = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    // Chromium's receiver runs in a page of this server's (loopback pages may open loopback
    // sockets).
    let web_root = std::env::temp_dir().join(format!("holoroom-network-bench-{}", std::process::id()));
    std::fs::create_dir_all(&web_root).expect("bench page folder");
    std::fs::write(
        web_root.join("index.html"),
        "<!doctype html><title>receiver</title><body></body>",
    )
    .expect("bench page");
    config.web_root = Some(web_root.clone());
    let server = Server::bind("127.0.0.1:0", config).await.expect("server binds");
    let advertised = server.media_addr();
    let relay = UdpRelay::start(
        advertised,
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), advertised.port()),
    )
    .await
    .expect("relay binds");

    let publisher = join(&server, "publisher").await;
    let camera = publisher
        .create_stream(StreamConfig::test_pattern(640, 360, 30.0))
        .expect("pattern stream");
    let stream = StreamId::new("cam").expect("valid");
    publisher.start_publishing_stream(stream.clone(), &camera);
    wait_for(&publisher, |e| {
        matches!(
            e,
            EngineEvent::PublisherStateUpdate {
                state: PublisherState::Publishing,
                ..
            }
        )
    })
    .await;
    let player = join(&server, "desktop").await;
    let remote = player.start_playing_stream(stream.clone());
    wait_for(&player, |e| {
        matches!(
            e,
            EngineEvent::PlayerStateUpdate {
                state: PlayerState::Playing,
                ..
            }
        )
    })
    .await;
    let token = server.keys().mint(
        VideoGrant::participant("bench"),
        &UserId::new("chromium").expect("valid"),
        None,
        3600,
    );
    let mut chromium = Chromium::start(&server, &token, stream.as_str());

    println!(
        "\n{:<24} | {:>8} {:>9} {:>14} {:>9} | {:>8} {:>9} {:>9} {:>9} | vs Chromium",
        "network (each leg)",
        "decoded",
        "freezes",
        "g2g p50/p95",
        "conceal",
        "decoded",
        "freezes",
        "jb delay",
        "conceal"
    );
    for condition in conditions() {
        relay.set(condition.leg);
        tokio::time::sleep(SETTLE).await;
        let before = chromium.as_mut().and_then(Chromium::snapshot);
        let (desktop, sent) = watch_desktop(&remote, WINDOW).await;
        let after = chromium.as_mut().and_then(Chromium::snapshot);
        let browser = before
            .zip(after)
            .map(|(b, a)| chromium_seen(b, a, sent / WINDOW.as_secs_f64()));
        let verdict = browser.map_or_else(String::new, |b| {
            let decoded = desktop.decoded_share >= b.decoded_share - 0.005;
            let freezes = desktop.freezes <= b.freezes;
            let bound = 1.2 * (b.jitter_buffer_ms + condition.path_delay().as_secs_f64() * 1000.0);
            let delay = desktop.g2g_p95_ms <= bound.max(condition.path_delay().as_secs_f64() * 1000.0 + 20.0);
            format!(
                "decoded {} freezes {} g2g p95 {} (bound {bound:.0} ms)",
                if decoded { "met" } else { "NOT met" },
                if freezes { "met" } else { "NOT met" },
                if delay { "met" } else { "NOT met" },
            )
        });
        let b = browser.unwrap_or(Seen {
            decoded_share: f64::NAN,
            freezes: f64::NAN,
            freezes_per_minute: f64::NAN,
            jitter_buffer_ms: f64::NAN,
            concealed_share: f64::NAN,
            ..Seen::default()
        });
        println!(
            "{:<24} | {:>7.1}% {:>6.1}/min {:>6.0}/{:<4.0}ms {:>8.1}% | {:>7.1}% {:>6.1}/min {:>6.0} ms {:>8.1}% | {verdict}",
            condition.name,
            desktop.decoded_share * 100.0,
            desktop.freezes_per_minute,
            desktop.g2g_p50_ms,
            desktop.g2g_p95_ms,
            desktop.concealed_share * 100.0,
            b.decoded_share * 100.0,
            b.freezes_per_minute,
            b.jitter_buffer_ms,
            b.concealed_share * 100.0,
        );
    }
    relay.set(Impairment::default());
    let stats = relay.stats();
    println!(
        "relay: {} datagrams up, {} down; desktop receive buffer {:?}",
        stats.upstream.received,
        stats.downstream.received,
        remote.receive.video()
    );
    drop(chromium);
    let _ = std::fs::remove_dir_all(web_root);
}
