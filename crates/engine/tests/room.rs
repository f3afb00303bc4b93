//! The engine against a real room server on loopback: the room state machine, events,
//! reconnection through a connection we can cut, and a server that goes away.

use std::time::Duration;

use holoroom_engine::protocol::{
    ErrorCode, KickoutReason, LoginConfig, PublishRequest, Request, RoomId, RoomStateReason, StreamId, StreamSource,
    UpdateType, UserId, UserInfo, VideoGrant,
};
use holoroom_engine::signaling::{Signaling, login_request};
use holoroom_engine::{Engine, EngineConfig, EngineEvent, ReconnectPolicy, RoomError};
use holoroom_server::{Server, ServerConfig, SigningKey, TokenKeys};
use holoroom_testkit::Relay;
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(10);

async fn server(grace: Duration) -> Server {
    let mut config = ServerConfig::new(TokenKeys::new(SigningKey::new(
        "k1",
        b"engine-test-secret-123456".to_vec(),
    )));
    config.reconnect_grace = grace;
    Server::bind("127.0.0.1:0", config).await.expect("server binds")
}

fn room() -> RoomId {
    RoomId::new("r").expect("valid")
}

fn user(id: &str) -> UserInfo {
    UserInfo {
        user_id: UserId::new(id).expect("valid"),
        user_name: id.to_uppercase(),
    }
}

fn token(server: &Server, id: &str) -> String {
    server.keys().mint(
        VideoGrant::participant("r"),
        &UserId::new(id).expect("valid"),
        None,
        3600,
    )
}

