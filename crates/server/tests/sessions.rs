//! Session rules over a real server: duplicate login, spectators, ownership, token expiry,
//! reconnect grace, timeouts, limits, shutdown.

mod common;

use std::time::Duration;

use common::{Client, WAIT, spectator_token, start, token, user};
use futures_util::future::join_all;
use holoroom_engine::signaling::SignalingError;
use holoroom_protocol::{
    ErrorCode, Event, KickoutReason, Pose, Request, ResponseBody, RoomStateReason, UpdateType, VideoGrant, close_code,
};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn refused(result: Result<ResponseBody, SignalingError>) -> ErrorCode {
    match result {
        Err(SignalingError::Refused(body)) => body.code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn kickout(event: &Event) -> Option<KickoutReason> {
    match event {
        Event::RoomStateChanged {
            reason: RoomStateReason::Kickout,
            kickout,
            ..
        } => *kickout,
        _ => None,
    }
}

const QUIET: Duration = Duration::from_millis(200);

#[tokio::test]
async fn duplicate_login_kicks_the_first_session_and_deletes_its_streams() {
    let server = start(common::config()).await;
    let mut first = Client::join(&server, "r", "alice", true).await;
    first.publish("alice-cam").await.expect("publish");
    let mut watcher = Client::join(&server, "r", "bob", true).await;
    watcher.drain(QUIET).await;
    first.drain(QUIET).await;

    let _second = Client::join(&server, "r", "alice", true).await;
    assert_eq!(kickout(&first.next_event().await), Some(KickoutReason::DuplicateLogin));
    assert_eq!(first.closed().await, Some(close_code::POLICY));

    let events = watcher.drain(QUIET).await;
    assert!(
        matches!(&events[0], Event::RoomStreamUpdate { update: UpdateType::Delete, streams, .. } if streams[0].stream_id.as_str() == "alice-cam"),
        "{events:?}"
    );
    let room = &server.snapshot().rooms[0];
    assert!(room.streams.is_empty());
    assert_eq!(room.users.len(), 2, "alice is still in, once");
}

#[tokio::test]
async fn spectators_are_hidden_and_cannot_publish() {
    let server = start(common::config()).await;
    let mut alice = Client::join(&server, "r", "alice", true).await;
    alice.publish("alice-cam").await.expect("publish");

    let mut spectator = Client::connect(&server).await;
    let login = spectator
        .login_with("r", "watcher", spectator_token(&server, "r", "watcher"), true)
        .await
        .expect("spectator logs in");
    assert!(login.spectator);
    // The spectator sees the room...
    assert_eq!(login.users.len(), 1);
    assert_eq!(login.streams.len(), 1);
    // ...but may not publish or take a place in it.
    assert_eq!(
        refused(spectator.publish("watcher-cam").await),
        ErrorCode::PermissionDenied
    );
    assert_eq!(
        refused(
            spectator
                .signaling
                .request(Request::SetPose { pose: Pose::IDENTITY })
                .await
        ),
        ErrorCode::PermissionDenied
    );
    // Nobody hears of it, and it is not counted.
    assert!(alice.drain(QUIET).await.is_empty());
    let room = &server.snapshot().rooms[0];
    assert_eq!(room.users.len(), 1);
    assert_eq!(room.spectators, 1);
    spectator.signaling.request(Request::Logout {}).await.expect("logout");
    assert!(alice.drain(QUIET).await.is_empty(), "not even when it leaves");
}

#[tokio::test]
async fn streams_belong_to_their_publisher() {
    let server = start(common::config()).await;
    let alice = Client::join(&server, "r", "alice", true).await;
    let bob = Client::join(&server, "r", "bob", true).await;
    alice.publish("cam").await.expect("publish");
    assert_eq!(refused(bob.stop_publishing("cam").await), ErrorCode::StreamOwnedByOther);
    assert_eq!(refused(bob.publish("cam").await), ErrorCode::StreamOwnedByOther);
    assert_eq!(refused(alice.publish("cam").await), ErrorCode::StreamAlreadyPublished);
    assert_eq!(refused(bob.stop_publishing("nope").await), ErrorCode::StreamNotFound);
    assert_eq!(server.snapshot().rooms[0].streams.len(), 1);
}

#[tokio::test]
async fn a_streams_mute_state_is_listed_and_told_to_the_others_once() {
    use holoroom_protocol::{PublishRequest, StreamMute};
    let server = start(common::config()).await;
    let mut alice = Client::join(&server, "r", "alice", true).await;
    let mut bob = Client::join(&server, "r", "bob", true).await;
    alice.drain(QUIET).await;
    let microphone_off = StreamMute {
        audio: true,
        video: false,
    };
    alice
        .signaling
        .request(Request::StartPublishing(PublishRequest {
            stream_id: common::stream("cam"),
            source: Default::default(),
            extra_info: String::new(),
            mute: microphone_off,
            sdp_offer: None,
            media_id: None,
        }))
        .await
        .expect("publish");
    let added = bob.next_event().await;
    assert!(
        matches!(&added, Event::RoomStreamUpdate { update: UpdateType::Add, streams, .. } if streams[0].mute == microphone_off),
        "the stream is listed muted: {added:?}"
    );

    let set = |mute| Request::SetStreamMute {
        stream_id: common::stream("cam"),
        mute,
    };
    let camera_off = StreamMute {
        audio: false,
        video: true,
    };
    alice.signaling.request(set(camera_off)).await.expect("mute");
    let update = bob.next_event().await;
    assert!(
        matches!(&update, Event::StreamMuteUpdate { streams, .. } if streams[0].mute == camera_off && streams[0].stream_id.as_str() == "cam"),
        "{update:?}"
    );
    // The same state again tells nobody; the publisher is never told its own.
    alice.signaling.request(set(camera_off)).await.expect("same again");
    assert!(bob.drain(QUIET).await.is_empty());
    assert!(alice.drain(QUIET).await.is_empty());
    // Only the publisher sets it, and only for a listed stream.
    assert_eq!(
        refused(bob.signaling.request(set(StreamMute::default())).await),
        ErrorCode::StreamOwnedByOther
    );
    let unknown = Request::SetStreamMute {
        stream_id: common::stream("nope"),
        mute: camera_off,
    };
    assert_eq!(
        refused(alice.signaling.request(unknown).await),
        ErrorCode::StreamNotFound
    );
    // Whoever comes later finds it in the login's snapshot; the wire leaves an unmuted state out.
    let carol = Client::join(&server, "r", "carol", true).await;
    let login = carol.login.as_ref().expect("logged in");
    assert_eq!(login.streams[0].mute, camera_off);
    let unmuted = serde_json::to_string(&holoroom_protocol::StreamInfo {
        mute: StreamMute::default(),
        ..login.streams[0].clone()
    })
    .expect("serialises");
    assert!(!unmuted.contains("mute"), "{unmuted}");
}

#[tokio::test]
async fn chat_goes_to_everyone_in_order_and_the_room_keeps_its_latest() {
    use holoroom_protocol::CHAT_HISTORY;
    let server = start(common::config()).await;
    let mut alice = Client::join(&server, "r", "alice", true).await;
    let mut bob = Client::join(&server, "r", "bob", true).await;
    let mut spectator = Client::connect(&server).await;
    spectator
        .login_with("r", "watcher", spectator_token(&server, "r", "watcher"), true)
        .await
        .expect("spectator logs in");
    alice.drain(QUIET).await;
    let say = |text: &str| Request::SendMessage {
        text: text.into(),
        nonce: None,
    };
    alice.signaling.request(say("hello")).await.expect("sent");
    // Everyone gets it, the sender and the spectator too, under the same number.
    let mut ids = Vec::new();
    for client in [&mut alice, &mut bob, &mut spectator] {
        match client.next_event().await {
            Event::RoomMessage { message, .. } => {
                assert_eq!(
                    (message.from.user_id.as_str(), message.text.as_str()),
                    ("alice", "hello")
                );
                ids.push(message.id);
            }
            other => panic!("expected the message, got {other:?}"),
        }
    }
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    // Spectators read but do not write; bad text is refused with the reason.
    assert_eq!(
        refused(spectator.signaling.request(say("psst")).await),
        ErrorCode::PermissionDenied
    );
    for bad in [
        "",
        "   ",
        "\u{1b}[2J",
        &"x".repeat(holoroom_protocol::MAX_CHAT_BYTES + 1),
    ] {
        assert_eq!(
            refused(alice.signaling.request(say(bad)).await),
            ErrorCode::InvalidArgument
        );
    }
    assert!(bob.drain(QUIET).await.is_empty(), "nothing refused was said");
    // The same message sent again (its answer lost with a connection) is said once.
    let again = || Request::SendMessage {
        text: "once".into(),
        nonce: Some(7),
    };
    alice.signaling.request(again()).await.expect("sent");
    alice.signaling.request(again()).await.expect("acknowledged again");
    let heard = bob.drain(QUIET).await;
    assert_eq!(heard.len(), 1, "{heard:?}");
    // The room keeps its latest messages for whoever comes later, numbered in order.
    for n in 0..CHAT_HISTORY + 5 {
        bob.signaling.request(say(&format!("line {n}"))).await.expect("sent");
    }
    let carol = Client::join(&server, "r", "carol", true).await;
    let kept = &carol.login.as_ref().expect("logged in").messages;
    assert_eq!(kept.len(), CHAT_HISTORY);
    let login = carol.login.as_ref().expect("logged in");
    assert_ne!(login.room_instance, 0);
    assert_eq!(Some(login.room_instance), alice.login.as_ref().map(|l| l.room_instance));
    assert_eq!(kept[0].text, "line 5");
    assert_eq!(kept[CHAT_HISTORY - 1].text, format!("line {}", CHAT_HISTORY + 4));
    assert!(kept.windows(2).all(|w| w[0].id < w[1].id));
    assert!(kept[0].id > ids[0]);
    // Long messages full of what JSON escapes: the history keeps what fits a login's answer
    // with room to spare, newest last.
    let long = "\"\n".repeat(holoroom_protocol::MAX_CHAT_BYTES / 2);
    for _ in 0..20 {
        bob.signaling.request(say(&long)).await.expect("sent");
    }
    let dave = Client::join(&server, "r", "dave", true).await;
    let kept = &dave.login.as_ref().expect("logged in").messages;
    let bytes = serde_json::to_string(kept).expect("serialises").len();
    assert!(
        bytes <= holoroom_protocol::CHAT_HISTORY_BYTES && kept.len() >= 4,
        "{} messages, {bytes} bytes of JSON",
        kept.len()
    );
    assert!(kept.iter().all(|m| m.text == long));
}

#[tokio::test]
async fn a_stop_naming_an_older_media_connection_leaves_the_newer_one() {
    let server = start(common::config()).await;
    let alice = Client::join(&server, "r", "alice", true).await;
    alice.publish_media("cam", Some(1)).await.expect("publish as media 1");
    // Media 2 takes the stream over (a device switch); the stop for media 1 arrives late.
    let listed = || server.snapshot().rooms[0].streams.len();
    alice.stop_publishing_media("cam", Some(1)).await.expect("acknowledged");
    assert_eq!(listed(), 0, "a stop for the current connection ends the stream");
    alice.publish_media("cam", Some(2)).await.expect("publish as media 2");
    alice.stop_publishing_media("cam", Some(1)).await.expect("acknowledged");
    assert_eq!(listed(), 1, "a stop for an older connection changes nothing");
    alice
        .stop_publishing_media("cam", None)
        .await
        .expect("a stop naming none ends it");
    assert_eq!(listed(), 0);
    // A stop naming a media connection whose start never arrived (newer than the server
    // knows) still ends the stream.
    alice.publish_media("cam", Some(3)).await.expect("publish as media 3");
    alice.stop_publishing_media("cam", Some(4)).await.expect("acknowledged");
    assert_eq!(listed(), 0, "the client's stop for a newer connection ends it");
}

/// A complete offer, as a WebRTC stack makes it, with video and audio in `direction`.
fn offer(direction: str0m::media::Direction) -> String {
    use str0m::media::MediaKind;
    let mut rtc = str0m::Rtc::builder().build(std::time::Instant::now());
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
    rtc.add_local_candidate(str0m::Candidate::host(addr, "udp").expect("candidate"));
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, direction, None, None, None);
    api.add_media(MediaKind::Audio, direction, None, None, None);
    let (offer, _) = api.apply().expect("an offer");
    offer.to_sdp_string()
}

#[tokio::test]
async fn offers_that_cannot_publish_or_play_are_refused_before_the_media_relay() {
    use str0m::media::Direction;
    let server = start(common::config()).await;
    let alice = Client::join(&server, "r", "alice", true).await;
    let publish = |sdp: String| {
        Request::StartPublishing(holoroom_protocol::PublishRequest {
            stream_id: common::stream("cam"),
            source: Default::default(),
            extra_info: String::new(),
            mute: Default::default(),
            sdp_offer: Some(sdp),
            media_id: Some(1),
        })
    };
    // An offer that only receives cannot publish, however well formed.
    let refusal = alice.signaling.request(publish(offer(Direction::RecvOnly))).await;
    assert_eq!(refused(refusal), ErrorCode::InvalidArgument);
    assert!(server.snapshot().rooms[0].streams.is_empty(), "nothing listed");
    // Nor does one with an ICE username fragment far beyond RFC 8839's 256 characters.
    let good = offer(Direction::SendOnly);
    let ufrag = good
        .lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .expect("a ufrag")
        .to_owned();
    let long = good.replace(&ufrag, &"u".repeat(5000));
    assert_eq!(
        refused(alice.signaling.request(publish(long)).await),
        ErrorCode::InvalidArgument
    );
    assert!(server.snapshot().rooms[0].streams.is_empty(), "still nothing listed");

    // An offer that only sends cannot play.
    alice.publish("cam").await.expect("listed without media");
    let play = Request::StartPlaying(holoroom_protocol::PlayRequest {
        stream_id: common::stream("cam"),
        video_layer: None,
        sdp_offer: Some(offer(Direction::SendOnly)),
        media_id: Some(2),
    });
    assert_eq!(refused(alice.signaling.request(play).await), ErrorCode::InvalidArgument);
}

#[tokio::test]
async fn token_renewed_in_time_keeps_the_session() {
    // A 40 s token warned 30 s ahead, on the server's clock, which the test moves on.
    let server = start(common::config()).await;
    let clock = server.clock().clone();
    let mut alice = Client::connect(&server).await;
    let token = |room: &str, user_id: &str, ttl| {
        server.keys().mint_at(
            clock.unix_now(),
            VideoGrant::participant(room),
            &user(user_id),
            None,
            ttl,
        )
    };
    alice
        .login_with("r", "alice", token("r", "alice", 40), true)
        .await
        .expect("login");

    clock.advance(Duration::from_secs(11));
    assert!(matches!(alice.next_event().await, Event::TokenWillExpire { .. }));
    let wrong_user = token("r", "mallory", 3600);
    assert_eq!(
        refused(alice.signaling.request(Request::RenewToken { token: wrong_user }).await),
        ErrorCode::TokenUserMismatch
    );
    let wrong_room = token("elsewhere", "alice", 3600);
    assert_eq!(
        refused(alice.signaling.request(Request::RenewToken { token: wrong_room }).await),
        ErrorCode::TokenRoomMismatch
    );
    let renewed = alice
        .signaling
        .request(Request::RenewToken {
            token: token("r", "alice", 3600),
        })
        .await
        .expect("renewal accepted");
    assert!(matches!(renewed, ResponseBody::TokenRenewed { .. }));
    // Past the first token's expiry: no kick-out.
    clock.advance(Duration::from_secs(60));
    assert!(alice.drain(QUIET).await.is_empty(), "no kickout after renewal");
    assert_eq!(server.snapshot().rooms[0].users.len(), 1);
}

#[tokio::test]
async fn token_not_renewed_is_kicked_out() {
    let server = start(common::config()).await;
    let clock = server.clock().clone();
    let mut bob = Client::join(&server, "r", "bob", true).await;
    let mut alice = Client::connect(&server).await;
    let short = server
        .keys()
        .mint_at(clock.unix_now(), VideoGrant::participant("r"), &user("alice"), None, 40);
    alice.login_with("r", "alice", short, true).await.expect("login");
    assert!(matches!(
        bob.next_event().await,
        Event::RoomUserUpdate {
            update: UpdateType::Add,
            ..
        }
    ));

    // Warned 30 s ahead, then out at expiry.
    clock.advance(Duration::from_secs(11));
    assert!(matches!(alice.next_event().await, Event::TokenWillExpire { .. }));
    clock.advance(Duration::from_secs(30));
    assert_eq!(kickout(&alice.next_event().await), Some(KickoutReason::TokenExpired));
    assert_eq!(alice.closed().await, Some(close_code::POLICY));
    assert!(matches!(
        bob.next_event().await,
        Event::RoomUserUpdate {
            update: UpdateType::Delete,
            ..
        }
    ));
}

#[tokio::test]
async fn a_dropped_member_who_returns_within_grace_causes_no_flicker() {
    let mut config = common::config();
    config.reconnect_grace = Duration::from_secs(2);
    let server = start(config).await;
    let mut alice = Client::join(&server, "r", "alice", true).await;
    let bob = Client::join(&server, "r", "bob", true).await;
    bob.publish("bob-cam").await.expect("publish");
    alice.drain(QUIET).await;

    bob.signaling.close();
    tokio::time::sleep(QUIET).await;
    let mut back = Client::connect(&server).await;
    let login = back
        .login_with("r", "bob", token(&server, "r", "bob"), true)
        .await
        .expect("bob is back");
    assert!(login.resumed);
    assert_eq!(login.own_streams.len(), 1, "his stream is still his");
    assert!(
        alice.drain(Duration::from_millis(2500)).await.is_empty(),
        "alice saw nothing"
    );
    assert_eq!(server.snapshot().rooms[0].users.len(), 2);
}

#[tokio::test]
async fn a_dropped_member_is_removed_after_grace() {
    let server = start(common::config()).await;
    let mut alice = Client::join(&server, "r", "alice", true).await;
    let bob = Client::join(&server, "r", "bob", true).await;
    bob.publish("bob-cam").await.expect("publish");
    alice.drain(QUIET).await;
    bob.signaling.close();
    assert!(matches!(
        alice.next_event().await,
        Event::RoomStreamUpdate {
            update: UpdateType::Delete,
            ..
        }
    ));
    assert!(matches!(
        alice.next_event().await,
        Event::RoomUserUpdate {
            update: UpdateType::Delete,
            ..
        }
    ));
}

#[tokio::test]
async fn sockets_that_never_log_in_are_closed() {
    let mut config = common::config();
    config.login_timeout = Duration::from_millis(300);
    let server = start(config).await;
    let mut idle = Client::connect(&server).await;
    assert_eq!(idle.closed().await, Some(close_code::POLICY));
}

#[tokio::test]
async fn shutdown_tells_everyone_to_come_back_instead_of_ending_their_call() {
    let server = start(common::config()).await;
    let (addr, media) = (server.local_addr(), server.media_addr());
    let mut alice = Client::join(&server, "r", "alice", true).await;
    tokio::time::timeout(WAIT, server.shutdown())
        .await
        .expect("shutdown is quick")
        .expect("clean shutdown");
    assert_eq!(alice.closed().await, Some(close_code::SERVICE_RESTART));
    // Both ports are free again, for the server that comes back.
    assert!(std::net::TcpListener::bind(addr).is_ok(), "{addr} is free");
    assert!(std::net::UdpSocket::bind(media).is_ok(), "{media} is free");
    assert!(
        alice.seen.iter().all(|(_, event)| kickout(event).is_none()),
        "no kickout: the client is to reconnect, {:?}",
        alice.seen
    );
}

/// A raw TCP connection that sent `sent` and then nothing more.
async fn half_open(server: &holoroom_server::Server, sent: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut tcp = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .expect("connects");
    tcp.write_all(sent.as_bytes()).await.expect("writes");
    tcp
}

/// Whether the server closed `tcp` within `within` (it reads end of stream, or a reset).
async fn closed_by_server(tcp: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // An error answer (408) may come first.
            Ok(Ok(_)) => {}
        }
    }
}

