//! The room machine's promises, end to end against a real server: nothing waits behind a
//! slow answer, tokens are renewed from the app's source before they expire (on the server's
//! clock, moved on by the test), and a stream ID
//! republished many times in a row (a device switch) ends listed and playing.

use std::time::{Duration, Instant};

use holoroom_engine::protocol::{KickoutReason, LoginConfig, Pose, RoomId, UpdateType, UserId, UserInfo, VideoGrant};
use holoroom_engine::{Engine, EngineConfig, EngineEvent, PublisherState, StreamConfig, TokenRequest, TokenSource};
use holoroom_server::{Server, ServerConfig, SigningKey, TokenKeys};
use holoroom_testkit::Relay;
use tokio::sync::Mutex;

mod common;

use common::{WAIT, first_frame, join, logged_in, play, publish, stream, wait_for};

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

async fn server(config: impl FnOnce(&mut ServerConfig)) -> Server {
    // No leeway: a token ends at its `exp`.
    let keys = TokenKeys::new(SigningKey::new("k1", b"session-test-secret-01234".to_vec())).with_leeway(0);
    let mut server_config = ServerConfig::new(keys);
    config(&mut server_config);
    Server::bind("127.0.0.1:0", server_config).await.expect("server binds")
}

fn user(id: &str) -> UserInfo {
    UserInfo {
        user_id: UserId::new(id).expect("valid"),
        user_name: id.to_uppercase(),
    }
}

fn room() -> RoomId {
    RoomId::new("r").expect("valid")
}

