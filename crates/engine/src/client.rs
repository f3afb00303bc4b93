//! The engine: one per app, pointing at a room server. Methods return at once; what happens
//! arrives as [`EngineEvent`]s on a crossbeam channel, so a game loop can drain it each frame.

use std::sync::atomic::{AtomicU64, Ordering};

use holoroom_protocol::{LoginConfig, Pose, RoomId, StreamId, UserInfo, VideoLayer};

#[allow(unused_imports, reason = "named in the docs")]
use crate::engine::RequestKind;
use crate::engine::{Command, EngineConfig, EngineError, EngineEvent, RemoteStream, SystemRequirements};
use crate::platform::Backend;
use crate::platform::check_system_requirements;
use crate::stream::{LocalStream, StreamConfig, StreamError};

/// The client SDK's entry point: one per app.
#[derive(Debug)]
pub struct Engine {
    backend: Backend,
    events: crossbeam_channel::Receiver<EngineEvent>,
    /// The next chat message's number: from the clock at start, so that another engine of
    /// the same user (a restarted app) does not reuse this one's.
    next_nonce: AtomicU64,
}

impl Engine {
    /// Starts the engine's network side. Nothing connects until [`Engine::login_room`].
    pub fn new(config: EngineConfig) -> Result<Engine, EngineError> {
        let (events_tx, events) = crossbeam_channel::unbounded();
        let backend = Backend::start(config, events_tx)?;
        let start = web_time::SystemTime::now()
            .duration_since(web_time::SystemTime::UNIX_EPOCH)
            .map_or(0, |since| u64::try_from(since.as_micros()).unwrap_or(u64::MAX));
        Ok(Engine {
            backend,
            events,
            next_nonce: AtomicU64::new(start),
        })
    }

    /// The engine's events, in order. Drain it every frame (or block on it in a bot).
    pub fn events(&self) -> &crossbeam_channel::Receiver<EngineEvent> {
        &self.events
    }

    /// `loginRoom`: Logining now, then Logined or LoginFailed. The initial users and streams
    /// arrive as ADD events right after Logined. `token` is a token (`String`) or a
    /// [`TokenSource`](crate::token::TokenSource), which the engine also asks for a fresh
    /// token before the current one expires.
    pub fn login_room(
        &self,
        room_id: RoomId,
        token: impl Into<crate::token::TokenSource>,
        user: UserInfo,
        config: LoginConfig,
    ) {
        self.backend.send(Command::Login {
            room_id,
            token: token.into(),
            user,
            config,
        });
    }

    /// `logoutRoom`: Logout (or LogoutFailed) follows.
    pub fn logout_room(&self) {
        self.backend.send(Command::Logout);
    }

    /// Replaces the token before it expires; TokenRenewed or RequestFailed follows.
    pub fn renew_token(&self, token: impl Into<String>) {
        self.backend.send(Command::RenewToken(token.into()));
    }

    /// Tells the room where this participant is.
    pub fn set_pose(&self, pose: Pose) {
        self.backend.send(Command::SetPose(pose));
    }

    /// `checkSystemRequirements`. It opens devices, which can take seconds: a game loop
    /// should use [`Engine::check_system_requirements_later`].
    pub fn check_system_requirements(&self) -> SystemRequirements {
        check_system_requirements()
    }

    /// The same check, off the caller's thread: the answer arrives on the returned channel.
    pub fn check_system_requirements_later(&self) -> crossbeam_channel::Receiver<SystemRequirements> {
        self.backend.check_system_requirements()
    }

    /// `createStream`: starts capture. The returned stream's preview slot is the local view.
    /// Opening a camera or microphone can take seconds: a game loop should use
    /// [`Engine::create_stream_later`].
    pub fn create_stream(&self, config: StreamConfig) -> Result<LocalStream, StreamError> {
        LocalStream::create(config)
    }

    /// `createStream` off the caller's thread: the stream (or why there is none) arrives on the
    /// returned channel once its devices opened or fell back ([`LocalStream::note`] says why).
    pub fn create_stream_later(
        &self,
        config: StreamConfig,
    ) -> crossbeam_channel::Receiver<Result<LocalStream, StreamError>> {
        self.backend.create_stream(config)
    }

    /// `destroyStream`: stops capture.
    pub fn destroy_stream(&self, stream: &LocalStream) {
        stream.destroy();
    }

    /// `startPublishingStream`: PublisherStateUpdate Requesting, then Publishing (or NoPublish with the error).
    pub fn start_publishing_stream(&self, stream_id: StreamId, stream: &LocalStream) {
        self.backend.send(Command::StartPublishing(stream_id, stream.clone()));
    }

    /// `muteMicrophone` for one stream: silence goes out instead of its sound (at once, also
    /// before it is published), and the room shows it muted
    /// ([`EngineEvent::StreamMuteUpdate`] to the others), also after it is published again.
    pub fn mute_stream_audio(&self, stream: &LocalStream, muted: bool) {
        stream.set_audio_muted(muted);
        self.backend.send(Command::MuteChanged(stream.clone()));
    }

    /// `enableCamera(false)` for one stream: a still black picture goes out instead of the
    /// camera's, and the room shows its camera off, as [`Engine::mute_stream_audio`] does.
    pub fn mute_stream_video(&self, stream: &LocalStream, muted: bool) {
        stream.set_video_muted(muted);
        self.backend.send(Command::MuteChanged(stream.clone()));
    }

    /// `sendBroadcastMessage`: says `text` to everyone in the room. It comes back as an
    /// [`EngineEvent::RoomMessage`] once the room has it (in the room's order); a failure is a
    /// [`EngineEvent::RequestFailed`] for [`RequestKind::SendMessage`]. Sent once the
    /// connection is back if it is away.
    pub fn send_room_message(&self, text: impl Into<String>) {
        let nonce = self.next_nonce.fetch_add(1, Ordering::Relaxed);
        self.backend.send(Command::SendMessage {
            text: text.into(),
            nonce,
        });
    }

    pub fn stop_publishing_stream(&self, stream_id: StreamId) {
        self.backend.send(Command::StopPublishing(stream_id));
    }

    /// `startPlayingStream`: returns where the stream's decoded frames and sound will arrive;
    /// PlayerStateUpdate Requesting, then Playing (or NoPlay with the error).
    pub fn start_playing_stream(&self, stream_id: StreamId) -> RemoteStream {
        let remote = RemoteStream::default();
        self.backend.send(Command::StartPlaying(stream_id, remote.clone()));
        remote
    }

    pub fn stop_playing_stream(&self, stream_id: StreamId) {
        self.backend.send(Command::StopPlaying(stream_id));
    }

    /// Which video layer of a played stream to receive: the smallest that covers the size it is
    /// shown at, or [`VideoLayer::Off`] while it is out of sight (the sound keeps playing).
    /// Kept for the stream's later media connections too; a failure is a
    /// [`EngineEvent::RequestFailed`] for [`RequestKind::SetVideoLayer`].
    pub fn set_video_layer(&self, stream_id: StreamId, layer: VideoLayer) {
        self.backend.send(Command::SetVideoLayer(stream_id, layer));
    }
}