/// The next engine event, waiting without blocking the runtime.
async fn next(engine: &Engine) -> EngineEvent {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(event) = engine.events().try_recv() {
            return event;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no engine event within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Events arriving within `quiet` of silence.
async fn drain(engine: &Engine, quiet: Duration) -> Vec<EngineEvent> {
    let mut out = Vec::new();
    let mut idle = tokio::time::Instant::now() + quiet;
    while tokio::time::Instant::now() < idle {
        if let Ok(event) = engine.events().try_recv() {
            out.push(event);
            idle = tokio::time::Instant::now() + quiet;
        } else {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    out
}

fn state(event: &EngineEvent) -> RoomStateReason {
    match event {
        EngineEvent::RoomStateChanged { reason, .. } => *reason,
        other => panic!("expected a room state change, got {other:?}"),
    }
}

async fn publisher(server: &Server, id: &str, stream: &str) -> Signaling {
    let (signaling, _events) = Signaling::connect(&server.ws_url()).await.expect("connects");
    signaling
        .login(login_request(
            &room(),
            &token(server, id),
            &user(id),
            &LoginConfig { user_update: true },
            None,
        ))
        .await
        .expect("logs in");
    signaling
        .request(Request::StartPublishing(PublishRequest {
            stream_id: StreamId::new(stream).expect("valid"),
            source: StreamSource::Camera,
            extra_info: String::new(),
            mute: Default::default(),
            sdp_offer: None,
            media_id: None,
        }))
        .await
        .expect("publishes");
    signaling
}

fn engine(url: String, give_up: Duration) -> Engine {
    let mut config = EngineConfig::new(url);
    config.reconnect = ReconnectPolicy {
        first_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(200),
        give_up_after: give_up,
    };
    Engine::new(config).expect("engine starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_reports_the_room_then_changes_then_logout() {
    let server = server(Duration::from_secs(5)).await;
    let _bob = publisher(&server, "bob", "bob-cam").await;
    let engine = engine(server.ws_url(), Duration::from_secs(5));
    engine.login_room(
        room(),
        token(&server, "alice"),
        user("alice"),
        LoginConfig { user_update: true },
    );

    assert_eq!(state(&next(&engine).await), RoomStateReason::Logining);
    assert_eq!(state(&next(&engine).await), RoomStateReason::Logined);
    assert!(
        matches!(next(&engine).await, EngineEvent::RoomUserUpdate { update: UpdateType::Add, ref users, .. } if users == &[user("bob")])
    );
    assert!(
        matches!(next(&engine).await, EngineEvent::RoomStreamUpdate { update: UpdateType::Add, ref streams, .. } if streams[0].stream_id.as_str() == "bob-cam")
    );

    let _carol = publisher(&server, "carol", "carol-cam").await;
    assert!(matches!(
        next(&engine).await,
        EngineEvent::RoomUserUpdate {
            update: UpdateType::Add,
            ..
        }
    ));
    assert!(matches!(
        next(&engine).await,
        EngineEvent::RoomStreamUpdate {
            update: UpdateType::Add,
            ..
        }
    ));

    engine.logout_room();
    assert_eq!(state(&next(&engine).await), RoomStateReason::Logout);
    assert_eq!(server.snapshot().rooms[0].users.len(), 2, "alice left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_and_unreachable_servers_fail_the_login_with_a_reason() {
    let server = server(Duration::from_secs(5)).await;
    let engine = engine(server.ws_url(), Duration::from_secs(5));
    engine.login_room(room(), "not-a-token", user("alice"), LoginConfig::default());
    assert_eq!(state(&next(&engine).await), RoomStateReason::Logining);
    match next(&engine).await {
        EngineEvent::RoomStateChanged {
            reason: RoomStateReason::LoginFailed,
            error: Some(RoomError::Refused(body)),
            ..
        } => assert_eq!(body.code, ErrorCode::TokenInvalid),
        other => panic!("expected LoginFailed with a refusal, got {other:?}"),
    }

    let closed_port = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        listener.local_addr().expect("address")
    };
    let nowhere = engine_for(format!("ws://{closed_port}/v1/ws"));
    nowhere.login_room(room(), token(&server, "alice"), user("alice"), LoginConfig::default());
    assert_eq!(state(&next(&nowhere).await), RoomStateReason::Logining);
    match next(&nowhere).await {
        EngineEvent::RoomStateChanged {
            reason: RoomStateReason::LoginFailed,
            error: Some(RoomError::Unreachable { url, .. }),
            ..
        } => assert!(url.contains(&closed_port.to_string())),
        other => panic!("expected LoginFailed Unreachable, got {other:?}"),
    }
}

fn engine_for(url: String) -> Engine {
    engine(url, Duration::from_secs(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_reconnects_and_reports_only_what_changed() {
    let server = server(Duration::from_secs(5)).await;
    let relay = Relay::start(server.local_addr()).await;
    let (watcher, mut watcher_events) = Signaling::connect(&server.ws_url()).await.expect("connects");
    watcher
        .login(login_request(
            &room(),
            &token(&server, "dave"),
            &user("dave"),
            &LoginConfig { user_update: true },
            None,
        ))
        .await
        .expect("dave logs in");

    let engine = engine(relay.url(), Duration::from_secs(5));
    engine.login_room(
        room(),
        token(&server, "alice"),
        user("alice"),
        LoginConfig { user_update: true },
    );
    assert_eq!(state(&next(&engine).await), RoomStateReason::Logining);
    assert_eq!(state(&next(&engine).await), RoomStateReason::Logined);
    assert!(
        matches!(next(&engine).await, EngineEvent::RoomUserUpdate { .. }),
        "dave is listed"
    );
    // Dave hears of alice once.
    assert!(matches!(
        watcher_events.recv().await,
        Some(holoroom_engine::signaling::SignalingEvent::Event { .. })
    ));

    relay.cut();
    assert_eq!(state(&next(&engine).await), RoomStateReason::Reconnecting);
    // While alice is away, bob arrives and publishes.
    let _bob = publisher(&server, "bob", "bob-cam").await;
    assert_eq!(state(&next(&engine).await), RoomStateReason::Reconnected);
    let after = drain(&engine, Duration::from_millis(300)).await;
    assert_eq!(after.len(), 2, "only bob and his stream are new: {after:?}");
    assert!(
        matches!(&after[0], EngineEvent::RoomUserUpdate { update: UpdateType::Add, users, .. } if users == &[user("bob")])
    );
    assert!(matches!(
        &after[1],
        EngineEvent::RoomStreamUpdate {
            update: UpdateType::Add,
            ..
        }
    ));

    // Dave saw bob arrive, but alice never left.
    let mut seen = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(300), watcher_events.recv()).await {
        seen.push(event);
    }
    let alice_left = seen.iter().any(|e| {
        matches!(
            e,
            holoroom_engine::signaling::SignalingEvent::Event {
                event: holoroom_engine::protocol::Event::RoomUserUpdate {
                    update: UpdateType::Delete,
                    ..
                },
                ..
            }
        )
    });
    assert!(!alice_left, "no flicker for others: {seen:?}");
    assert_eq!(server.snapshot().rooms[0].users.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_goes_away_ends_in_reconnect_failed() {
    let server = server(Duration::from_secs(5)).await;
    let relay = Relay::start(server.local_addr()).await;
    let engine = engine(relay.url(), Duration::from_millis(600));
    engine.login_room(room(), token(&server, "alice"), user("alice"), LoginConfig::default());
    assert_eq!(state(&next(&engine).await), RoomStateReason::Logining);
    assert_eq!(state(&next(&engine).await), RoomStateReason::Logined);
    relay.stop();
    assert_eq!(state(&next(&engine).await), RoomStateReason::Reconnecting);
    // Each failed attempt says why and when the next one is; then it gives up.
    let mut retries = 0;
    loop {
        match next(&engine).await {
            EngineEvent::ReconnectRetry {
                error: RoomError::Unreachable { .. },
                ..
            } => retries += 1,
            EngineEvent::RoomStateChanged {
                reason: RoomStateReason::ReconnectFailed,
                error: Some(RoomError::Unreachable { .. }),
                ..
            } => break,
            other => panic!("expected a retry or ReconnectFailed, got {other:?}"),
        }
    }
    assert!(retries > 0, "the attempts before giving up were announced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_login_elsewhere_is_a_kickout() {
    let server = server(Duration::from_secs(5)).await;
    let engine = engine(server.ws_url(), Duration::from_secs(5));
    engine.login_room(room(), token(&server, "alice"), user("alice"), LoginConfig::default());
    assert_eq!(state(&next(&engine).await), RoomStateReason::Logining);
    assert_eq!(state(&next(&engine).await), RoomStateReason::Logined);
    let _other = publisher(&server, "alice", "alice-phone").await;
    match next(&engine).await {
        EngineEvent::RoomStateChanged {
            reason: RoomStateReason::Kickout,
            kickout,
            ..
        } => assert_eq!(kickout, Some(KickoutReason::DuplicateLogin)),
        other => panic!("expected Kickout, got {other:?}"),
    }
    assert!(
        drain(&engine, Duration::from_millis(300)).await.is_empty(),
        "no reconnect after a kickout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_renew_through_the_engine() {
    let server = server(Duration::from_secs(5)).await;
    let engine = engine(server.ws_url(), Duration::from_secs(5));
    engine.login_room(room(), token(&server, "alice"), user("alice"), LoginConfig::default());
    assert_eq!(state(&next(&engine).await), RoomStateReason::Logining);
    assert_eq!(state(&next(&engine).await), RoomStateReason::Logined);
    engine.renew_token(token(&server, "alice"));
    assert!(matches!(next(&engine).await, EngineEvent::TokenRenewed { .. }));
    engine.renew_token(token(&server, "mallory"));
    assert!(matches!(
        next(&engine).await,
        EngineEvent::RequestFailed { error: RoomError::Refused(ref body), .. } if body.code == ErrorCode::TokenUserMismatch
    ));
}

/// Events until `engine` is told that `text` was said, and a little longer (so that a copy of
/// it would be seen too).
async fn until_said(engine: &Engine, text: &str) -> Vec<EngineEvent> {
    let mut events = Vec::new();
    while !said(&events).iter().any(|(_, t)| t == text) {
        events.push(next(engine).await);
    }
    events.extend(drain(engine, Duration::from_millis(200)).await);
    events
}

/// The chat messages among `events`, as (from, text).
fn said(events: &[EngineEvent]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            EngineEvent::RoomMessage { message, .. } => Some((message.from.user_id.to_string(), message.text.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_reaches_everyone_in_order_and_a_cut_loses_or_repeats_nothing() {
    let server = server(Duration::from_secs(5)).await;
    let relay = Relay::start(server.local_addr()).await;
    // Alice takes a while to come back: what is said meanwhile happens while she is away.
    let mut config = EngineConfig::new(relay.url());
    config.reconnect = ReconnectPolicy {
        first_delay: Duration::from_millis(400),
        max_delay: Duration::from_millis(400),
        give_up_after: Duration::from_secs(5),
    };
    let alice = Engine::new(config).expect("engine starts");
    let bob = engine_for(server.ws_url());
    for (engine, id) in [(&alice, "alice"), (&bob, "bob")] {
        engine.login_room(room(), token(&server, id), user(id), LoginConfig { user_update: true });
        assert_eq!(state(&next(engine).await), RoomStateReason::Logining);
        assert_eq!(state(&next(engine).await), RoomStateReason::Logined);
    }
    alice.send_room_message("one");
    let line = |from: &str, text: &str| (from.to_owned(), text.to_owned());
    assert_eq!(said(&until_said(&alice, "one").await), [line("alice", "one")]);
    assert_eq!(said(&until_said(&bob, "one").await), [line("alice", "one")]);

    // Two messages in flight when alice's connection is cut, bob speaking while she is away,
    // and one more written before she is back.
    alice.send_room_message("a1");
    alice.send_room_message("a2");
    relay.cut();
    bob.send_room_message("two");
    // The room has it once bob hears it back.
    let mut bob_saw = until_said(&bob, "two").await;
    alice.send_room_message("three");
    let alice_saw = until_said(&alice, "three").await;
    assert!(alice_saw.iter().any(|e| matches!(
        e,
        EngineEvent::RoomStateChanged {
            reason: RoomStateReason::Reconnected,
            ..
        }
    )));
    bob_saw.extend(until_said(&bob, "three").await);
    // Each once, alice's in the order she wrote them, whether they left before the cut or
    // after it; what she missed comes with her return.
    for (who, saw) in [("alice", said(&alice_saw)), ("bob", said(&bob_saw))] {
        let at = |text: &str| {
            let found: Vec<usize> = saw
                .iter()
                .enumerate()
                .filter(|(_, (_, t))| t == text)
                .map(|(n, _)| n)
                .collect();
            assert_eq!(
                found.len(),
                1,
                "{who} saw {text:?} {} times: {saw:?}; alice's events {alice_saw:?}",
                found.len()
            );
            found[0]
        };
        assert!(at("a1") < at("a2") && at("a2") < at("three"), "{who}: {saw:?}");
        if who == "alice" {
            at("two");
        }
    }

    // Someone joining later finds the conversation so far.
    let carol = engine_for(server.ws_url());
    carol.login_room(
        room(),
        token(&server, "carol"),
        user("carol"),
        LoginConfig { user_update: true },
    );
    let joined = drain(&carol, Duration::from_millis(300)).await;
    let texts: Vec<String> = said(&joined).into_iter().map(|(_, text)| text).collect();
    assert_eq!(texts.len(), 5, "the conversation so far: {texts:?}");
    assert_eq!((texts[0].as_str(), texts[4].as_str()), ("one", "three"));
    // A refusal is reported, and nothing is said.
    carol.send_room_message(" ");
    let refused = drain(&carol, Duration::from_millis(300)).await;
    assert!(
        refused.iter().any(|e| matches!(
            e,
            EngineEvent::RequestFailed {
                request: holoroom_engine::RequestKind::SendMessage,
                error: RoomError::Refused(body),
            } if body.code == ErrorCode::InvalidArgument
        )),
        "{refused:?}"
    );
    assert!(said(&drain(&bob, Duration::from_millis(100)).await).is_empty());
}
