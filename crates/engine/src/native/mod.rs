//! The native backend: a tokio runtime on its own thread runs the room driver, which owns the
//! signaling connection, keeps the room view, reconnects after drops and reports events.
//! Each published or played stream runs as a task of its own (`publish.rs`, `play.rs`) over a
//! webrtc-rs peer connection to the server's SFU (`peer.rs`).

mod peer;
mod play;
mod publish;

use std::collections::HashMap;

use std::thread::JoinHandle;
use std::time::Duration;

use holoroom_protocol::timing::FrameProbe;
use holoroom_protocol::{
    Event, LoginConfig, LoginResponse, Request, ResponseBody, RoomId, RoomStateReason, StreamId, UserInfo,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::engine::RemoteStream;
use crate::engine::{
    Command, EngineConfig, EngineError, EngineEvent, MediaError, PlayerState, PublisherState, ReconnectPolicy,
    RequestKind, RoomError,
};
use crate::room_view::{Followed, RoomView};
use crate::signaling::{Signaling, SignalingError, SignalingEvent};
use crate::stream::LocalStream;

/// How long a polite logout may take when the engine is dropped.
const LOGOUT_ON_DROP: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(crate) struct Backend {
    commands: Option<mpsc::UnboundedSender<Command>>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    pub fn start(config: EngineConfig, events: crossbeam_channel::Sender<EngineEvent>) -> Result<Backend, EngineError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("holoroom-engine")
            .enable_all()
            .build()?;
        let (commands, command_rx) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("holoroom-engine".into())
            .spawn(move || {
                runtime.block_on(
                    Driver {
                        media: MediaEnv {
                            bind: peer::bind_for(&config.server_url),
                            probe: config.frame_probe,
                        },
                        url: config.server_url,
                        policy: config.reconnect,
                        events,
                        commands: command_rx,
                        deferred: Vec::new(),
                    }
                    .run(),
                );
            })?;
        Ok(Backend {
            commands: Some(commands),
            thread: Some(thread),
        })
    }

    pub fn send(&self, command: Command) {
        if let Some(commands) = &self.commands {
            // The driver only stops after the sender is dropped, so this cannot fail while `self` lives.
            let _ = commands.send(command);
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        // Closing the channel asks the driver to log out and stop.
        self.commands.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A session in a room.
struct InRoom {
    room_id: RoomId,
    token: String,
    user: UserInfo,
    config: LoginConfig,
    signaling: Signaling,
    server_events: mpsc::UnboundedReceiver<SignalingEvent>,
    session_id: String,
    view: RoomView,
    publishing: HashMap<StreamId, MediaTask<LocalStream>>,
    playing: HashMap<StreamId, MediaTask<RemoteStream>>,
}

/// What a media task is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Run,
    /// Stop and leave the listing alone (a new task takes over after a reconnect).
    Handover,
    /// Stop and withdraw the stream or subscription from the room.
    Withdraw,
}

impl Stop {
    pub(crate) fn is_stop(&self) -> bool {
        *self != Stop::Run
    }
}

/// A running publication or playback: what it works on, and the switch that stops it.
struct MediaTask<T> {
    what: T,
    stop: watch::Sender<Stop>,
}

impl<T> MediaTask<T> {
    /// Whether the task is still running (it drops its receiver when it ends).
    fn is_running(&self) -> bool {
        !self.stop.is_closed()
    }
}

impl<T> Drop for MediaTask<T> {
    fn drop(&mut self) {
        self.stop.send_if_modified(|stop| {
            let run = *stop == Stop::Run;
            if run {
                *stop = Stop::Withdraw;
            }
            run
        });
    }
}

/// What to do after handling something while in a room.
enum Next {
    Stay,
    Leave,
}

/// What every media connection of this engine shares.
#[derive(Debug, Clone)]
pub(crate) struct MediaEnv {
    /// Where media connections bind their host candidates.
    pub bind: &'static str,
    /// Marks frames as they pass (benchmarks).
    pub probe: Option<FrameProbe>,
}

/// What a media task's setup reports to, is stopped by and marks frames with.
pub(crate) struct TaskLink {
    pub events: crate::engine::EventSink,
    pub running: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub probe: Option<FrameProbe>,
}

struct Driver {
    url: String,
    media: MediaEnv,
    policy: ReconnectPolicy,
    events: crossbeam_channel::Sender<EngineEvent>,
    commands: mpsc::UnboundedReceiver<Command>,
    /// Commands that arrived while reconnecting, replayed afterwards.
    deferred: Vec<Command>,
}

impl Driver {
    fn emit(&self, event: EngineEvent) {
        // The app may have dropped its receiver; events then have nobody to go to.
        let _ = self.events.send(event);
    }

    fn state(&self, room_id: &RoomId, reason: RoomStateReason, error: Option<RoomError>) {
        self.emit(EngineEvent::RoomStateChanged {
            room_id: room_id.clone(),
            reason,
            error,
            kickout: None,
        });
    }

    async fn run(mut self) {
        let mut room: Option<InRoom> = None;
        loop {
            let next_command = if self.deferred.is_empty() {
                None
            } else {
                Some(self.deferred.remove(0))
            };
            match room.as_mut() {
                None => {
                    let command = match next_command {
                        Some(command) => Some(command),
                        None => self.commands.recv().await,
                    };
                    let Some(command) = command else { return };
                    room = self.idle(command).await;
                }
                Some(in_room) => {
                    let next = if let Some(command) = next_command {
                        self.command(in_room, command).await
                    } else {
                        tokio::select! {
                            command = self.commands.recv() => match command {
                                Some(command) => self.command(in_room, command).await,
                                None => {
                                    let bye = in_room.signaling.request(Request::Logout {});
                                    let _ = tokio::time::timeout(LOGOUT_ON_DROP, bye).await;
                                    in_room.signaling.close();
                                    return;
                                }
                            },
                            incoming = in_room.server_events.recv() => match incoming {
                                Some(SignalingEvent::Event { event, .. }) => self.server_event(in_room, event),
                                Some(SignalingEvent::Closed { .. }) | None => self.reconnect(in_room).await,
                            },
                        }
                    };
                    if let Next::Leave = next
                        && let Some(in_room) = room.take()
                    {
                        in_room.signaling.close();
                    }
                }
            }
        }
    }

    /// Handles a command while not in a room.
    async fn idle(&mut self, command: Command) -> Option<InRoom> {
        match command {
            Command::Login {
                room_id,
                token,
                user,
                config,
            } => {
                self.state(&room_id, RoomStateReason::Logining, None);
                match self.connect(&room_id, &token, &user, &config, None).await {
                    Ok((signaling, server_events, response)) => {
                        let mut in_room = InRoom {
                            room_id: room_id.clone(),
                            token,
                            user,
                            config,
                            signaling,
                            server_events,
                            session_id: response.session_id.clone(),
                            view: RoomView::default(),
                            publishing: HashMap::new(),
                            playing: HashMap::new(),
                        };
                        self.state(&room_id, RoomStateReason::Logined, None);
                        self.take_snapshot(&mut in_room, &response);
                        Some(in_room)
                    }
                    Err(error) => {
                        self.state(&room_id, RoomStateReason::LoginFailed, Some(error));
                        None
                    }
                }
            }
            other => {
                if let Some(event) = other.outside_a_room() {
                    self.emit(event);
                }
                None
            }
        }
    }

    fn spawn_publish(&self, in_room: &InRoom, stream_id: StreamId, local: LocalStream) -> MediaTask<LocalStream> {
        let (stop, stopped) = watch::channel(Stop::Run);
        tokio::spawn(publish::run(
            in_room.signaling.clone(),
            stream_id,
            local.clone(),
            self.media.clone(),
            self.events.clone(),
            stopped,
        ));
        MediaTask { what: local, stop }
    }

    fn spawn_play(&self, in_room: &InRoom, stream_id: StreamId, remote: RemoteStream) -> MediaTask<RemoteStream> {
        let (stop, stopped) = watch::channel(Stop::Run);
        tokio::spawn(play::run(
            in_room.signaling.clone(),
            stream_id,
            remote.clone(),
            self.media.clone(),
            self.events.clone(),
            stopped,
        ));
        MediaTask { what: remote, stop }
    }

    /// Starts media over again on a new signaling connection (after a reconnect).
    fn restart_media(&self, in_room: &mut InRoom) {
        let publishing: Vec<(StreamId, LocalStream)> = in_room
            .publishing
            .drain()
            .map(|(id, task)| {
                let _ = task.stop.send(Stop::Handover);
                (id, task.what.clone())
            })
            .collect();
        for (stream_id, local) in publishing {
            let task = self.spawn_publish(in_room, stream_id.clone(), local);
            in_room.publishing.insert(stream_id, task);
        }
        let playing: Vec<(StreamId, RemoteStream)> = in_room
            .playing
            .drain()
            .map(|(id, task)| {
                let _ = task.stop.send(Stop::Handover);
                (id, task.what.clone())
            })
            .collect();
        for (stream_id, remote) in playing {
            // A stream deleted while the connection was down is not played again.
            if !in_room.view.streams().any(|s| s.stream_id == stream_id) {
                remote.video.close();
                continue;
            }
            let task = self.spawn_play(in_room, stream_id.clone(), remote);
            in_room.playing.insert(stream_id, task);
        }
    }

    async fn connect(
        &self,
        room_id: &RoomId,
        token: &str,
        user: &UserInfo,
        config: &LoginConfig,
        resume: Option<String>,
    ) -> Result<(Signaling, mpsc::UnboundedReceiver<SignalingEvent>, LoginResponse), RoomError> {
        let (signaling, server_events) = Signaling::connect(&self.url).await?;
        let response = signaling
            .login(crate::signaling::login_request(room_id, token, user, config, resume))
            .await;
        match response {
            Ok(response) => Ok((signaling, server_events, response)),
            Err(err) => {
                signaling.close();
                Err(err.into())
            }
        }
    }

    /// Turns a login's snapshot into events: everything on a first login, only differences after a reconnect.
    fn take_snapshot(&self, in_room: &mut InRoom, response: &LoginResponse) {
        for event in in_room.view.snapshot_events(&in_room.room_id, response) {
            self.emit(event);
        }
    }

    async fn command(&mut self, in_room: &mut InRoom, command: Command) -> Next {
        match command {
            Command::Login { room_id, .. } => {
                self.emit(Command::already_in(room_id, &in_room.room_id));
                Next::Stay
            }
            Command::Logout => {
                match in_room.signaling.request(Request::Logout {}).await {
                    Ok(_) | Err(SignalingError::Closed) => {
                        self.state(&in_room.room_id, RoomStateReason::Logout, None);
                    }
                    Err(err) => {
                        self.state(&in_room.room_id, RoomStateReason::LogoutFailed, Some(err.into()));
                    }
                }
                Next::Leave
            }
            Command::RenewToken(token) => {
                match in_room
                    .signaling
                    .request(Request::RenewToken { token: token.clone() })
                    .await
                {
                    Ok(ResponseBody::TokenRenewed { expires_at }) => {
                        in_room.token = token;
                        self.emit(EngineEvent::TokenRenewed {
                            room_id: in_room.room_id.clone(),
                            expires_at,
                        });
                    }
                    Ok(other) => self.emit(EngineEvent::RequestFailed {
                        request: RequestKind::RenewToken,
                        error: RoomError::Protocol(format!("renewal answered with {other:?}")),
                    }),
                    Err(err) => self.emit(EngineEvent::RequestFailed {
                        request: RequestKind::RenewToken,
                        error: err.into(),
                    }),
                }
                Next::Stay
            }
            Command::SetPose(pose) => {
                if let Err(err) = in_room.signaling.request(Request::SetPose { pose }).await {
                    self.emit(EngineEvent::RequestFailed {
                        request: RequestKind::SetPose,
                        error: err.into(),
                    });
                }
                Next::Stay
            }
            Command::StartPublishing(stream_id, local) => {
                if in_room.publishing.get(&stream_id).is_some_and(MediaTask::is_running) {
                    self.emit(EngineEvent::PublisherStateUpdate {
                        stream_id,
                        state: PublisherState::Publishing,
                        error: Some(MediaError::Duplicate("publishing")),
                    });
                } else {
                    let task = self.spawn_publish(in_room, stream_id.clone(), local);
                    in_room.publishing.insert(stream_id, task);
                }
                Next::Stay
            }
            Command::StopPublishing(stream_id) => {
                if in_room.publishing.remove(&stream_id).is_some() {
                    let stop = Request::StopPublishing { stream_id };
                    if let Err(err) = in_room.signaling.request(stop).await {
                        tracing::debug!(%err, "stop publishing not confirmed");
                    }
                }
                Next::Stay
            }
            Command::StartPlaying(stream_id, remote) => {
                if in_room.playing.get(&stream_id).is_some_and(MediaTask::is_running) {
                    remote.video.close();
                    self.emit(EngineEvent::PlayerStateUpdate {
                        stream_id,
                        state: PlayerState::Playing,
                        error: Some(MediaError::Duplicate("playing")),
                    });
                } else {
                    let task = self.spawn_play(in_room, stream_id.clone(), remote);
                    in_room.playing.insert(stream_id, task);
                }
                Next::Stay
            }
            Command::StopPlaying(stream_id) => {
                if let Some(task) = in_room.playing.remove(&stream_id) {
                    task.what.video.close();
                    let stop = Request::StopPlaying { stream_id };
                    if let Err(err) = in_room.signaling.request(stop).await {
                        tracing::debug!(%err, "stop playing not confirmed");
                    }
                }
                Next::Stay
            }
        }
    }

    fn server_event(&self, in_room: &mut InRoom, event: Event) -> Next {
        match in_room.view.follow(event) {
            Followed::Report { event, kicked } => {
                if let Some(event) = event {
                    self.emit(event);
                }
                if kicked { Next::Leave } else { Next::Stay }
            }
            Followed::Contradicts => Next::Stay,
        }
    }

    /// The connection dropped: Reconnecting, then retries with growing pauses until it is
    /// back (Reconnected, with only the room's differences reported) or the policy gives up.
    async fn reconnect(&mut self, in_room: &mut InRoom) -> Next {
        self.state(&in_room.room_id, RoomStateReason::Reconnecting, None);
        let give_up = Instant::now() + self.policy.give_up_after;
        let mut delay = self.policy.first_delay;
        loop {
            let attempt = self
                .connect(
                    &in_room.room_id,
                    &in_room.token,
                    &in_room.user,
                    &in_room.config,
                    Some(in_room.session_id.clone()),
                )
                .await;
            let error = match attempt {
                Ok((signaling, server_events, response)) => {
                    in_room.signaling = signaling;
                    in_room.server_events = server_events;
                    in_room.session_id = response.session_id.clone();
                    self.state(&in_room.room_id, RoomStateReason::Reconnected, None);
                    self.take_snapshot(in_room, &response);
                    self.restart_media(in_room);
                    return Next::Stay;
                }
                Err(error) => error,
            };
            // A refusal (bad token, kicked, room full) will not change by retrying.
            let final_refusal = matches!(error, RoomError::Refused(_));
            if final_refusal || Instant::now() + delay > give_up {
                self.state(&in_room.room_id, RoomStateReason::ReconnectFailed, Some(error));
                in_room.view.clear();
                return Next::Leave;
            }
            tracing::debug!(%error, ?delay, "reconnect attempt failed");
            let pause = tokio::time::sleep(delay);
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    () = &mut pause => break,
                    command = self.commands.recv() => match command {
                        Some(Command::Logout) | None => {
                            self.state(&in_room.room_id, RoomStateReason::Logout, None);
                            in_room.view.clear();
                            return Next::Leave;
                        }
                        Some(other) => self.deferred.push(other),
                    },
                }
            }
            delay = (delay * 2).min(self.policy.max_delay);
        }
    }
}
