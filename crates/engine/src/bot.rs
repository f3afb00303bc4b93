//! Bots: headless participants that log in, publish a stream (the test pattern and a tone,
//! or a file), play every stream they see and keep count of what arrives. For demos, tests
//! and load; the app's "add demo participants" and `holoroom bot` run these.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use holoroom_protocol::{LoginConfig, RoomId, RoomStateReason, StreamId, StreamMute, UpdateType, UserInfo};

use crate::client::Engine;
use crate::engine::{EngineConfig, EngineError, EngineEvent, RemoteStream};
use crate::stream::{LocalStream, StreamConfig};

/// What a bot does.
#[derive(Debug, Clone)]
pub struct BotConfig {
    pub server_url: String,
    pub room_id: RoomId,
    pub user: UserInfo,
    /// A token, or a source the bot asks again before each one expires.
    pub token: crate::token::TokenSource,
    /// What to publish, as stream `<user>-cam`; None to only watch (spectators).
    pub publish: Option<StreamConfig>,
    /// Play every stream it sees (and count what arrives); off for bots that only fill a room.
    pub plays: bool,
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
    /// The room's chat as the bot has seen it: who said what.
    pub chat: Vec<(String, String)>,
}

#[derive(Debug)]
struct Shared {
    status: Mutex<BotStatus>,
    playing: Mutex<BTreeMap<StreamId, RemoteStream>>,
    /// A mute state asked for and not yet applied to the bot's stream.
    mute: Mutex<Option<StreamMute>>,
    /// Chat messages to send.
    say: Mutex<Vec<String>>,
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
                chat: Vec::new(),
            }),
            playing: Mutex::new(BTreeMap::new()),
            mute: Mutex::new(None),
            say: Mutex::new(Vec::new()),
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

    /// Switches the bot's microphone and camera off or on (as a person's call bar does; the
    /// room is told). Applied within a tenth of a second, or as its stream is published.
    pub fn mute(&self, mute: StreamMute) {
        *lock(&self.shared.mute) = Some(mute);
    }

    /// Says `text` in the room's chat (within a tenth of a second, once in the room).
    pub fn say(&self, text: impl Into<String>) {
        lock(&self.shared.say).push(text.into());
    }

    /// The media of a stream the bot plays.
    pub fn remote(&self, stream_id: &StreamId) -> Option<RemoteStream> {
        lock(&self.shared.playing).get(stream_id).cloned()
    }
}

impl Bot {
    /// Stops the bot without waiting for it: it logs out and ends on its own thread.
    pub fn leave(mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        // Detached: the thread ends by itself.
        self.thread.take();
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

/// A flag that turns true when the process is interrupted (Ctrl-C), for tools that run bots
/// until then.
pub fn interrupted() -> std::io::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("interrupt".into()).spawn(move || {
        runtime.block_on(async {
            let _ = tokio::signal::ctrl_c().await;
        });
        set.store(true, Ordering::Relaxed);
    })?;
    Ok(flag)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn run(engine: Engine, config: BotConfig, shared: Arc<Shared>) {
    let mut local: Option<LocalStream> = None;
    while !shared.stop.load(Ordering::Relaxed) {
        if let Some(stream) = &local
            && let Some(mute) = lock(&shared.mute).take()
        {
            engine.mute_stream_audio(stream, mute.audio);
            engine.mute_stream_video(stream, mute.video);
        }
        // In the room (the engine holds messages while it reconnects).
        let in_room = matches!(
            lock(&shared.status).state,
            RoomStateReason::Logined | RoomStateReason::Reconnecting | RoomStateReason::Reconnected
        );
        if in_room {
            for text in std::mem::take(&mut *lock(&shared.say)) {
                engine.send_room_message(text);
            }
        }
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
                                    // Asked for before the stream existed: it is published that way.
                                    if let Some(mute) = lock(&shared.mute).take() {
                                        engine.mute_stream_audio(&stream, mute.audio);
                                        engine.mute_stream_video(&stream, mute.video);
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
            EngineEvent::RoomMessage { message, .. } => {
                lock(&shared.status)
                    .chat
                    .push((message.from.user_id.to_string(), message.text));
            }
            EngineEvent::RoomStreamUpdate { update, streams, .. } if config.plays => {
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
