//! What the engine speaks: its events, errors, states, configuration and the commands its
//! backends carry out. The [`Engine`](crate::Engine) itself is in `client.rs`; the backends
//! depend on this module and never on the client.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use holoroom_protocol::{
    ChatMessage, ErrorBody, Event, KickoutReason, LoginConfig, Pose, RoomId, RoomStateReason, Speaker, StreamId,
    StreamInfo, UpdateType, UserId, UserInfo, VideoLayer,
};

use crate::media::{AudioBuffer, AudioJitterStats, FrameSlot, ReceiveStats};
use crate::stream::LocalStream;

/// Why a room operation failed on the client side or was refused by the server.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RoomError {
    #[error("can't reach room server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the room server refused: {0}")]
    Refused(ErrorBody),
    #[error("the connection to the room server closed")]
    Closed,
    #[error("the room server did not answer in time")]
    Timeout,
    #[error("the room server sent something unreadable: {0}")]
    Protocol(String),
    #[error("not in a room")]
    NotInRoom,
    #[error("{0}")]
    Token(#[from] crate::token::TokenError),
}

/// Why publishing or playing media failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MediaError {
    #[error("not in a room; log in first")]
    NotInRoom,
    #[error("the room server refused the media request: {0}")]
    Signaling(#[from] crate::signaling::SignalingError),
    #[error("the media connection failed: {0}")]
    Connection(String),
    /// The two sides could not agree on the media (an unreadable or refused offer or answer,
    /// a codec left out): trying again would not help.
    #[error("the media could not be agreed on: {0}")]
    Negotiation(String),
    #[error("the codec failed: {0}")]
    Codec(String),
    #[error("already {0} this stream")]
    Duplicate(&'static str),
    #[error("can't capture: {0}")]
    Capture(String),
}

impl MediaError {
    /// Whether a publication or playback that failed this way is worth setting up again: the
    /// media path (or a slow answer) failed, not the server's will, the codecs or the devices.
    pub fn is_path_failure(&self) -> bool {
        matches!(
            self,
            MediaError::Connection(_) | MediaError::Signaling(crate::signaling::SignalingError::Timeout(_))
        )
    }
}

/// `publisherStateUpdate` states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublisherState {
    NoPublish,
    Requesting,
    Publishing,
}

/// `playerStateUpdate` states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlayerState {
    NoPlay,
    Requesting,
    Playing,
}

/// Where a publication or playback is, on either backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MediaPhase {
    /// Setting up, or (with an error) setting up again after the media path failed.
    Requesting,
    /// Media flows.
    Running,
    /// Over for good.
    Ended,
}

/// The publisher (`publishing`) or player state event for `phase`.
pub(crate) fn media_state_event(
    stream_id: &StreamId,
    publishing: bool,
    phase: MediaPhase,
    error: Option<MediaError>,
) -> EngineEvent {
    let stream_id = stream_id.clone();
    if publishing {
        let state = match phase {
            MediaPhase::Requesting => PublisherState::Requesting,
            MediaPhase::Running => PublisherState::Publishing,
            MediaPhase::Ended => PublisherState::NoPublish,
        };
        EngineEvent::PublisherStateUpdate {
            stream_id,
            state,
            error,
        }
    } else {
        let state = match phase {
            MediaPhase::Requesting => PlayerState::Requesting,
            MediaPhase::Running => PlayerState::Playing,
            MediaPhase::Ended => PlayerState::NoPlay,
        };
        EngineEvent::PlayerStateUpdate {
            stream_id,
            state,
            error,
        }
    }
}

/// What `publishQualityUpdate` and `playQualityUpdate` report, every two seconds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StreamQuality {
    pub width: u32,
    pub height: u32,
    /// Frames per second encoded (publishing) or decoded (playing) since the last report.
    pub fps: f32,
    /// Video kilobits per second since the last report.
    pub kbps: f32,
    /// Round-trip time to the server, from ICE.
    pub rtt_ms: Option<f32>,
    /// Fraction of packets lost, 0 to 1 (playing).
    pub loss_fraction: f32,
    /// Frames encoded or decoded in all.
    pub frames: u64,
}

/// How often publish and play quality are reported.
pub(crate) const QUALITY_INTERVAL: Duration = Duration::from_secs(2);