const PARTIAL_UPGRADE: &str = "GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n";

#[tokio::test]
async fn half_open_handshakes_time_out() {
    let mut config = common::config();
    config.header_timeout = Duration::from_millis(300);
    let server = start(config).await;
    let mut slow_headers = half_open(&server, PARTIAL_UPGRADE).await;
    let mut silent = half_open(&server, "").await;
    assert!(
        closed_by_server(&mut slow_headers, WAIT).await,
        "headers that stop coming"
    );
    assert!(
        closed_by_server(&mut silent, WAIT).await,
        "a connection that never says anything"
    );
}

#[tokio::test]
async fn shutdown_ends_half_open_connections_by_its_deadline() {
    let mut config = common::config();
    config.header_timeout = Duration::from_secs(600);
    let server = start(config).await;
    let alice = Client::join(&server, "r", "alice", true).await;
    let mut stuck = Vec::new();
    for _ in 0..20 {
        stuck.push(half_open(&server, PARTIAL_UPGRADE).await);
    }
    // The sessions' wait (5 s) is the longest it may take.
    tokio::time::timeout(Duration::from_secs(8), server.shutdown())
        .await
        .expect("shutdown finishes despite connections stuck in their handshake")
        .expect("clean shutdown");
    for tcp in &mut stuck {
        assert!(closed_by_server(tcp, WAIT).await, "a stuck connection was closed");
    }
    drop(alice);
}

