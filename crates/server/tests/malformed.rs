//! Malformed messages against a real server: typed errors or the right close code, never a
//! crash, the room intact and the session still usable afterwards.

mod common;

use std::time::Duration;

use common::{Client, WAIT, start, token};
use futures_util::{SinkExt, StreamExt};
use holoroom_protocol::{ErrorCode, ResponseResult, ServerMessage, close_code};
use holoroom_server::Server;
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn raw(server: &Server) -> Socket {
    tokio_tungstenite::connect_async(server.ws_url())
        .await
        .expect("raw client connects")
        .0
}

/// The next server message that is a response (events are skipped).
async fn response(socket: &mut Socket) -> (Option<u64>, ResponseResult) {
    loop {
        let message = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("an answer in time")
            .expect("socket open")
            .expect("socket healthy");
        let Message::Text(text) = message else {
            panic!("expected text, got {message:?}");
        };
        if let ServerMessage::Response { id, result } = ServerMessage::parse(&text).expect("server speaks the protocol")
        {
            return (id, result);
        }
    }
}

async fn close_code_of(socket: &mut Socket) -> Option<u16> {
    loop {
        match tokio::time::timeout(WAIT, socket.next()).await.expect("closes in time") {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

#[tokio::test]
async fn malformed_messages_get_typed_errors_and_leave_the_room_intact() {
    let server = start(common::config()).await;
    let mut bob = Client::join(&server, "r", "bob", true).await;

    let mut socket = raw(&server).await;
    let login = json!({"id": 1, "request": {"type": "login", "protocol": holoroom_protocol::PROTOCOL_VERSION, "room_id": "r",
        "token": token(&server, "r", "alice"), "user": {"user_id": "alice", "user_name": "Alice"},
        "config": {"user_update": true}}});
    socket
        .send(Message::Text(login.to_string().into()))
        .await
        .expect("send");
    assert!(matches!(response(&mut socket).await, (Some(1), ResponseResult::Ok(_))));
    let publish = json!({"id": 2, "request": {"type": "start_publishing", "stream_id": "alice-cam"}});
    socket
        .send(Message::Text(publish.to_string().into()))
        .await
        .expect("send");
    assert!(matches!(response(&mut socket).await, (Some(2), ResponseResult::Ok(_))));
    bob.drain(Duration::from_millis(200)).await;
    let before = server.snapshot();

    let deep = format!("{{\"id\":7,\"request\":{}", "[".repeat(10_000));
    let cases: Vec<(&str, String, Option<u64>, ErrorCode)> = vec![
        ("not JSON", "{nope".into(), None, ErrorCode::MalformedMessage),
        ("empty text", String::new(), None, ErrorCode::MalformedMessage),
        ("a JSON array", "[1,2,3]".into(), None, ErrorCode::MalformedMessage),
        ("a bare number", "42".into(), None, ErrorCode::MalformedMessage),
        ("null", "null".into(), None, ErrorCode::MalformedMessage),
        ("no request", r#"{"id":10}"#.into(), Some(10), ErrorCode::MalformedMessage),
        ("id as a string", r#"{"id":"11","request":{"type":"logout"}}"#.into(), None, ErrorCode::MalformedMessage),
        ("negative id", r#"{"id":-1,"request":{"type":"logout"}}"#.into(), None, ErrorCode::MalformedMessage),
        ("unknown type", r#"{"id":12,"request":{"type":"teleport"}}"#.into(), Some(12), ErrorCode::MalformedMessage),
        ("no type", r#"{"id":13,"request":{"stream_id":"x"}}"#.into(), Some(13), ErrorCode::MalformedMessage),
        ("wrong field type", r#"{"id":14,"request":{"type":"stop_publishing","stream_id":5}}"#.into(), Some(14), ErrorCode::MalformedMessage),
        ("unknown field", r#"{"id":15,"request":{"type":"logout","now":true}}"#.into(), Some(15), ErrorCode::MalformedMessage),
        ("duplicate field", r#"{"id":16,"request":{"type":"stop_playing","stream_id":"a","stream_id":"b"}}"#.into(), Some(16), ErrorCode::MalformedMessage),
        ("overlong stream ID", json!({"id":17,"request":{"type":"stop_publishing","stream_id":"s".repeat(257)}}).to_string(), Some(17), ErrorCode::MalformedMessage),
        ("control character in ID", json!({"id":18,"request":{"type":"stop_publishing","stream_id":"cam\u{1}"}}).to_string(), Some(18), ErrorCode::MalformedMessage),
        ("empty ID", r#"{"id":19,"request":{"type":"stop_playing","stream_id":""}}"#.into(), Some(19), ErrorCode::MalformedMessage),
        ("non-ASCII ID", r#"{"id":20,"request":{"type":"stop_playing","stream_id":"zoë"}}"#.into(), Some(20), ErrorCode::MalformedMessage),
        ("deep nesting", deep, None, ErrorCode::MalformedMessage),
        ("id out of range", r#"{"id":1e400,"request":{"type":"logout"}}"#.into(), None, ErrorCode::MalformedMessage),
        ("pose far away", r#"{"id":21,"request":{"type":"set_pose","pose":{"position":[1e9,0,0],"orientation":[0,0,0,1]}}}"#.into(), Some(21), ErrorCode::InvalidArgument),
        ("pose overflowing f32", r#"{"id":22,"request":{"type":"set_pose","pose":{"position":[1e39,0,0],"orientation":[0,0,0,1]}}}"#.into(), Some(22), ErrorCode::InvalidArgument),
        ("pose not a rotation", r#"{"id":23,"request":{"type":"set_pose","pose":{"position":[0,0,0],"orientation":[0,0,0,0]}}}"#.into(), Some(23), ErrorCode::InvalidArgument),
        ("extra info too long", json!({"id":24,"request":{"type":"set_stream_extra_info","stream_id":"alice-cam","extra_info":"x".repeat(5000)}}).to_string(), Some(24), ErrorCode::InvalidArgument),
        ("second login", login.to_string().replace("\"id\":1", "\"id\":25"), Some(25), ErrorCode::AlreadyLoggedIn),
        ("playing an unknown stream", r#"{"id":26,"request":{"type":"start_playing","stream_id":"ghost"}}"#.into(), Some(26), ErrorCode::StreamNotFound),
    ];
    assert!(cases.len() >= 20);
    for (name, text, id, code) in cases {
        socket.send(Message::Text(text.into())).await.expect("send");
        match response(&mut socket).await {
            (got_id, ResponseResult::Error(error)) => {
                assert_eq!(got_id, id, "{name}");
                assert_eq!(error.code, code, "{name}: {}", error.message);
            }
            other => panic!("{name}: expected an error, got {other:?}"),
        }
    }

    assert_eq!(server.snapshot(), before, "room state intact");
    assert!(
        bob.drain(Duration::from_millis(200)).await.is_empty(),
        "bob saw nothing of it"
    );

    // The session is still usable.
    let pose = json!({"id": 30, "request": {"type": "set_pose", "pose": {"position": [1, 0, 2], "orientation": [0, 0, 0, 1]}}});
    socket.send(Message::Text(pose.to_string().into())).await.expect("send");
    assert!(matches!(response(&mut socket).await, (Some(30), ResponseResult::Ok(_))));
    assert!(matches!(
        bob.next_event().await,
        holoroom_protocol::Event::PoseUpdate { .. }
    ));
}

#[tokio::test]
async fn protocol_violations_close_with_the_right_code() {
    let server = start(common::config()).await;
    let mut bob = Client::join(&server, "r", "bob", true).await;
    let before = server.snapshot();

    let mut binary = raw(&server).await;
    binary.send(Message::Binary(vec![1, 2, 3].into())).await.expect("send");
    assert_eq!(close_code_of(&mut binary).await, Some(close_code::UNSUPPORTED_DATA));

    // A text frame that is not UTF-8 (RFC 6455: close with 1007).
    let mut garbled = raw(&server).await;
    let frame = Frame::message(vec![0x7b, 0xff, 0xfe, 0x7d], OpCode::Data(Data::Text), true);
    garbled.send(Message::Frame(frame)).await.expect("send");
    assert_eq!(close_code_of(&mut garbled).await, Some(close_code::INVALID_DATA));

    let mut oversize = raw(&server).await;
    let big = json!({"id": 1, "request": {"type": "logout", "pad": "x".repeat(100 * 1024)}});
    oversize
        .send(Message::Text(big.to_string().into()))
        .await
        .expect("send");
    assert_eq!(close_code_of(&mut oversize).await, Some(close_code::MESSAGE_TOO_BIG));

    // A frame over the transport limit fails that socket only.
    let mut enormous = raw(&server).await;
    let _ = enormous.send(Message::Text("y".repeat(4 << 20).into())).await;
    let _ = close_code_of(&mut enormous).await;

    let mut old = raw(&server).await;
    let login = json!({"id": 1, "request": {"type": "login", "protocol": 99, "room_id": "r",
        "token": token(&server, "r", "carol"), "user": {"user_id": "carol"}}});
    old.send(Message::Text(login.to_string().into())).await.expect("send");
    match response(&mut old).await {
        (Some(1), ResponseResult::Error(e)) => assert_eq!(e.code, ErrorCode::UnsupportedVersion),
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
    let publish = json!({"id": 2, "request": {"type": "start_publishing", "stream_id": "x"}});
    old.send(Message::Text(publish.to_string().into())).await.expect("send");
    match response(&mut old).await {
        (Some(2), ResponseResult::Error(e)) => assert_eq!(e.code, ErrorCode::NotLoggedIn),
        other => panic!("expected NotLoggedIn, got {other:?}"),
    }

    assert_eq!(server.snapshot(), before, "room state intact");
    assert!(bob.drain(Duration::from_millis(200)).await.is_empty());
    let _carol = Client::join(&server, "r", "carol", true).await;
    assert!(
        matches!(bob.next_event().await, holoroom_protocol::Event::RoomUserUpdate { .. }),
        "server still serves"
    );
}