/// A played stream's media: the newest decoded frame and the decoded sound.
#[derive(Debug, Clone, Default)]
pub struct RemoteStream {
    pub video: FrameSlot,
    pub audio: AudioBuffer,
    /// What the receive buffers did so far (filled by the desktop player).
    pub receive: ReceiveReport,
    /// The video layer asked for (see [`Engine::set_video_layer`](crate::Engine::set_video_layer)).
    pub layer: LayerChoice,
}

/// The video layer asked for of a played stream, shared between the app's handle and the
/// media connection that starts with it. Cheap to clone; clones share the choice.
#[derive(Debug, Clone)]
pub struct LayerChoice(Arc<AtomicU8>);

impl Default for LayerChoice {
    fn default() -> Self {
        LayerChoice(Arc::new(AtomicU8::new(VideoLayer::High as u8)))
    }
}

impl LayerChoice {
    pub fn get(&self) -> VideoLayer {
        match self.0.load(Ordering::Relaxed) {
            0 => VideoLayer::Off,
            1 => VideoLayer::Low,
            2 => VideoLayer::Medium,
            _ => VideoLayer::High,
        }
    }

    pub(crate) fn set(&self, layer: VideoLayer) {
        self.0.store(layer as u8, Ordering::Relaxed);
    }
}

/// The counters of a player's receive buffers: NACKs, losses, dropped frames, concealed sound.
/// Cheap to clone; clones share the counters.
#[derive(Debug, Clone, Default)]
pub struct ReceiveReport {
    inner: Arc<Mutex<(ReceiveStats, AudioJitterStats)>>,
    /// Video payload bytes received and time spent decoding (µs), by the desktop player.
    video_bytes: Arc<std::sync::atomic::AtomicU64>,
    decode_micros: Arc<std::sync::atomic::AtomicU64>,
}

impl ReceiveReport {
    fn lock(&self) -> std::sync::MutexGuard<'_, (ReceiveStats, AudioJitterStats)> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn video(&self) -> ReceiveStats {
        self.lock().0
    }

    pub fn audio(&self) -> AudioJitterStats {
        self.lock().1
    }

    /// Video payload bytes received so far.
    pub fn video_bytes(&self) -> u64 {
        self.video_bytes.load(Ordering::Relaxed)
    }

    /// Time spent decoding video so far.
    pub fn decode_time(&self) -> Duration {
        Duration::from_micros(self.decode_micros.load(Ordering::Relaxed))
    }

    #[allow(dead_code, reason = "the browser's player keeps no receive buffers of its own")]
    pub(crate) fn add_video_bytes(&self, bytes: usize) {
        self.video_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    #[allow(dead_code, reason = "the browser decodes in the page")]
    pub(crate) fn add_decode_time(&self, time: Duration) {
        self.decode_micros.fetch_add(time.as_micros() as u64, Ordering::Relaxed);
    }

    #[allow(dead_code, reason = "the browser's player keeps no receive buffers of its own")]
    pub(crate) fn set_video(&self, stats: ReceiveStats) {
        self.lock().0 = stats;
    }

    #[allow(dead_code, reason = "the browser's player keeps no receive buffers of its own")]
    pub(crate) fn set_audio(&self, stats: AudioJitterStats) {
        self.lock().1 = stats;
    }
}

/// What this device can do, item by item, with the reason for each missing one
/// (`checkSystemRequirements`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemRequirements {
    pub webrtc: Result<(), String>,
    pub custom_capture: Result<(), String>,
    pub camera: Result<(), String>,
    pub microphone: Result<(), String>,
    pub screen_capture: Result<(), String>,
    /// Video codecs that can be published and played.
    pub video_codecs: Vec<&'static str>,
    pub audio_codecs: Vec<&'static str>,
}

impl SystemRequirements {
    /// Whether a call can be made at all (it can without camera or microphone: the engine then
    /// sends the test pattern and silence).
    pub fn can_call(&self) -> bool {
        self.webrtc.is_ok() && !self.video_codecs.is_empty()
    }
}

/// Where the engine's events go.
pub(crate) type EventSink = crossbeam_channel::Sender<EngineEvent>;

/// Why an engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("can't start the engine's network thread: {0}")]
    Runtime(#[from] std::io::Error),
}

