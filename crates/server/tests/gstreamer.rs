//! GStreamer's webrtcbin (Debian's GStreamer, its default RSA certificate, libnice's keepalive
//! by binding indications every 25 s) in a room for a minute: it publishes and a desktop bot
//! decodes its video the whole time, and it plays the bot's camera and decodes that the whole
//! time; and, as a control, that it cannot connect to str0m's built-in DTLS (ECDSA client
//! certificates only). The peer is `tests/gstreamer/peer.py`, run by the system's Python (`make deps`
//! installs GStreamer and its Python bindings).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Client, WAIT, start, stream, token};
use holoroom_engine::bot::{Bot, BotConfig};
use holoroom_engine::protocol::{PlayRequest, Request, ResponseBody, RoomId, UserId, UserInfo};
use holoroom_engine::{StreamConfig, TokenSource};
use serde_json::Value;

/// How long the call runs: past str0m's 15 s without binding requests and libnice's 25 s
/// keepalive period, twice.
const CALL: Duration = Duration::from_secs(60);
/// The longest a side may go without a new frame.
const LONGEST_GAP: Duration = Duration::from_secs(2);

/// A running `peer.py`: its reports come through a channel.
struct Peer {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<Value>,
}

impl Peer {
    fn start(role: &str) -> Peer {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/gstreamer/peer.py");
        let mut child = Command::new("/usr/bin/python3")
            .args([script, role])
            .env("GST_DEBUG", std::env::var("GST_DEBUG").unwrap_or_else(|_| "1".into()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the GStreamer peer (make deps installs it)");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Value>(&line) {
                    Ok(value) => {
                        if tx.send(value).is_err() {
                            break;
                        }
                    }
                    Err(_) => eprintln!("peer: {line}"),
                }
            }
        });
        Peer { child, stdin, lines }
    }

    /// The next report, failing on an error report or after `WAIT` without one.
    fn next(&self) -> Value {
        let value = self.next_any();
        assert!(value.get("error").is_none(), "GStreamer peer: {value}");
        value
    }

    /// The next report, errors included.
    fn next_any(&self) -> Value {
        self.lines
            .recv_timeout(WAIT)
            .expect("the GStreamer peer reports (is GStreamer's webrtcbin installed?)")
    }

    fn offer(&self) -> String {
        let value = self.next();
        value["offer"].as_str().expect("an offer first").to_owned()
    }

    fn answer(&mut self, sdp: &str) {
        let line = serde_json::json!({ "answer": sdp }).to_string();
        writeln!(self.stdin, "{line}").expect("the peer reads its answer");
    }

    /// The latest frame count reported, waiting for at least one report.
    fn frames(&self) -> (u64, String) {
        let mut latest = self.next();
        while let Ok(value) = self.lines.try_recv() {
            assert!(value.get("error").is_none(), "GStreamer peer: {value}");
            latest = value;
        }
        (
            latest["frames"].as_u64().unwrap_or(0),
            latest["connection"].as_str().unwrap_or("?").to_owned(),
        )
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Frame counts sampled over time: the longest stretch without a new frame once the first came.
#[derive(Debug, Default)]
struct Progress {
    first: Option<Instant>,
    last_change: Option<(Instant, u64)>,
    longest_gap: Duration,
}

impl Progress {
    fn sample(&mut self, now: Instant, frames: u64) {
        match self.last_change {
            _ if frames == 0 => {}
            None => {
                self.first = Some(now);
                self.last_change = Some((now, frames));
            }
            Some((at, seen)) if frames > seen => {
                self.longest_gap = self.longest_gap.max(now - at);
                self.last_change = Some((now, frames));
            }
            Some((at, _)) => self.longest_gap = self.longest_gap.max(now - at),
        }
    }
}

/// Starts webrtcbin publishing into the room as `gst` and gives it the relay's answer.
async fn publish_from_webrtcbin(gst: &Client) -> Peer {
    let mut publisher = Peer::start("publish");
    let offer = tokio::task::block_in_place(|| publisher.offer());
    let answer = match gst
        .publish_offer("gst-cam", offer)
        .await
        .expect("webrtcbin's offer is taken")
    {
        ResponseBody::Publishing {
            sdp_answer: Some(answer),
        } => answer,
        other => panic!("{other:?}"),
    };
    publisher.answer(&answer);
    publisher
}

/// The control: against str0m's built-in DTLS (ECDSA client certificates only) webrtcbin never
/// connects. Were GStreamer to bring an ECDSA certificate one day, this fails, and the test
/// above would no longer show that RSA peers connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtcbin_with_its_rsa_certificate_cannot_connect_to_an_ecdsa_only_relay() {
    let mut config = common::config();
    config.media.dtls = holoroom_server::sfu::dtls::DtlsStack::Builtin;
    let server = start(config).await;
    let gst = Client::join(&server, "r", "gst", true).await;
    let publisher = publish_from_webrtcbin(&gst).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let outcome = loop {
        let report = tokio::task::block_in_place(|| publisher.next_any());
        let state = report["connection"].as_str().unwrap_or_default().to_owned();
        assert_ne!(
            state, "connected",
            "webrtcbin connected to an ECDSA-only relay: {report}"
        );
        if report.get("error").is_some() || state == "failed" {
            break report;
        }
        assert!(
            Instant::now() < deadline,
            "webrtcbin neither connected nor failed: {report}"
        );
    };
    assert!(
        outcome.to_string().contains("SSL") || outcome["connection"] == "failed",
        "{outcome}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gstreamer_webrtcbin_publishes_and_plays_for_a_minute() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let server = start(common::config()).await;
    let gst = Client::join(&server, "r", "gst", true).await;
    let bot = Bot::start(BotConfig {
        server_url: server.ws_url(),
        room_id: RoomId::new("r").expect("valid"),
        user: UserInfo {
            user_id: UserId::new("bot").expect("valid"),
            user_name: "Bot".into(),
        },
        token: TokenSource::Fixed(token(&server, "r", "bot")),
        publish: Some(StreamConfig::test_pattern(320, 180, 15.0)),
        plays: true,
    })
    .expect("bot starts");

    // GStreamer publishes.
    let publisher = publish_from_webrtcbin(&gst).await;

    // GStreamer plays the bot's camera once it is listed.
    let bot_cam = stream("bot-cam");
    let deadline = Instant::now() + WAIT;
    while !server
        .snapshot()
        .rooms
        .iter()
        .any(|r| r.streams.iter().any(|s| s.stream_id == bot_cam))
    {
        assert!(Instant::now() < deadline, "the bot's camera is listed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut player = Peer::start("play");
    let offer = tokio::task::block_in_place(|| player.offer());
    let answer = match gst
        .signaling
        .request(Request::StartPlaying(PlayRequest {
            stream_id: bot_cam.clone(),
            sdp_offer: Some(offer),
            video_layer: None,
            media_id: None,
        }))
        .await
        .expect("webrtcbin's play offer is taken")
    {
        ResponseBody::Playing {
            sdp_answer: Some(answer),
            ..
        } => answer,
        other => panic!("{other:?}"),
    };
    player.answer(&answer);

    let gst_cam = stream("gst-cam");
    let start = Instant::now();
    let (mut seen_by_bot, mut seen_by_gst) = (Progress::default(), Progress::default());
    let mut sent = 0;
    while start.elapsed() < CALL + WAIT {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = Instant::now();
        let decoded_by_bot = bot.status().received.get(&gst_cam).map_or(0, |r| r.frames);
        let (decoded_by_gst, gst_state) = tokio::task::block_in_place(|| player.frames());
        (sent, _) = tokio::task::block_in_place(|| publisher.frames());
        seen_by_bot.sample(now, decoded_by_bot);
        seen_by_gst.sample(now, decoded_by_gst);
        for (who, progress) in [("the bot", &seen_by_bot), ("webrtcbin", &seen_by_gst)] {
            assert!(
                progress.first.is_some() || now - start < WAIT,
                "{who} decoded nothing within {WAIT:?} (webrtcbin sent {sent}, its player is {gst_state}; relay {:?})",
                server.media_counters().await
            );
            assert!(
                progress.longest_gap <= LONGEST_GAP,
                "{who} went {:?} without a frame, {:?} into the call ({progress:?}; webrtcbin's player is {gst_state})",
                progress.longest_gap,
                now - start
            );
        }
        if [&seen_by_bot, &seen_by_gst]
            .iter()
            .all(|p| p.first.is_some_and(|first| now - first >= CALL))
        {
            break;
        }
    }
    for (who, progress) in [("the bot", &seen_by_bot), ("webrtcbin", &seen_by_gst)] {
        let first = progress.first.expect("frames came");
        assert!(first.elapsed() >= CALL, "{who} decoded for {:?} only", first.elapsed());
    }
    let received = &bot.status().received[&gst_cam];
    assert_eq!(received.size, (320, 240), "the bot decoded webrtcbin's picture");
    assert!(sent > 0);
}