#[tokio::test]
async fn connections_over_an_addresss_cap_are_refused_with_a_reason() {
    let mut config = common::config();
    config.per_address.connections = 4;
    let server = start(config).await;
    let mut alice = Client::join(&server, "r", "alice", true).await;
    let mut others = Vec::new();
    for _ in 0..3 {
        others.push(Client::connect(&server).await);
    }
    for attempt in 0..20 {
        let (mut socket, _) = tokio_tungstenite::connect_async(server.ws_url())
            .await
            .expect("the upgrade is answered");
        let close = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut socket))
            .await
            .expect("closed at once");
        match close {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(frame)))) => {
                assert_eq!(u16::from(frame.code), close_code::POLICY, "attempt {attempt}");
                assert!(frame.reason.contains("too many connections"), "{}", frame.reason);
            }
            other => panic!("attempt {attempt}: expected a close frame, got {other:?}"),
        }
    }
    // The member's session is untouched, and a place comes back when a connection closes.
    let mut bob = others.pop().expect("a connection");
    bob.login_with("r", "bob", token(&server, "r", "bob"), true)
        .await
        .expect("bob logs in");
    assert!(matches!(
        alice.next_event().await,
        Event::RoomUserUpdate {
            update: UpdateType::Add,
            ..
        }
    ));
    drop(others);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let carol = Client::join(&server, "r", "carol", true).await;
    assert!(matches!(bob.next_event().await, Event::RoomUserUpdate { .. }));
    drop(carol);
}