fn pose(x: f32) -> Pose {
    Pose {
        position: [x, 0.0, 0.0],
        ..Pose::IDENTITY
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_does_not_wait_behind_poses_on_a_slow_signaling_path() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let server = server(|_| {}).await;
    // 150 ms each way on signaling: a 300 ms round trip, longer than the 66 ms between poses.
    let one_way = Duration::from_millis(150);
    let round_trip = one_way * 2;
    let relay = Relay::start_with_delay(server.local_addr(), one_way).await;
    let observer = join(&server, "bob").await;
    let alice = Engine::new(EngineConfig::new(relay.url())).expect("engine");
    let token = server.keys().mint(
        VideoGrant::participant("r"),
        &UserId::new("alice").expect("valid"),
        None,
        3600,
    );
    alice.login_room(room(), token, user("alice"), LoginConfig { user_update: true });
    logged_in(&alice).await;

    // A pose every 66 ms for 10 s; a publication starts half way.
    let camera = alice
        .create_stream(StreamConfig::test_pattern(320, 180, 15.0))
        .expect("pattern");
    let started = Instant::now();
    let mut sent = 0u32;
    let mut publish_asked = None;
    let mut published_after = None;
    while started.elapsed() < Duration::from_secs(10) {
        sent += 1;
        alice.set_pose(pose(sent as f32));
        if publish_asked.is_none() && started.elapsed() >= Duration::from_secs(5) {
            alice.start_publishing_stream(stream("alice-cam"), &camera);
            publish_asked = Some(Instant::now());
        }
        for event in alice.events().try_iter() {
            match event {
                EngineEvent::PublisherStateUpdate {
                    state: PublisherState::Publishing,
                    ..
                } => published_after = publish_asked.map(|at| at.elapsed()),
                EngineEvent::RequestFailed { request, error } => panic!("{request:?} failed: {error}"),
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(66)).await;
    }
    let last_sent = Instant::now();
    let published_after = published_after.expect("the publication came up while poses kept flowing");
    // Two signaling round trips and the media connection (loopback, not delayed).
    assert!(
        published_after < round_trip * 2 + Duration::from_secs(1),
        "publishing took {published_after:?} with a {round_trip:?} round trip: it waited behind poses"
    );

    // Poses are latest-wins: about one per round trip reached the room, never a backlog, and
    // the last one sent arrives promptly.
    let mut received = 0u32;
    wait_for(&observer, "the last pose", |e| match e {
        EngineEvent::PoseUpdate { pose, .. } => {
            received += 1;
            (pose.position[0] == sent as f32).then_some(())
        }
        _ => None,
    })
    .await;
    let settled = last_sent.elapsed();
    assert!(
        settled < round_trip * 3,
        "the last pose arrived {settled:?} after it was sent: poses queued up"
    );
    let most = 10_000 / round_trip.as_millis() as u32 + 6;
    assert!(
        received <= most && received < sent,
        "{received} of {sent} poses reached the room: more than one per round trip went out"
    );
}

/// A source that mints tokens living `lifetime` seconds with the server's keys, on the
/// server's clock, as an app's backend would.
fn minting(server: &Server, lifetime: u64) -> TokenSource {
    let (keys, clock) = (server.keys().clone(), server.clock().clone());
    TokenSource::mint(move |request: &TokenRequest| {
        Ok(keys.mint_at(
            clock.unix_now(),
            VideoGrant::participant(request.room_id.as_str()),
            &request.user.user_id,
            None,
            lifetime,
        ))
    })
}

/// Waits for an event `pick` accepts; any room state change other than Logined fails.
async fn expect(engine: &Engine, what: &str, mut pick: impl FnMut(&EngineEvent) -> bool) {
    wait_for(engine, what, |event| match event {
        EngineEvent::RequestFailed { request, error } => panic!("{request:?} failed while waiting for {what}: {error}"),
        event if pick(event) => Some(()),
        _ => None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_the_source_are_renewed_before_they_expire() {
    let _serial = ONE_AT_A_TIME.lock().await;
    // 40 s tokens, warned 30 s ahead, on the server's clock, which the test moves on.
    let server = server(|_| {}).await;
    let clock = server.clock().clone();
    let alice = Engine::new(EngineConfig::new(server.ws_url())).expect("engine");
    alice.login_room(room(), minting(&server, 40), user("alice"), LoginConfig::default());
    logged_in(&alice).await;
    let bob = Engine::new(EngineConfig::new(server.ws_url())).expect("engine");
    let fixed = server.keys().mint_at(
        clock.unix_now(),
        VideoGrant::participant("r"),
        &UserId::new("bob").expect("valid"),
        None,
        40,
    );
    bob.login_room(room(), fixed, user("bob"), LoginConfig::default());
    logged_in(&bob).await;
    let renewed = |e: &EngineEvent| matches!(e, EngineEvent::TokenRenewed { .. });

    // 11 s in: both are warned; alice's source gives her a new token.
    clock.advance(Duration::from_secs(11));
    expect(&alice, "the first renewal", renewed).await;
    expect(&bob, "the warning", |e| {
        matches!(e, EngineEvent::TokenWillExpire { .. })
    })
    .await;
    // 41 s in, past the first tokens' expiry: bob, with a fixed token, is out; alice renews again.
    clock.advance(Duration::from_secs(30));
    expect(&bob, "the kick-out at expiry", |e| {
        matches!(
            e,
            EngineEvent::RoomStateChanged {
                kickout: Some(KickoutReason::TokenExpired),
                ..
            }
        )
    })
    .await;
    expect(&alice, "the second renewal", renewed).await;
    // 71 s in: still there, renewed once more.
    clock.advance(Duration::from_secs(30));
    expect(&alice, "the third renewal", renewed).await;
    for event in alice.events().try_iter() {
        if let EngineEvent::RoomStateChanged { reason, kickout, .. } = event {
            panic!("alice left the room: {reason:?} {kickout:?}");
        }
    }
    let users = &server.snapshot().rooms[0].users;
    assert_eq!(users.len(), 1, "alice is still in the room, alone: {users:?}");
    assert_eq!(users[0].user_id.as_str(), "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_id_republished_twenty_times_ends_listed_and_playing() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let server = server(|_| {}).await;
    let alice = join(&server, "alice").await;
    let bob = join(&server, "bob").await;
    let config = || StreamConfig::test_pattern(320, 180, 15.0);
    let mut camera = publish(&alice, "alice-cam", config()).await;
    // A device switch, twenty times as fast as the app can: stop, then publish a new stream
    // under the same ID at once.
    for _ in 0..20 {
        let next = alice.create_stream(config()).expect("pattern");
        alice.stop_publishing_stream(stream("alice-cam"));
        alice.destroy_stream(&camera);
        alice.start_publishing_stream(stream("alice-cam"), &next);
        camera = next;
    }
    // The last one comes up...
    let mut failures = Vec::new();
    let deadline = Instant::now() + WAIT;
    let mut publishing = false;
    while !publishing {
        assert!(
            Instant::now() < deadline,
            "the final stream never published: {failures:?}"
        );
        for event in alice.events().try_iter() {
            match event {
                EngineEvent::PublisherStateUpdate { state, error, .. } => {
                    if let Some(error) = error {
                        failures.push(error);
                    }
                    publishing = state == PublisherState::Publishing;
                }
                _ => continue,
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(failures.is_empty(), "replacements failed: {failures:?}");
    // ...and stays listed: give any late withdraw time to land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let streams = &server.snapshot().rooms[0].streams;
    assert_eq!(streams.len(), 1, "the final stream is listed: {streams:?}");
    // Bob, who saw every delete and add, ends with the stream added.
    let mut listed = false;
    for event in bob.events().try_iter() {
        if let EngineEvent::RoomStreamUpdate { update, streams, .. } = event
            && streams.iter().any(|s| s.stream_id == stream("alice-cam"))
        {
            listed = update == UpdateType::Add;
        }
    }
    assert!(listed, "bob's last word on alice-cam is an ADD");
    let (remote, _) = play(&bob, "alice-cam").await;
    let frame = first_frame(&remote.video).await;
    assert!(frame.frame.width == 320, "bob decodes the final stream");

    // Replacing without a stop (the engine swaps the source under the ID) keeps bob's
    // playback: frames keep arriving after five swaps.
    for _ in 0..5 {
        let next = alice.create_stream(config()).expect("pattern");
        alice.start_publishing_stream(stream("alice-cam"), &next);
        alice.destroy_stream(&camera);
        camera = next;
    }
    let seen = remote.video.count();
    let slot = remote.video.clone();
    let newer = tokio::task::spawn_blocking(move || slot.wait_newer_than(seen, WAIT))
        .await
        .expect("wait task");
    assert!(newer.is_some(), "bob keeps receiving after the swaps");
    assert_eq!(server.snapshot().rooms[0].streams.len(), 1);
}
