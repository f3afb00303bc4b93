//! The native backend: a thin driver on a tokio runtime of its own thread that performs what
//! the room machine (`crate::machine`) asks: signaling connections (`signaling.rs`), requests
//! side by side, token fetches, and one task per media connection (`publish.rs`, `play.rs`)
//! over a webrtc-rs peer connection to the server's SFU (`peer.rs`).

mod capture;
mod peer;
mod play;
mod publish;
mod signaling;

use std::collections::HashMap;
use std::thread::JoinHandle;

use holoroom_protocol::LoginResponse;
use holoroom_protocol::timing::FrameProbe;
use tokio::sync::{mpsc, oneshot};
use web_time::Instant;

pub(crate) use capture::{Devices, pace};
pub use signaling::Signaling;

use crate::engine::{Command, EngineConfig, EngineError, EngineEvent, SystemRequirements};
use crate::machine::{Action, ConnectionId, Input, MediaKey, MediaWork, RoomMachine};
use crate::media::AudioBuffer;
use crate::signaling::SignalingError;
use crate::token::{GuestUrl, Obtain, TokenError};

/// What reaches the driver: the machine's inputs, and connections that opened.
enum Wire {
    Machine(Input),
    /// A connection logged in; its server events follow on the same channel.
    Opened {
        connection: ConnectionId,
        signaling: Signaling,
        response: Box<LoginResponse>,
    },
}

type Inputs = mpsc::UnboundedSender<Wire>;