/// How the engine retries after the connection to the room server drops.
#[derive(Debug, Clone)]
pub struct ReconnectPolicy {
    /// First pause between attempts; it doubles up to `max_delay`.
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// Give up (ReconnectFailed) after this long.
    pub give_up_after: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            first_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(2),
            give_up_after: Duration::from_secs(30),
        }
    }
}

/// Where the engine connects and how it behaves.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Signaling URL, e.g. `ws://127.0.0.1:7880/v1/ws`.
    pub server_url: String,
    pub reconnect: ReconnectPolicy,
    /// Called as this engine's frames pass each stage (for measuring; None normally).
    pub frame_probe: Option<holoroom_protocol::timing::FrameProbe>,
}

impl EngineConfig {
    pub fn new(server_url: impl Into<String>) -> Self {
        Self {
            server_url: server_url.into(),
            reconnect: ReconnectPolicy::default(),
            frame_probe: None,
        }
    }
}

/// Which request an [`EngineEvent::RequestFailed`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    RenewToken,
    SetPose,
    SetVideoLayer,
    SetStreamMute,
    SendMessage,
}

/// Everything the engine reports, named as in the classic RTC SDKs.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    /// `roomStateChanged`: Logining, Logined, LoginFailed, Reconnecting, Reconnected,
    /// ReconnectFailed, Kickout, Logout, LogoutFailed.
    RoomStateChanged {
        room_id: RoomId,
        reason: RoomStateReason,
        error: Option<RoomError>,
        kickout: Option<KickoutReason>,
    },
    /// While reconnecting: an attempt failed, and the next one is in `retry_in`.
    ReconnectRetry {
        room_id: RoomId,
        error: RoomError,
        retry_in: Duration,
    },
    /// `roomUserUpdate`; only when the login asked for user updates.
    RoomUserUpdate {
        room_id: RoomId,
        update: UpdateType,
        users: Vec<UserInfo>,
    },
    /// `roomStreamUpdate`: others started or stopped publishing.
    RoomStreamUpdate {
        room_id: RoomId,
        update: UpdateType,
        streams: Vec<StreamInfo>,
    },
    StreamExtraInfoUpdate {
        room_id: RoomId,
        streams: Vec<StreamInfo>,
    },
    /// `remoteMicStatusUpdate` / `remoteCameraStatusUpdate`: others switched their microphone
    /// or camera off or on (each stream's `mute` is its new state).
    StreamMuteUpdate {
        room_id: RoomId,
        streams: Vec<StreamInfo>,
    },
    /// The token expires soon: call [`Engine::renew_token`].
    TokenWillExpire {
        room_id: RoomId,
        expires_in_secs: u64,
    },
    TokenRenewed {
        room_id: RoomId,
        expires_at: u64,
    },
    /// Another participant moved.
    PoseUpdate {
        room_id: RoomId,
        user_id: UserId,
        pose: Pose,
    },
    /// `publisherStateUpdate`.
    PublisherStateUpdate {
        stream_id: StreamId,
        state: PublisherState,
        error: Option<MediaError>,
    },
    /// `publishQualityUpdate`, every two seconds while publishing.
    PublishQualityUpdate {
        stream_id: StreamId,
        quality: StreamQuality,
    },
    /// `playerStateUpdate`.
    PlayerStateUpdate {
        stream_id: StreamId,
        state: PlayerState,
        error: Option<MediaError>,
    },
    /// `playQualityUpdate`, every two seconds while playing.
    PlayQualityUpdate {
        stream_id: StreamId,
        quality: StreamQuality,
    },
    /// Who is speaking, loudest first (see [`holoroom_protocol::Event::ActiveSpeakers`]).
    ActiveSpeakers {
        room_id: RoomId,
        speakers: Vec<Speaker>,
    },
    /// `IMRecvBroadcastMessage`: someone (you too, once the room has it) said something. After
    /// a login the room's latest messages arrive this way too, `earlier` (said before you came);
    /// after a reconnect, those said while you were away (not `earlier`: news to you).
    RoomMessage {
        room_id: RoomId,
        message: ChatMessage,
        earlier: bool,
    },
    /// A request without a state of its own failed.
    RequestFailed {
        request: RequestKind,
        error: RoomError,
    },
}

