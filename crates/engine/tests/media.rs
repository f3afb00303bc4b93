//! Media end to end over loopback: engine A publishes the test pattern through the server's
//! SFU, engine B plays it, with real WebRTC (webrtc-rs to str0m) and real H.264.

use std::time::{Duration, Instant};

use holoroom_engine::protocol::{
    LoginConfig, RoomId, RoomStateReason, StreamId, UpdateType, UserId, UserInfo, VideoGrant,
};
use holoroom_engine::{Engine, EngineConfig, EngineEvent, PlayerState, PublisherState, StreamConfig};
use holoroom_server::{Server, ServerConfig, SigningKey, TokenKeys};

const WAIT: Duration = Duration::from_secs(15);

async fn server() -> Server {
    let config = ServerConfig::new(TokenKeys::new(SigningKey::new(
        "k1",
        b"media-test-secret-0123456".to_vec(),
    )));
    Server::bind("127.0.0.1:0", config).await.expect("server binds")
}

fn join(server: &Server, user: &str) -> Engine {
    let engine = Engine::new(EngineConfig::new(server.ws_url())).expect("engine starts");
    let user_id = UserId::new(user).expect("valid");
    let token = server.keys().mint(VideoGrant::participant("r"), &user_id, None, 3600);
    engine.login_room(
        RoomId::new("r").expect("valid"),
        token,
        UserInfo {
            user_id,
            user_name: user.to_uppercase(),
        },
        LoginConfig { user_update: true },
    );
    engine
}

/// Waits for the first event that `pick` accepts, skipping others.
async fn wait_for<T>(engine: &Engine, what: &str, mut pick: impl FnMut(&EngineEvent) -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(event) = engine.events().try_recv() {
            if let Some(value) = pick(&event) {
                return value;
            }
            continue;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn logged_in(engine: &Engine) {
    wait_for(engine, "Logined", |e| match e {
        EngineEvent::RoomStateChanged {
            reason: RoomStateReason::Logined,
            ..
        } => Some(()),
        EngineEvent::RoomStateChanged {
            reason: RoomStateReason::LoginFailed,
            error,
            ..
        } => panic!("login failed: {error:?}"),
        _ => None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_pattern_plays_on_the_other_side() {
    let server = server().await;
    let alice = join(&server, "alice");
    logged_in(&alice).await;
    let bob = join(&server, "bob");
    logged_in(&bob).await;

    let camera = alice
        .create_stream(StreamConfig::test_pattern(640, 360, 30.0))
        .expect("pattern stream");
    let stream_id = StreamId::new("alice-cam").expect("valid");
    alice.start_publishing_stream(stream_id.clone(), &camera);
    wait_for(&alice, "Publishing", |e| match e {
        EngineEvent::PublisherStateUpdate {
            state: PublisherState::Publishing,
            ..
        } => Some(()),
        EngineEvent::PublisherStateUpdate {
            state: PublisherState::NoPublish,
            error,
            ..
        } => panic!("publish failed: {error:?}"),
        _ => None,
    })
    .await;

    wait_for(&bob, "stream ADD", |e| match e {
        EngineEvent::RoomStreamUpdate {
            update: UpdateType::Add,
            streams,
            ..
        } if streams[0].stream_id == stream_id => Some(()),
        _ => None,
    })
    .await;
    let slot = bob.start_playing_stream(stream_id.clone());
    wait_for(&bob, "Playing", |e| match e {
        EngineEvent::PlayerStateUpdate {
            state: PlayerState::Playing,
            ..
        } => Some(()),
        EngineEvent::PlayerStateUpdate {
            state: PlayerState::NoPlay,
            error,
            ..
        } => panic!("play failed: {error:?}"),
        _ => None,
    })
    .await;
    let first = tokio::task::spawn_blocking({
        let slot = slot.clone();
        move || slot.wait_newer_than(0, WAIT)
    })
    .await
    .expect("wait task")
    .expect("a decoded frame arrives");
    assert_eq!((first.frame.width, first.frame.height), (640, 360));
    assert!(first.code.is_some(), "the decoded frame carries the pattern's code");
}
