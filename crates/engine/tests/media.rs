//! Media end to end over loopback: engines publish the test pattern and a tone through the
//! server's SFU and others play them, with real WebRTC (webrtc-rs to str0m) and real codecs.
//! The tests run one at a time: they measure what arrives, and two cores are all there is.

use std::time::{Duration, Instant};

use holoroom_engine::media::{FrameCode, dominant_frequency, read_frame_code};
use holoroom_engine::protocol::timing::{FrameProbe, FrameStage};
use holoroom_engine::protocol::{ErrorCode, LoginConfig, RoomId, UpdateType, UserId, UserInfo, VideoGrant};
use holoroom_engine::signaling::SignalingError;
use holoroom_engine::{Engine, EngineConfig, EngineEvent, MediaError, PublisherState, StreamConfig, StreamQuality};
use holoroom_server::{Server, ServerConfig, SigningKey, TokenKeys};
use tokio::sync::Mutex;

mod common;

use common::{WAIT, first_frame, join, join_as, logged_in, play, publish, stream, wait_for};

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

async fn server() -> Server {
    common::server(b"media-test-secret-0123456").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pattern_arrives_whole_in_order_with_quality_reports() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let server = server().await;
    let alice = join(&server, "alice").await;
    let bob = join(&server, "bob").await;
    let _camera = publish(&alice, "alice-cam", StreamConfig::test_pattern(640, 360, 30.0)).await;
    wait_for(&bob, "stream ADD", |e| match e {
        EngineEvent::RoomStreamUpdate {
            update: UpdateType::Add,
            streams,
            ..
        } if streams[0].stream_id.as_str() == "alice-cam" => Some(()),
        _ => None,
    })
    .await;
    let (remote, _) = play(&bob, "alice-cam").await;
    let first = first_frame(&remote.video).await;
    assert_eq!((first.frame.width, first.frame.height), (640, 360));

    // Watch five seconds of video: every frame read has a code, codes only go up, and
    // nearly every frame sent was decoded.
    let start = remote.video.latest().expect("a frame");
    let start_code = start.code.expect("decoded frames carry the pattern's code");
    let mut seen = start.sequence;
    let mut last_number = start_code.frame_number;
    let until = Instant::now() + Duration::from_secs(5);
    let mut end = start.clone();
    while Instant::now() < until {
        if let Some(frame) = remote.video.newer_than(seen) {
            let code = frame.code.expect("every decoded frame carries its code");
            assert!(
                code.frame_number > last_number,
                "frame codes go up: {} after {last_number}",
                code.frame_number
            );
            assert_eq!((frame.frame.width, frame.frame.height), (640, 360));
            last_number = code.frame_number;
            seen = frame.sequence;
            end = frame;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let sent = u64::from(end.code.expect("coded").frame_number - start_code.frame_number);
    let decoded = end.sequence - start.sequence;
    assert!(sent >= 100, "about 150 frames are sent in 5 s at 30 fps, got {sent}");
    assert!(
        decoded as f64 >= 0.95 * sent as f64,
        "{decoded} of {sent} frames decoded"
    );

    let quality = |engine: &Engine, publishing: bool| {
        let mut last: Option<StreamQuality> = None;
        while let Ok(event) = engine.events().try_recv() {
            match event {
                EngineEvent::PublishQualityUpdate { quality, .. } if publishing => last = Some(quality),
                EngineEvent::PlayQualityUpdate { quality, .. } if !publishing => last = Some(quality),
                _ => {}
            }
        }
        last.expect("a quality report every two seconds")
    };
    let sent_quality = quality(&alice, true);
    let played_quality = quality(&bob, false);
    for (what, q) in [("publish", sent_quality), ("play", played_quality)] {
        assert!((20.0..=40.0).contains(&q.fps), "{what} fps {q:?}");
        assert!((100.0..=5000.0).contains(&q.kbps), "{what} kbps {q:?}");
        assert_eq!((q.width, q.height), (640, 360), "{what} size");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tone_arrives_at_its_pitch() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let server = server().await;
    let alice = join(&server, "alice").await;
    let bob = join(&server, "bob").await;
    let _camera = publish(&alice, "alice-cam", StreamConfig::test_pattern(320, 180, 15.0)).await;
    let (remote, _) = play(&bob, "alice-cam").await;
    let deadline = Instant::now() + WAIT;
    while remote.audio.len() < 24_000 {
        assert!(Instant::now() < deadline, "half a second of sound arrives");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Skip the first packets while the decoder settles, then measure.
    let _ = remote.audio.take(4_800);
    let samples = remote.audio.take(19_200);
    let pitch = dominant_frequency(&samples, 300.0, 600.0).expect("not silence");
    assert!((pitch - 440.0).abs() <= 5.0, "heard {pitch} Hz");
}

/// Waits until `engine` is told alice's camera stream has these switches.
async fn told_mute(engine: &Engine, audio: bool, video: bool) {
    wait_for(engine, "the stream's mute state", move |e| match e {
        EngineEvent::StreamMuteUpdate { streams, .. }
            if streams[0].stream_id.as_str() == "alice-cam"
                && streams[0].mute.audio == audio
                && streams[0].mute.video == video =>
        {
            Some(())
        }
        _ => None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn muting_the_microphone_and_the_camera_reaches_the_listener() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let server = server().await;
    let alice = join(&server, "alice").await;
    let bob = join(&server, "bob").await;
    let camera = publish(&alice, "alice-cam", StreamConfig::test_pattern(320, 180, 15.0)).await;
    let (remote, _) = play(&bob, "alice-cam").await;
    let _ = first_frame(&remote.video).await;

    // Half a second of what bob receives, from now on.
    let listen = |remote: &holoroom_engine::RemoteStream| {
        let audio = remote.audio.clone();
        async move {
            let _ = audio.take(usize::MAX);
            tokio::time::sleep(Duration::from_millis(600)).await;
            let samples = audio.take(usize::MAX);
            (samples.iter().map(|s| s * s).sum::<f32>() / samples.len().max(1) as f32).sqrt()
        }
    };
    // Waits for a decoded frame that satisfies `test`.
    let watch = |remote: &holoroom_engine::RemoteStream, test: fn(&holoroom_engine::media::VideoFrame) -> bool| {
        let slot = remote.video.clone();
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + WAIT;
            let mut seen = slot.latest().map_or(0, |f| f.sequence);
            while Instant::now() < deadline {
                if let Some(frame) = slot.wait_newer_than(seen, Duration::from_millis(200)) {
                    seen = frame.sequence;
                    if test(&frame.frame) {
                        return true;
                    }
                }
            }
            false
        })
    };
    let loud = listen(&remote).await;
    assert!(loud > 0.1, "the tone plays first (rms {loud})");

    // Both switches through the engine: the room is told, not only the media.
    alice.mute_stream_audio(&camera, true);
    alice.mute_stream_video(&camera, true);
    told_mute(&bob, true, true).await;
    // Someone who comes later finds the stream listed muted.
    let carol = join(&server, "carol").await;
    let listed = wait_for(&carol, "alice's stream", |e| match e {
        EngineEvent::RoomStreamUpdate {
            update: UpdateType::Add,
            streams,
            ..
        } => streams
            .iter()
            .find(|s| s.stream_id.as_str() == "alice-cam")
            .map(|s| s.mute),
        _ => None,
    })
    .await;
    assert!(listed.audio && listed.video, "{listed:?}");
    // What was already on its way (the receive buffers) plays out first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let quiet = listen(&remote).await;
    assert!(quiet < 0.01, "muted means silence (rms {quiet})");
    let black = |f: &holoroom_engine::media::VideoFrame| {
        let visible = f.y.chunks(f.y_stride).take(f.height as usize);
        read_frame_code(f).is_none()
            && visible
                .flat_map(|row| &row[..f.width as usize])
                .all(|&y| (12..=24).contains(&y))
    };
    assert!(
        watch(&remote, black).await.expect("watch"),
        "camera off arrives as black"
    );

    alice.mute_stream_audio(&camera, false);
    told_mute(&bob, false, true).await;
    alice.mute_stream_video(&camera, false);
    told_mute(&carol, false, false).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let back = listen(&remote).await;
    assert!(back > 0.1, "the tone is back (rms {back})");
    let coded = |f: &holoroom_engine::media::VideoFrame| read_frame_code(f).is_some();
    assert!(watch(&remote, coded).await.expect("watch"), "the picture is back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_carry_their_capture_time_and_every_stage_is_marked_in_order() {
    let _serial = ONE_AT_A_TIME.lock().await;
    type Marks = std::sync::Arc<std::sync::Mutex<Vec<(u64, FrameStage, Instant)>>>;
    let marks: Marks = Default::default();
    let probe = {
        let marks = marks.clone();
        FrameProbe(std::sync::Arc::new(move |capture_us, stage| {
            marks.lock().expect("marks").push((capture_us, stage, Instant::now()));
        }))
    };
    let mut config = ServerConfig::new(TokenKeys::new(SigningKey::new(
        "k1",
        b"media-test-secret-0123456".to_vec(),
    )));
    config.media.probe = Some(probe.clone());
    let server = Server::bind("127.0.0.1:0", config).await.expect("server binds");
    let traced = |user: &str| {
        let engine = Engine::new(EngineConfig {
            frame_probe: Some(probe.clone()),
            ..EngineConfig::new(server.ws_url())
        })
        .expect("engine starts");
        let user_id = UserId::new(user).expect("valid");
        let token = server.keys().mint(VideoGrant::participant("r"), &user_id, None, 3600);
        engine.login_room(
            RoomId::new("r").expect("valid"),
            token,
            UserInfo {
                user_id,
                user_name: user.into(),
            },
            LoginConfig { user_update: true },
        );
        engine
    };
    let alice = traced("alice");
    logged_in(&alice).await;
    let bob = traced("bob");
    logged_in(&bob).await;
    let _camera = publish(&alice, "alice-cam", StreamConfig::test_pattern(320, 180, 15.0)).await;
    let (remote, _) = play(&bob, "alice-cam").await;
    let frame = first_frame(&remote.video).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The capture time came with the picture: it matches the pattern's own code.
    let capture = frame.capture_us.expect("a capture time");
    let code = frame.code.expect("a frame code");
    let capture_low = capture & FrameCode::TIME_MASK;
    assert!(
        capture_low.abs_diff(code.capture_micros) < 5_000,
        "{capture_low} vs {}",
        code.capture_micros
    );

    // Some frame passed all five stages, in order.
    let marks = marks.lock().expect("marks").clone();
    let stages = [
        FrameStage::Encoded,
        FrameStage::SfuIn,
        FrameStage::SfuOut,
        FrameStage::Received,
        FrameStage::Decoded,
    ];
    let complete = marks
        .iter()
        .filter(|(_, stage, _)| *stage == FrameStage::Decoded)
        .filter_map(|(capture, _, _)| {
            let times: Option<Vec<Instant>> = stages
                .iter()
                .map(|stage| marks.iter().find(|(c, s, _)| c == capture && s == stage).map(|m| m.2))
                .collect();
            times
        })
        .collect::<Vec<_>>();
    assert!(complete.len() > 3, "frames marked at every stage: {}", complete.len());
    for times in complete {
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "stages out of order: {times:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_subscriber_sees_a_picture_within_a_second() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let server = server().await;
    let alice = join(&server, "alice").await;
    let _camera = publish(&alice, "alice-cam", StreamConfig::test_pattern(640, 360, 30.0)).await;
    // Well past the first keyframe; the next periodic one is seconds away.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let carol = join(&server, "carol").await;
    let (remote, connected) = play(&carol, "alice-cam").await;
    let frame = first_frame(&remote.video).await;
    let waited = frame.at.saturating_duration_since(connected);
    assert!(
        waited <= Duration::from_secs(1),
        "first frame {waited:?} after connecting"
    );
    assert!(frame.code.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_and_leaving_clean_up_everywhere() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let server = server().await;
    let alice = join(&server, "alice").await;
    let bob = join(&server, "bob").await;
    let _camera = publish(&alice, "alice-cam", StreamConfig::test_pattern(320, 180, 15.0)).await;
    let (remote, _) = play(&bob, "alice-cam").await;
    first_frame(&remote.video).await;

    alice.stop_publishing_stream(stream("alice-cam"));
    wait_for(&bob, "stream DELETE", |e| match e {
        EngineEvent::RoomStreamUpdate {
            update: UpdateType::Delete,
            streams,
            ..
        } if streams[0].stream_id.as_str() == "alice-cam" => Some(()),
        _ => None,
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let settled = remote.video.count();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(remote.video.count(), settled, "frames stop with the stream");
    bob.stop_playing_stream(stream("alice-cam"));
    let counters = server.media_counters().await.expect("SFU running");
    assert_eq!(counters.publishers, 0, "{counters:?}");

    // Publishing again and logging out removes the stream and the member.
    let _again = publish(&alice, "alice-cam-2", StreamConfig::test_pattern(320, 180, 15.0)).await;
    alice.logout_room();
    wait_for(&bob, "stream DELETE on logout", |e| match e {
        EngineEvent::RoomStreamUpdate {
            update: UpdateType::Delete,
            streams,
            ..
        } if streams[0].stream_id.as_str() == "alice-cam-2" => Some(()),
        _ => None,
    })
    .await;
    wait_for(&bob, "user DELETE on logout", |e| match e {
        EngineEvent::RoomUserUpdate {
            update: UpdateType::Delete,
            ..
        } => Some(()),
        _ => None,
    })
    .await;
    let room = &server.snapshot().rooms[0];
    assert!(room.streams.is_empty() && room.users.len() == 1, "{room:?}");
    let deadline = Instant::now() + WAIT;
    while server.media_counters().await.expect("SFU running").publishers > 0 {
        assert!(Instant::now() < deadline, "the SFU drops the publisher");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spectator_plays_but_cannot_publish() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let server = server().await;
    let alice = join(&server, "alice").await;
    let _camera = publish(&alice, "alice-cam", StreamConfig::test_pattern(320, 180, 15.0)).await;
    let spectator = join_as(&server, "watcher", VideoGrant::spectator("r"));
    logged_in(&spectator).await;
    let (remote, _) = play(&spectator, "alice-cam").await;
    assert!(first_frame(&remote.video).await.code.is_some());

    let local = spectator
        .create_stream(StreamConfig::test_pattern(320, 180, 15.0))
        .expect("capture works");
    spectator.start_publishing_stream(stream("watcher-cam"), &local);
    let error = wait_for(&spectator, "refusal", |e| match e {
        EngineEvent::PublisherStateUpdate {
            state: PublisherState::NoPublish,
            error,
            ..
        } => Some(error.clone()),
        _ => None,
    })
    .await;
    assert!(
        matches!(error, Some(MediaError::Signaling(SignalingError::Refused(ref body))) if body.code == ErrorCode::PermissionDenied),
        "{error:?}"
    );
    assert_eq!(server.snapshot().rooms[0].users.len(), 1, "the spectator is not listed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_people_all_see_each_other() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let server = server().await;
    let names: Vec<String> = (0..6).map(|i| format!("p{i}")).collect();
    let mut engines = Vec::new();
    for name in &names {
        engines.push(join(&server, name).await);
    }
    let mut cameras = Vec::new();
    for (engine, name) in engines.iter().zip(&names) {
        cameras.push(
            publish(
                engine,
                &format!("{name}-cam"),
                StreamConfig::test_pattern(320, 180, 15.0),
            )
            .await,
        );
    }
    let mut playing = Vec::new();
    for (engine, me) in engines.iter().zip(&names) {
        for other in names.iter().filter(|n| *n != me) {
            let (remote, _) = play(engine, &format!("{other}-cam")).await;
            playing.push((me.clone(), other.clone(), remote));
        }
    }
    assert_eq!(playing.len(), 30);
    for (me, other, remote) in &playing {
        let frame = first_frame(&remote.video).await;
        assert!(frame.code.is_some(), "{me} sees {other}'s pattern");
        // Thirty connections on two cores: a downlink estimate may start a viewer on a lower
        // simulcast layer.
        assert!(
            [(320, 180), (160, 90), (80, 44)].contains(&(frame.frame.width, frame.frame.height)),
            "{me} sees {other} at a layer's size: {}x{}",
            frame.frame.width,
            frame.frame.height
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_bots_in_a_room_see_each_other() {
    use holoroom_engine::TokenSource;
    use holoroom_engine::bot::{Bot, BotConfig};

    let _serial = ONE_AT_A_TIME.lock().await;
    let mut config = ServerConfig::new(TokenKeys::new(SigningKey::generate("dev")));
    config.dev_tokens = true;
    let server = Server::bind("127.0.0.1:0", config).await.expect("server binds");
    let url = server.ws_url();
    let bots = tokio::task::spawn_blocking(move || {
        ["bot-a", "bot-b"].map(|name| {
            let user = UserInfo {
                user_id: UserId::new(name).expect("valid"),
                user_name: name.to_uppercase(),
            };
            let room = RoomId::new("demo").expect("valid");
            // The engine asks the dev server's guest endpoint itself.
            let token = TokenSource::Guest {
                server_url: url.clone(),
                spectator: false,
            };
            Bot::start(BotConfig {
                server_url: url.clone(),
                room_id: room,
                user,
                token,
                publish: Some(StreamConfig::test_pattern(320, 180, 15.0)),
                plays: true,
            })
            .expect("bot starts")
        })
    })
    .await
    .expect("bots start");
    let deadline = Instant::now() + WAIT;
    loop {
        let statuses: Vec<_> = bots.iter().map(Bot::status).collect();
        let done = statuses.iter().all(|s| {
            s.users.len() == 1
                && s.received.len() == 1
                && s.received
                    .values()
                    .all(|r| r.frames >= 10 && r.last_frame_number.is_some() && r.audio_samples > 0)
        });
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "bots see each other: {statuses:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn system_requirements_say_what_is_missing_and_why() {
    let requirements = holoroom_engine::check_system_requirements();
    assert!(requirements.can_call(), "{requirements:?}");
    assert_eq!(requirements.video_codecs, vec!["H264"]);
    // Each item agrees with the devices found, and a missing one names the stand-in.
    let cameras = holoroom_engine::devices::cameras();
    assert_eq!(requirements.camera.is_ok(), !cameras.is_empty(), "{requirements:?}");
    if let Err(why) = &requirements.camera {
        assert!(why.contains("test pattern"), "{why}");
    }
    let microphone = holoroom_engine::devices::Microphone::open(None, Default::default());
    assert_eq!(requirements.microphone.is_ok(), microphone.is_ok(), "{requirements:?}");
    if let Err(why) = &requirements.microphone {
        assert!(why.contains("silence"), "{why}");
    }
}