#[derive(Debug)]
pub(crate) struct Backend {
    inputs: Inputs,
    runtime: tokio::runtime::Handle,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    pub fn start(config: EngineConfig, events: crossbeam_channel::Sender<EngineEvent>) -> Result<Backend, EngineError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("holoroom-engine")
            .enable_all()
            .build()?;
        let (inputs, input_rx) = mpsc::unbounded_channel();
        let driver = Driver {
            machine: RoomMachine::new(config.reconnect),
            media: MediaEnv {
                bind: peer::bind_for(&config.server_url),
                probe: config.frame_probe,
            },
            url: config.server_url,
            events,
            inputs: inputs.clone(),
            connections: HashMap::new(),
            media_tasks: HashMap::new(),
        };
        let handle = runtime.handle().clone();
        let thread = std::thread::Builder::new()
            .name("holoroom-engine".into())
            .spawn(move || runtime.block_on(driver.run(input_rx)))?;
        Ok(Backend {
            inputs,
            runtime: handle,
            thread: Some(thread),
        })
    }

    /// Creates a local stream off the caller's thread (its devices can take seconds to open).
    pub fn create_stream(
        &self,
        config: crate::stream::StreamConfig,
    ) -> crossbeam_channel::Receiver<Result<crate::stream::LocalStream, crate::stream::StreamError>> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.runtime.spawn_blocking(move || {
            let _ = tx.send(crate::stream::LocalStream::create(config));
        });
        rx
    }

    /// Checks the system off the caller's thread (it opens devices, which can take seconds).
    pub fn check_system_requirements(&self) -> crossbeam_channel::Receiver<SystemRequirements> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.runtime.spawn_blocking(move || {
            let _ = tx.send(check_system_requirements());
        });
        rx
    }

    pub fn send(&self, command: Command) {
        // The driver runs until this backend is dropped, so the channel is open.
        let _ = self.inputs.send(Wire::Machine(Input::Command(command)));
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        // The machine logs out (briefly) and finishes; the driver then stops.
        let _ = self.inputs.send(Wire::Machine(Input::Shutdown));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What every media connection of this engine shares.
#[derive(Debug, Clone)]
pub(crate) struct MediaEnv {
    /// Where media connections bind their host candidates.
    pub bind: &'static str,
    /// Marks frames as they pass (benchmarks).
    pub probe: Option<FrameProbe>,
}

/// What a media connection's setup reports to, is stopped by and marks frames with.
pub(crate) struct TaskLink {
    pub events: crate::engine::EventSink,
    pub running: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub probe: Option<FrameProbe>,
}

/// How a media task tells the machine that it came up or ended.
#[derive(Clone)]
pub(crate) struct MediaLink {
    pub key: MediaKey,
    pub generation: u64,
    inputs: Inputs,
}

impl MediaLink {
    pub fn up(&self) {
        let _ = self.inputs.send(Wire::Machine(Input::MediaUp {
            key: self.key.clone(),
            generation: self.generation,
        }));
    }

    pub fn ended(&self, error: Option<crate::engine::MediaError>) {
        let _ = self.inputs.send(Wire::Machine(Input::MediaEnded {
            key: self.key.clone(),
            generation: self.generation,
            error,
        }));
    }
}

struct Driver {
    machine: RoomMachine,
    url: String,
    media: MediaEnv,
    events: crossbeam_channel::Sender<EngineEvent>,
    inputs: Inputs,
    connections: HashMap<ConnectionId, Signaling>,
    /// Running media tasks; dropping the sender stops one.
    media_tasks: HashMap<(MediaKey, u64), oneshot::Sender<()>>,
}

impl Driver {
    async fn run(mut self, mut inputs: mpsc::UnboundedReceiver<Wire>) {
        loop {
            while let Some(action) = self.machine.poll_action() {
                self.perform(action);
            }
            if self.machine.is_finished() {
                break;
            }
            let wire = match self.machine.poll_timeout() {
                Some(at) => tokio::select! {
                    wire = inputs.recv() => wire,
                    () = tokio::time::sleep_until(tokio::time::Instant::from_std(at)) => {
                        self.machine.handle_timeout(Instant::now());
                        continue;
                    }
                },
                None => inputs.recv().await,
            };
            let Some(wire) = wire else { break };
            let input = match wire {
                Wire::Machine(input) => input,
                Wire::Opened {
                    connection,
                    signaling,
                    response,
                } => {
                    self.connections.insert(connection, signaling);
                    Input::Connected {
                        connection,
                        result: Ok(response),
                    }
                }
            };
            match &input {
                Input::MediaEnded { key, generation, .. } => {
                    self.media_tasks.remove(&(key.clone(), *generation));
                }
                Input::Closed { connection, .. } => {
                    self.connections.remove(connection);
                }
                _ => {}
            }
            self.machine.handle(Instant::now(), input);
        }
        for (_, signaling) in self.connections.drain() {
            signaling.close();
        }
    }

    fn input(&self, input: Input) {
        let _ = self.inputs.send(Wire::Machine(input));
    }

    fn perform(&mut self, action: Action) {
        match action {
            Action::Emit(event) => {
                // The app may have dropped its receiver; events then have nobody to go to.
                let _ = self.events.send(event);
            }
            Action::FetchToken { fetch, source, request } => match source.obtain(&request) {
                Obtain::Ready(result) => self.input(Input::Token { fetch, result }),
                Obtain::Ask(url) => {
                    let inputs = self.inputs.clone();
                    tokio::spawn(async move {
                        let result = ask_guest(&url).await;
                        let _ = inputs.send(Wire::Machine(Input::Token { fetch, result }));
                    });
                }
            },
            Action::Connect { connection, login } => {
                let url = self.url.clone();
                let inputs = self.inputs.clone();
                tokio::spawn(open(url, connection, login, inputs));
            }
            Action::Disconnect { connection } => {
                if let Some(signaling) = self.connections.remove(&connection) {
                    signaling.close();
                }
            }
            Action::Send {
                connection,
                request,
                body,
            } => match self.connections.get(&connection) {
                Some(signaling) => {
                    let (signaling, inputs) = (signaling.clone(), self.inputs.clone());
                    tokio::spawn(async move {
                        let result = signaling.request(body).await;
                        let _ = inputs.send(Wire::Machine(Input::Response { request, result }));
                    });
                }
                None => self.input(Input::Response {
                    request,
                    result: Err(SignalingError::Closed),
                }),
            },
            Action::StartMedia {
                connection,
                key,
                generation,
                work,
            } => {
                let link = MediaLink {
                    key: key.clone(),
                    generation,
                    inputs: self.inputs.clone(),
                };
                let Some(signaling) = self.connections.get(&connection).cloned() else {
                    link.ended(Some(crate::engine::MediaError::Signaling(SignalingError::Closed)));
                    return;
                };
                let (stop_tx, stop) = oneshot::channel();
                let (env, events) = (self.media.clone(), self.events.clone());
                match work {
                    MediaWork::Publish(local) => {
                        tokio::spawn(publish::run(signaling, local, env, events, link, stop));
                    }
                    MediaWork::Play(remote) => {
                        tokio::spawn(play::run(signaling, remote, env, events, link, stop));
                    }
                }
                self.media_tasks.insert((key, generation), stop_tx);
            }
            Action::StopMedia { key, generation } => {
                self.media_tasks.remove(&(key, generation));
            }
        }
    }
}

/// Opens a signaling connection and logs in; on success hands the connection to the driver
/// and then forwards its server events, in order, until it closes.
async fn open(url: String, connection: ConnectionId, login: holoroom_protocol::LoginRequest, inputs: Inputs) {
    let opened = async {
        let (signaling, server_events) = Signaling::connect(&url).await?;
        match signaling.login(login).await {
            Ok(response) => Ok((signaling, server_events, response)),
            Err(err) => {
                signaling.close();
                Err(err)
            }
        }
    };
    let (signaling, mut server_events, response) = match opened.await {
        Ok(opened) => opened,
        Err(error) => {
            let _ = inputs.send(Wire::Machine(Input::Connected {
                connection,
                result: Err(error.into()),
            }));
            return;
        }
    };
    let _ = inputs.send(Wire::Opened {
        connection,
        signaling,
        response: Box::new(response),
    });
    while let Some(event) = server_events.recv().await {
        if inputs
            .send(Wire::Machine(Input::from_signaling(connection, event)))
            .is_err()
        {
            return;
        }
    }
}

/// Asks a dev server's guest endpoint for a token, over HTTP/1.0.
async fn ask_guest(url: &GuestUrl) -> Result<String, TokenError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let unreachable = |reason: String| TokenError::Unreachable {
        url: url.full(),
        reason,
    };
    if url.secure {
        return Err(unreachable(
            "the desktop client asks guest tokens over plain HTTP only; use a minted or fixed token".into(),
        ));
    }
    let exchange = async {
        let host = url.host.trim_start_matches('[').trim_end_matches(']');
        let mut socket = tokio::net::TcpStream::connect((host, url.port)).await?;
        let ask = format!(
            "GET {} HTTP/1.0\r\nHost: {}:{}\r\nConnection: close\r\n\r\n",
            url.path, url.host, url.port
        );
        socket.write_all(ask.as_bytes()).await?;
        let mut answer = Vec::new();
        socket.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(crate::signaling::REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| unreachable("no answer in time".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| TokenError::Unreadable("no HTTP body".into()))?;
    let status = head.lines().next().unwrap_or("").to_owned();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(TokenError::Refused {
            url: url.full(),
            status,
        });
    }
    GuestUrl::token_from(body)
}

/// Checks what this build and device support.
pub fn check_system_requirements() -> SystemRequirements {
    let present = |found: bool, what: &str, stand_in: &str| {
        if found {
            Ok(())
        } else {
            Err(format!("no {what} found; the engine sends {stand_in} instead"))
        }
    };
    let h264 = crate::codec::H264Encoder::new(crate::codec::EncoderSettings::for_size(320, 180, 15.0))
        .and_then(|_| crate::codec::H264Decoder::new())
        .is_ok();
    SystemRequirements {
        webrtc: Ok(()),
        custom_capture: Ok(()),
        camera: present(!crate::devices::cameras().is_empty(), "camera", "the test pattern"),
        // Listing is not enough (ALSA lists pseudo devices): the default microphone must open.
        microphone: crate::devices::Microphone::open(None, AudioBuffer::default())
            .map(drop)
            .map_err(|e| format!("{e}; the engine sends silence instead")),
        screen_capture: Err("screen capture is not supported yet".into()),
        video_codecs: if h264 { vec!["H264"] } else { Vec::new() },
        audio_codecs: vec!["opus"],
    }
}
