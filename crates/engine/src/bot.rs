//! Bots: headless participants that log in, publish a stream (the test pattern and a tone,
//! or a file), play every stream they see and keep count of what arrives. For demos, tests
//! and load; the app's "add demo participants" and `holoroom bot` run these.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use holoroom_protocol::{LoginConfig, RoomId, RoomStateReason, StreamId, UpdateType, UserInfo};

use crate::engine::{Engine, EngineConfig, EngineError, EngineEvent, RemoteStream};
use crate::stream::{LocalStream, StreamConfig};

/// What a bot does.
#[derive(Debug, Clone)]
pub struct BotConfig {
    pub server_url: String,
    pub room_id: RoomId,
    pub user: UserInfo,
    pub token: String,
    /// What to publish, as stream `<user>-cam`; None to only watch (spectators).
    pub publish: Option<StreamConfig>,
}

/// What a bot has received from one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Received {
    pub frames: u64,
    pub last_frame_number: Option<u32>,
    pub size: (u32, u32),
    pub audio_samples: u64,
}

/// What a bot knows right now.
#[derive(Debug, Clone, PartialEq)]
pub struct BotStatus {
    pub state: RoomStateReason,
    /// Visible members other than this bot.
    pub users: Vec<String>,
    pub received: BTreeMap<StreamId, Received>,
    /// Why the bot is not in the room, when it is not.
    pub error: Option<String>,
}

#[derive(Debug)]
struct Shared {
    status: Mutex<BotStatus>,
    playing: Mutex<BTreeMap<StreamId, RemoteStream>>,
    stop: AtomicBool,
}

/// A running bot; dropping it logs out.
#[derive(Debug)]
pub struct Bot {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Bot {
    pub fn start(config: BotConfig) -> Result<Bot, EngineError> {
        let engine = Engine::new(EngineConfig::new(config.server_url.clone()))?;
        let shared = Arc::new(Shared {
            status: Mutex::new(BotStatus {
                state: RoomStateReason::Logining,
                users: Vec::new(),
                received: BTreeMap::new(),
                error: None,
            }),
            playing: Mutex::new(BTreeMap::new()),
            stop: AtomicBool::new(false),
        });
        engine.login_room(
            config.room_id.clone(),
            config.token.clone(),
            config.user.clone(),
            LoginConfig { user_update: true },
        );
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("bot-{}", config.user.user_id))
            .spawn(move || run(engine, config, thread_shared))?;
        Ok(Bot {
            shared,
            thread: Some(thread),
        })
    }

    /// A snapshot of what the bot knows and has received.
    pub fn status(&self) -> BotStatus {
        let playing = lock(&self.shared.playing).clone();
        let mut status = lock(&self.shared.status).clone();
        for (stream_id, remote) in playing {
            let received = status.received.entry(stream_id).or_default();
            received.frames = remote.video.count();
            received.audio_samples = remote.audio.received();
            if let Some(frame) = remote.video.latest() {
                received.size = (frame.frame.width, frame.frame.height);
                received.last_frame_number = frame.code.map(|c| c.frame_number);
            }
        }
        status
    }

    /// The media of a stream the bot plays.
    pub fn remote(&self, stream_id: &StreamId) -> Option<RemoteStream> {
        lock(&self.shared.playing).get(stream_id).cloned()
    }
}