impl EngineEvent {
    /// The engine event for a server event that passes straight through, if it is one.
    pub(crate) fn from_server(event: Event) -> Option<EngineEvent> {
        Some(match event {
            Event::RoomStateChanged {
                room_id,
                reason,
                error,
                kickout,
            } => EngineEvent::RoomStateChanged {
                room_id,
                reason,
                error: error.map(RoomError::Refused),
                kickout,
            },
            Event::RoomUserUpdate { room_id, update, users } => EngineEvent::RoomUserUpdate { room_id, update, users },
            Event::RoomStreamUpdate {
                room_id,
                update,
                streams,
            } => EngineEvent::RoomStreamUpdate {
                room_id,
                update,
                streams,
            },
            Event::StreamExtraInfoUpdate { room_id, streams } => {
                EngineEvent::StreamExtraInfoUpdate { room_id, streams }
            }
            Event::StreamMuteUpdate { room_id, streams } => EngineEvent::StreamMuteUpdate { room_id, streams },
            Event::TokenWillExpire {
                room_id,
                expires_in_secs,
            } => EngineEvent::TokenWillExpire {
                room_id,
                expires_in_secs,
            },
            Event::PoseUpdate { room_id, user_id, pose } => EngineEvent::PoseUpdate { room_id, user_id, pose },
            Event::ActiveSpeakers { room_id, speakers } => EngineEvent::ActiveSpeakers { room_id, speakers },
            Event::RoomMessage { room_id, message } => EngineEvent::RoomMessage {
                room_id,
                message,
                earlier: false,
            },
            Event::Trickle { .. } | Event::VideoLayersWanted { .. } | Event::PublishFailed { .. } => return None,
        })
    }
}

/// What the app asks of the engine.
#[derive(Debug)]
pub(crate) enum Command {
    Login {
        room_id: RoomId,
        token: crate::token::TokenSource,
        user: UserInfo,
        config: LoginConfig,
    },
    Logout,
    RenewToken(String),
    SetPose(Pose),
    StartPublishing(StreamId, LocalStream),
    StopPublishing(StreamId),
    StartPlaying(StreamId, RemoteStream),
    StopPlaying(StreamId),
    SetVideoLayer(StreamId, VideoLayer),
    /// A local stream's microphone or camera went off or on: tell the room for each of its
    /// publications.
    MuteChanged(LocalStream),
    /// A chat message and the engine's number for it (see [`Request::SendMessage`]).
    SendMessage {
        text: String,
        nonce: u64,
    },
}

impl Command {
    /// The answer to this command when no room is joined (None for Login and Logout, which
    /// need none); a played stream's slot is closed, as nothing will fill it.
    pub(crate) fn outside_a_room(self) -> Option<EngineEvent> {
        let request_failed = |request| EngineEvent::RequestFailed {
            request,
            error: RoomError::NotInRoom,
        };
        let no_play = |stream_id| EngineEvent::PlayerStateUpdate {
            stream_id,
            state: PlayerState::NoPlay,
            error: Some(MediaError::NotInRoom),
        };
        match self {
            Command::Login { .. } | Command::Logout => None,
            Command::RenewToken(_) => Some(request_failed(RequestKind::RenewToken)),
            Command::SetPose(_) => Some(request_failed(RequestKind::SetPose)),
            Command::StartPublishing(stream_id, _) | Command::StopPublishing(stream_id) => {
                Some(EngineEvent::PublisherStateUpdate {
                    stream_id,
                    state: PublisherState::NoPublish,
                    error: Some(MediaError::NotInRoom),
                })
            }
            Command::StartPlaying(stream_id, remote) => {
                remote.video.close();
                Some(no_play(stream_id))
            }
            Command::StopPlaying(stream_id) => Some(no_play(stream_id)),
            Command::SetVideoLayer(..) => Some(request_failed(RequestKind::SetVideoLayer)),
            // Outside a room the stream is not published: its own switch is all there is.
            Command::MuteChanged(_) => None,
            Command::SendMessage { .. } => Some(request_failed(RequestKind::SendMessage)),
        }
    }

    /// The refusal of a login while already in `current`.
    pub(crate) fn already_in(room_id: RoomId, current: &RoomId) -> EngineEvent {
        EngineEvent::RoomStateChanged {
            room_id,
            reason: RoomStateReason::LoginFailed,
            error: Some(RoomError::Refused(ErrorBody::new(
                holoroom_protocol::ErrorCode::AlreadyLoggedIn,
                format!("already in room {current}; log out first"),
            ))),
            kickout: None,
        }
    }
}
