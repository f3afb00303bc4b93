//! Offers from a WebRTC stack that is not ours (str0m as a client, the way encoders and
//! gateways make them): what the relay can forward works end to end, what it cannot is refused
//! with a typed error naming what it takes, and nothing is listed for a refused publish.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Client, WAIT, start, stream, token};
use holoroom_engine::TokenSource;
use holoroom_engine::bot::{Bot, BotConfig};
use holoroom_engine::codec::{EncoderSettings, H264Encoder};
use holoroom_engine::media::TestPattern;
use holoroom_engine::protocol::{ErrorCode, Event, ResponseBody, RoomId, UpdateType, UserId, UserInfo};
use holoroom_engine::signaling::SignalingError;
use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event as RtcEvent, Input, Output, Rtc, RtcConfig};

/// A client of another stack: `video` is its only video codec (None: no video section),
/// with or without an Opus section.
fn client(video: Option<(Codec, u32)>, audio: bool) -> RtcConfig {
    let mut config = Rtc::builder().clear_codecs();
    if audio {
        config = config.enable_opus(true, false);
    }
    match video {
        Some((Codec::H264, profile)) => {
            config.codec_config().add_h264(102.into(), None, true, profile);
        }
        Some((Codec::Vp8, _)) => config = config.enable_vp8(true),
        _ => {}
    }
    config
}

/// An offer of that client's media from `addr`.
fn offer(
    config: RtcConfig,
    addr: SocketAddr,
    video: bool,
    audio: bool,
) -> (Rtc, String, str0m::change::SdpPendingOffer, Option<Mid>) {
    let mut rtc = config.build(Instant::now());
    rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
    let mut api = rtc.sdp_api();
    let mid = video.then(|| api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None));
    if audio {
        api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    }
    let (offer, pending) = api.apply().expect("an offer");
    (rtc, offer.to_sdp_string(), pending, mid)
}

#[tokio::test]
async fn offers_the_relay_cannot_serve_are_refused_and_nothing_is_listed() {
    let server = start(common::config()).await;
    let gw = Client::join(&server, "r", "gateway", true).await;
    let mut watcher = Client::join(&server, "r", "watcher", true).await;
    let addr: SocketAddr = ([127, 0, 0, 1], 5000).into();

    let (_, vp8, ..) = offer(client(Some((Codec::Vp8, 0)), false), addr, true, false);
    let (_, vp8_and_opus, ..) = offer(client(Some((Codec::Vp8, 0)), true), addr, true, true);
    let no_media = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n".to_owned();
    for (what, sdp) in [
        ("VP8 only", vp8),
        ("VP8 and Opus", vp8_and_opus),
        ("no media", no_media),
    ] {
        match gw.publish_offer("gateway-cam", sdp).await {
            Err(SignalingError::Refused(body)) => {
                assert_eq!(body.code, ErrorCode::InvalidArgument, "{what}: {}", body.message);
                if what != "no media" {
                    assert!(
                        body.message.contains("H.264"),
                        "{what}: names what is taken: {}",
                        body.message
                    );
                }
            }
            other => panic!("{what}: expected a refusal, got {other:?}"),
        }
    }
    assert!(
        server.snapshot().rooms.iter().all(|r| r.streams.is_empty()),
        "nothing listed"
    );

    // Audio alone is something the relay forwards.
    let (_, opus, ..) = offer(client(None, true), addr, false, true);
    let answer = gw
        .publish_offer("gateway-mic", opus)
        .await
        .expect("audio only is taken");
    assert!(matches!(answer, ResponseBody::Publishing { sdp_answer: Some(_) }));
    let listed = watcher.next_event().await;
    assert!(matches!(listed, Event::RoomStreamUpdate { .. }), "{listed:?}");
    assert!(
        watcher
            .seen
            .iter()
            .filter(|(_, e)| matches!(e, Event::RoomStreamUpdate { .. }))
            .count()
            == 1,
        "only the stream with media behind it was listed: {:?}",
        watcher.seen
    );
}