#[tokio::test]
async fn failed_logins_are_limited_per_address() {
    let mut config = common::config();
    config.per_address.login_failures_per_minute = 3;
    let server = start(config).await;
    let forged = "eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl".to_owned();
    for _ in 0..3 {
        let mut client = Client::connect(&server).await;
        let refusal = client.login_with("r", "mallory", forged.clone(), true).await;
        assert!(matches!(refusal, Err(SignalingError::Refused(body)) if body.code == ErrorCode::TokenInvalid));
    }
    // Now even a good token from this address waits.
    let mut client = Client::connect(&server).await;
    let refusal = client
        .login_with("r", "mallory", token(&server, "r", "mallory"), true)
        .await;
    match refusal {
        Err(SignalingError::Refused(body)) => {
            assert_eq!(body.code, ErrorCode::RateLimited);
            assert!(body.message.contains("failed logins"), "{}", body.message);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_background_server_serves_on_its_own_thread_and_stops_when_dropped() {
    let server = holoroom_server::BackgroundServer::start("127.0.0.1:0", common::config()).expect("starts");
    let addr = server
        .ws_url()
        .trim_start_matches("ws://")
        .trim_end_matches("/v1/ws")
        .to_owned();
    assert!(std::net::TcpStream::connect(&addr).is_ok(), "it listens at {addr}");
    drop(server);
    assert!(std::net::TcpStream::connect(&addr).is_err(), "it stopped listening");
}

#[tokio::test]
async fn origins_outside_the_allowlist_are_refused() {
    let mut config = common::config();
    config.allowed_origins = vec!["https://room.example".into()];
    let server = start(config).await;
    let with_origin = |origin: &'static str| {
        let mut request = server.ws_url().into_client_request().expect("valid URL");
        request
            .headers_mut()
            .insert("origin", origin.parse().expect("valid header"));
        request
    };
    let refused = tokio_tungstenite::connect_async(with_origin("https://evil.example")).await;
    assert!(refused.is_err(), "foreign origin refused");
    let allowed = tokio_tungstenite::connect_async(with_origin("https://room.example")).await;
    assert!(allowed.is_ok(), "listed origin allowed");
}

#[tokio::test]
async fn rooms_have_caps_that_spectators_do_not_count_against() {
    let mut config = common::config();
    config.limits.max_users_per_room = 2;
    config.limits.max_rooms = 1;
    let server = start(config).await;
    let _a = Client::join(&server, "r", "a", true).await;
    let _b = Client::join(&server, "r", "b", true).await;
    let mut c = Client::connect(&server).await;
    let full = c.login_with("r", "c", token(&server, "r", "c"), true).await;
    assert!(
        matches!(full, Err(SignalingError::Refused(ref e)) if e.code == ErrorCode::RoomFull),
        "{full:?}"
    );
    let other_room = c.login_with("q", "c", token(&server, "q", "c"), true).await;
    assert!(
        matches!(other_room, Err(SignalingError::Refused(ref e)) if e.code == ErrorCode::TooManyRooms),
        "{other_room:?}"
    );
    let mut s = Client::connect(&server).await;
    s.login_with("r", "s", spectator_token(&server, "r", "s"), true)
        .await
        .expect("a spectator still fits");
}

#[tokio::test]
async fn bursts_beyond_the_rate_limit_are_refused_then_allowed_again() {
    let mut config = common::config();
    config.rate_per_second = 5.0;
    config.rate_burst = 5.0;
    let server = start(config).await;
    let alice = Client::join(&server, "r", "alice", true).await;
    let pose = Request::SetPose { pose: Pose::IDENTITY };
    let results = join_all((0..20).map(|_| alice.signaling.request(pose.clone()))).await;
    let limited = results
        .iter()
        .filter(|r| matches!(r, Err(SignalingError::Refused(e)) if e.code == ErrorCode::RateLimited))
        .count();
    assert!(limited >= 10, "{limited} of 20 limited: {results:?}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    alice
        .signaling
        .request(pose)
        .await
        .expect("allowed again after a pause");
}

/// Two participants publish one stream ID with media at the same moment, again and again:
/// one gets it, the other is refused as `stream_owned_by_other`, and the stream that is
/// listed always has its media (a viewer can play it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_id_published_by_two_at_once_keeps_the_winners_media() {
    use str0m::media::Direction;
    let server = start(common::config()).await;
    let alice = Client::join(&server, "r", "alice", true).await;
    let bob = Client::join(&server, "r", "bob", true).await;
    let viewer = Client::join(&server, "r", "carol", true).await;
    let publish = |id: &str, media_id| {
        Request::StartPublishing(holoroom_protocol::PublishRequest {
            stream_id: common::stream(id),
            source: Default::default(),
            extra_info: String::new(),
            mute: Default::default(),
            sdp_offer: Some(offer(Direction::SendOnly)),
            media_id: Some(media_id),
        })
    };
    for trial in 0..12u64 {
        let id = format!("shared-{trial}");
        let (a, b) = tokio::join!(
            alice.signaling.request(publish(&id, trial)),
            bob.signaling.request(publish(&id, trial)),
        );
        let winner = if a.is_ok() { &alice } else { &bob };
        let refusals: Vec<ErrorCode> = [a, b]
            .into_iter()
            .filter_map(|result| result.err())
            .map(|error| match error {
                SignalingError::Refused(body) => body.code,
                other => panic!("trial {trial}: {other:?}"),
            })
            .collect();
        assert_eq!(
            refusals,
            [ErrorCode::StreamOwnedByOther],
            "trial {trial}: one publisher wins, the other is told the stream is someone else's"
        );
        let play = Request::StartPlaying(holoroom_protocol::PlayRequest {
            stream_id: common::stream(&id),
            video_layer: None,
            sdp_offer: Some(offer(Direction::RecvOnly)),
            media_id: Some(100 + trial),
        });
        let played = viewer.signaling.request(play).await;
        assert!(
            matches!(
                played,
                Ok(ResponseBody::Playing {
                    sdp_answer: Some(_),
                    ..
                })
            ),
            "trial {trial}: the listed stream has its media: {played:?}"
        );
        // Withdrawn, so that the per-user stream limit does not end the trials.
        winner.stop_publishing(&id).await.expect("withdrawn");
    }
}

#[tokio::test]
async fn dev_tokens_come_only_from_a_dev_server_and_only_for_names_it_accepts() {
    let server = start(common::config()).await;
    let (status, _, body) = common::http_get(&server, "/v1/dev/token?room=r&user=u", "").await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 404);
    assert!(body.contains("--dev"), "{body}");

    let mut config = common::config();
    config.dev_tokens = true;
    let server = start(config).await;
    let (status, _, body) = common::http_get(&server, "/v1/dev/token?room=r&user=u&name=Ann", "").await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"token\""), "{body}");
    // A name no login would accept (here a control character) gets no token.
    let (status, _, body) = common::http_get(&server, "/v1/dev/token?room=r&user=u&name=A%01nn", "").await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("control character"), "{body}");
}