impl Drop for Bot {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn run(engine: Engine, config: BotConfig, shared: Arc<Shared>) {
    let mut local: Option<LocalStream> = None;
    while !shared.stop.load(Ordering::Relaxed) {
        let Ok(event) = engine.events().recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        match event {
            EngineEvent::RoomStateChanged { reason, error, .. } => {
                let mut status = lock(&shared.status);
                status.state = reason;
                status.error = error.map(|e| e.to_string());
                drop(status);
                match reason {
                    RoomStateReason::Logined => {
                        if let Some(stream_config) = &config.publish {
                            match engine.create_stream(stream_config.clone()) {
                                Ok(stream) => {
                                    if let Some(note) = stream.note() {
                                        tracing::warn!(bot = %config.user.user_id, "{note}");
                                    }
                                    let id = format!("{}-cam", config.user.user_id);
                                    match StreamId::new(id) {
                                        Ok(stream_id) => engine.start_publishing_stream(stream_id, &stream),
                                        Err(err) => tracing::error!(%err, "bot stream ID"),
                                    }
                                    local = Some(stream);
                                }
                                Err(err) => tracing::error!(bot = %config.user.user_id, %err, "can't capture"),
                            }
                        }
                    }
                    RoomStateReason::LoginFailed
                    | RoomStateReason::Kickout
                    | RoomStateReason::ReconnectFailed
                    | RoomStateReason::Logout => {
                        tracing::warn!(bot = %config.user.user_id, ?reason, "bot left the room");
                        break;
                    }
                    _ => {}
                }
            }
            EngineEvent::RoomUserUpdate { update, users, .. } => {
                let mut status = lock(&shared.status);
                for user in users {
                    let id = user.user_id.to_string();
                    match update {
                        UpdateType::Add => status.users.push(id),
                        UpdateType::Delete => status.users.retain(|u| *u != id),
                    }
                }
            }
            EngineEvent::RoomStreamUpdate { update, streams, .. } => {
                for stream in streams {
                    match update {
                        UpdateType::Add => {
                            let remote = engine.start_playing_stream(stream.stream_id.clone());
                            lock(&shared.playing).insert(stream.stream_id, remote);
                        }
                        UpdateType::Delete => {
                            engine.stop_playing_stream(stream.stream_id.clone());
                            lock(&shared.playing).remove(&stream.stream_id);
                        }
                    }
                }
            }
            EngineEvent::PublisherStateUpdate {
                stream_id,
                state,
                error: Some(error),
            } => {
                tracing::warn!(bot = %config.user.user_id, %stream_id, ?state, %error, "publishing trouble");
            }
            EngineEvent::PlayQualityUpdate { stream_id, quality } => {
                tracing::info!(
                    bot = %config.user.user_id,
                    %stream_id,
                    fps = quality.fps,
                    kbps = quality.kbps,
                    size = ?(quality.width, quality.height),
                    "receiving"
                );
            }
            _ => {}
        }
    }
    if let Some(stream) = local {
        stream.destroy();
    }
    engine.logout_room();
    // Give the logout a moment to reach the server before the engine is dropped.
    std::thread::sleep(Duration::from_millis(50));
}

/// Why a guest token could not be had from a dev server.
#[derive(Debug, thiserror::Error)]
pub enum DevTokenError {
    #[error("can't reach {0}: {1}")]
    Unreachable(String, String),
    #[error("the server at {0} does not mint guest tokens (start it with --dev, or pass a token)")]
    Refused(String),
    #[error("the server's answer is not readable: {0}")]
    Unreadable(String),
}

/// Asks a dev-mode room server for a guest token (`GET /v1/dev/token`). Blocking; for tools and bots.
pub fn dev_token(server_url: &str, room: &RoomId, user: &UserInfo, spectator: bool) -> Result<String, DevTokenError> {
    let authority = server_url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| DevTokenError::Unreachable(server_url.into(), "not a ws:// URL".into()))?;
    let query = format!(
        "room={room}&user={}&name={}&spectator={spectator}",
        user.user_id,
        percent_encode(&user.user_name)
    );
    let unreachable = |e: std::io::Error| DevTokenError::Unreachable(authority.into(), e.to_string());
    let mut socket = TcpStream::connect(authority).map_err(unreachable)?;
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(unreachable)?;
    write!(
        socket,
        "GET /v1/dev/token?{query} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .map_err(unreachable)?;
    let mut answer = String::new();
    socket.read_to_string(&mut answer).map_err(unreachable)?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| DevTokenError::Unreadable("no HTTP body".into()))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(DevTokenError::Refused(authority.into()));
    }
    let json: serde_json::Value = serde_json::from_str(body).map_err(|e| DevTokenError::Unreadable(e.to_string()))?;
    json["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| DevTokenError::Unreadable("no token in the answer".into()))
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