/// Runs a str0m publisher on a UDP socket: once connected it sends the test pattern encoded
/// by OpenH264 at 15 fps (keyframes when asked), until `until`.
async fn run_publisher(mut rtc: Rtc, socket: tokio::net::UdpSocket, mid: Mid, until: Instant) {
    let local = socket.local_addr().expect("address");
    let mut pattern = TestPattern::new(320, 180).expect("size");
    let mut encoder = H264Encoder::new(EncoderSettings::for_size(320, 180, 15.0)).expect("encoder");
    let start = Instant::now();
    let mut next_frame = start;
    let mut frame_number = 0u64;
    let mut connected = false;
    let mut buf = vec![0u8; 2000];
    while Instant::now() < until {
        let timeout = loop {
            match rtc.poll_output().expect("output") {
                Output::Timeout(at) => break at,
                Output::Transmit(t) => {
                    let _ = socket.send_to(&t.contents, t.destination).await;
                }
                Output::Event(RtcEvent::Connected) => connected = true,
                Output::Event(RtcEvent::KeyframeRequest(_)) => encoder.request_keyframe(),
                Output::Event(_) => {}
            }
        };
        let wake = if connected { timeout.min(next_frame) } else { timeout };
        let wake = tokio::time::Instant::from_std(wake.max(Instant::now()));
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let Ok((n, source)) = received else { continue };
                let Ok(contents) = buf[..n].try_into() else { continue };
                let input = Input::Receive(Instant::now(), Receive { proto: Protocol::Udp, source, destination: local, contents });
                rtc.handle_input(input).expect("input");
            }
            () = tokio::time::sleep_until(wake) => {
                rtc.handle_input(Input::Timeout(Instant::now())).expect("timeout");
            }
        }
        if connected && Instant::now() >= next_frame {
            let captured = next_frame.duration_since(start);
            let frame = pattern.next_frame(captured.as_micros() as u64);
            if let Some(encoded) = encoder.encode(&frame).expect("encodes") {
                let writer = rtc.writer(mid).expect("a writer");
                let pt = writer.payload_params().next().expect("a negotiated codec").pt();
                let rtp_time = MediaTime::from_90khz(frame_number * 6000);
                writer
                    .write(pt, Instant::now(), rtp_time, encoded.data)
                    .expect("writes");
            }
            frame_number += 1;
            next_frame += Duration::from_micros(66_667);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_baseline_h264_publisher_of_another_stack_is_seen_by_a_desktop_viewer() {
    let server = start(common::config()).await;
    let gw = Client::join(&server, "r", "gateway", true).await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("binds");
    let addr = socket.local_addr().expect("address");
    let (mut rtc, sdp, pending, mid) = offer(client(Some((Codec::H264, 0x42001f)), false), addr, true, false);
    assert!(sdp.contains("profile-level-id=42001f"), "{sdp}");
    let answer = match gw
        .publish_offer("gateway-cam", sdp)
        .await
        .expect("Baseline H.264 is taken")
    {
        ResponseBody::Publishing {
            sdp_answer: Some(answer),
        } => answer,
        other => panic!("{other:?}"),
    };
    assert!(
        answer.contains("a=end-of-candidates") && !answer.contains("trickle"),
        "{answer}"
    );
    rtc.sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).expect("answer parses"))
        .expect("answer accepted");
    let until = Instant::now() + Duration::from_secs(20);
    let publisher = tokio::spawn(run_publisher(rtc, socket, mid.expect("video"), until));

    let viewer = UserId::new("viewer").expect("valid");
    let bot = Bot::start(BotConfig {
        server_url: server.ws_url(),
        room_id: RoomId::new("r").expect("valid"),
        user: UserInfo {
            user_id: viewer.clone(),
            user_name: "Viewer".into(),
        },
        token: TokenSource::Fixed(token(&server, "r", "viewer")),
        publish: None,
        plays: true,
    })
    .expect("bot starts");
    let cam = stream("gateway-cam");
    let deadline = Instant::now() + WAIT;
    let first = loop {
        let received = bot.status().received.get(&cam).cloned().unwrap_or_default();
        if let Some(number) = received.last_frame_number {
            break number;
        }
        if Instant::now() > deadline {
            let counters = server.media_counters().await;
            panic!(
                "no decoded frame from the gateway: {:?}; relay {counters:?}",
                bot.status()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let received = bot.status().received.get(&cam).cloned().unwrap_or_default();
    assert!(
        received.last_frame_number.is_some_and(|n| n > first + 5),
        "frames keep coming, their codes read back: {received:?}"
    );
    assert_eq!(received.size, (320, 180));
    drop(bot);
    publisher.abort();
}

#[tokio::test]
async fn the_same_stream_id_in_two_rooms_is_two_streams() {
    let server = start(common::config()).await;
    let ann = Client::join(&server, "a", "ann", true).await;
    let bob = Client::join(&server, "b", "bob", true).await;
    let cat = Client::join(&server, "a", "cat", true).await;
    let addr: SocketAddr = ([127, 0, 0, 1], 5000).into();
    let h264 = || offer(client(Some((Codec::H264, 0x42e01f)), true), addr, true, true).1;
    for who in [&ann, &bob] {
        who.publish_offer("team-cam", h264())
            .await
            .expect("each room has its own team-cam, media and all");
    }
    let rooms = server.snapshot().rooms;
    assert_eq!(rooms.len(), 2);
    assert!(rooms.iter().all(|r| r.streams.len() == 1), "{rooms:?}");
    // Within a room the ID stays its publisher's.
    match cat.publish_offer("team-cam", h264()).await {
        Err(SignalingError::Refused(body)) => assert_eq!(body.code, ErrorCode::StreamOwnedByOther),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// The first event `pick` takes, skipping others.
async fn until<T>(client: &mut Client, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
    loop {
        if let Some(found) = pick(&client.next_event().await) {
            return found;
        }
    }
}

#[tokio::test]
async fn a_publication_whose_media_never_comes_up_is_unlisted_and_its_publisher_told() {
    let mut config = common::config();
    config.media.connect_deadline = Duration::from_millis(800);
    let server = start(config).await;
    let mut gw = Client::join(&server, "r", "gateway", true).await;
    let mut watcher = Client::join(&server, "r", "watcher", true).await;
    // An offer whose client never runs: no ICE, no DTLS.
    let addr: SocketAddr = ([127, 0, 0, 1], 5000).into();
    let (_silent, sdp, ..) = offer(client(Some((Codec::H264, 0x42e01f)), true), addr, true, true);
    gw.publish_offer("gateway-cam", sdp)
        .await
        .expect("the offer is answered");
    until(&mut watcher, |e| {
        matches!(
            e,
            Event::RoomStreamUpdate {
                update: UpdateType::Add,
                ..
            }
        )
        .then_some(())
    })
    .await;
    let why = until(&mut gw, |e| match e {
        Event::PublishFailed { stream_id, message } if stream_id.as_str() == "gateway-cam" => Some(message.clone()),
        _ => None,
    })
    .await;
    assert!(why.contains("no media connection"), "{why}");
    until(&mut watcher, |e| {
        matches!(
            e,
            Event::RoomStreamUpdate {
                update: UpdateType::Delete,
                ..
            }
        )
        .then_some(())
    })
    .await;
    assert!(server.snapshot().rooms.iter().all(|r| r.streams.is_empty()), "unlisted");
}
