//! What the engine's integration tests share: joining a room, waiting for events, publishing
//! and playing with the state events checked.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use holoroom_engine::media::FrameSlot;
use holoroom_engine::protocol::{LoginConfig, RoomId, RoomStateReason, StreamId, UserId, UserInfo, VideoGrant};
use holoroom_engine::{Engine, EngineConfig, EngineEvent, LocalStream, PlayerState, PublisherState, StreamConfig};
use holoroom_server::Server;

pub const WAIT: Duration = Duration::from_secs(20);

pub fn join_as(server: &Server, user: &str, grant: VideoGrant) -> Engine {
    let engine = Engine::new(EngineConfig::new(server.ws_url())).expect("engine starts");
    let user_id = UserId::new(user).expect("valid");
    let token = server.keys().mint(grant, &user_id, None, 3600);
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

pub async fn join(server: &Server, user: &str) -> Engine {
    let engine = join_as(server, user, VideoGrant::participant("r"));
    logged_in(&engine).await;
    engine
}

/// Waits (blocking this worker, on a multi-threaded runtime) for the first event that `pick`
/// accepts, skipping others.
pub async fn wait_for<T>(engine: &Engine, what: &str, pick: impl FnMut(&EngineEvent) -> Option<T>) -> T {
    holoroom_testkit::wait_for_event_in_runtime(engine.events(), WAIT, pick)
        .unwrap_or_else(|| panic!("timed out waiting for {what}"))
}

pub async fn logged_in(engine: &Engine) {
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

pub fn stream(id: &str) -> StreamId {
    StreamId::new(id).expect("valid")
}

pub async fn publish(engine: &Engine, id: &str, config: StreamConfig) -> LocalStream {
    let local = engine.create_stream(config).expect("pattern stream");
    engine.start_publishing_stream(stream(id), &local);
    let target = stream(id);
    wait_for(engine, "Publishing", |e| match e {
        EngineEvent::PublisherStateUpdate {
            stream_id,
            state: PublisherState::Publishing,
            ..
        } if *stream_id == target => Some(()),
        EngineEvent::PublisherStateUpdate {
            stream_id,
            state: PublisherState::NoPublish,
            error,
            ..
        } if *stream_id == target => panic!("publish failed: {error:?}"),
        _ => None,
    })
    .await;
    local
}

/// Starts playing and returns the stream with the time its connection came up.
pub async fn play(engine: &Engine, id: &str) -> (holoroom_engine::RemoteStream, Instant) {
    let remote = engine.start_playing_stream(stream(id));
    let target = stream(id);
    wait_for(engine, "Playing", |e| match e {
        EngineEvent::PlayerStateUpdate {
            stream_id,
            state: PlayerState::Playing,
            ..
        } if *stream_id == target => Some(()),
        EngineEvent::PlayerStateUpdate {
            stream_id,
            state: PlayerState::NoPlay,
            error,
            ..
        } if *stream_id == target => panic!("play failed: {error:?}"),
        _ => None,
    })
    .await;
    (remote, Instant::now())
}

pub async fn first_frame(slot: &FrameSlot) -> holoroom_engine::media::SlotFrame {
    let slot = slot.clone();
    tokio::task::spawn_blocking(move || slot.wait_newer_than(0, WAIT))
        .await
        .expect("wait task")
        .expect("a decoded frame arrives")
}

/// A server's configuration with one signing key of `secret`.
pub fn config(secret: &[u8]) -> holoroom_server::ServerConfig {
    holoroom_server::ServerConfig::new(holoroom_server::TokenKeys::new(holoroom_server::SigningKey::new(
        "k1",
        secret.to_vec(),
    )))
}

/// A room server on loopback with one signing key of `secret`.
pub async fn server(secret: &[u8]) -> Server {
    Server::bind("127.0.0.1:0", config(secret)).await.expect("server binds")
}

/// A room server whose media address is 127.0.0.2, where an impairment relay passes every
/// datagram on to its real socket (and impairs them as told), so every media path between
/// engines and the SFU, both legs, both ways, goes through the relay. Signaling is direct.
pub async fn server_behind_relay(secret: &[u8]) -> (Server, holoroom_testkit::UdpRelay) {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    let mut config = config(secret);
    config.media.public_ip = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    let server = Server::bind("127.0.0.1:0", config).await.expect("server binds");
    let advertised = server.media_addr();
    let real = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), advertised.port());
    let relay = holoroom_testkit::UdpRelay::start(advertised, real)
        .await
        .expect("relay binds");
    (server, relay)
}
