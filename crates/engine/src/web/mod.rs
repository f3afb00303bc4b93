//! The browser backend: a thin driver on the page's event loop (`spawn_local`) that performs
//! what the room machine (`crate::machine`) asks, as the desktop driver does: signaling over
//! the browser's WebSocket, requests side by side, guest tokens over `fetch`, and one media
//! connection per publication or playback over its RTCPeerConnection (the browser captures,
//! encodes and decodes). Pictures reach the same latest-frame slots as on the desktop and
//! sound the same audio buffers, so the app above is the same code.

mod capture;
mod media;
mod signaling;
mod util;
mod worklet;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use futures_channel::mpsc;
use futures_util::StreamExt;
use wasm_bindgen::JsCast;
use web_time::Instant;

pub(crate) use capture::{Devices, pace};
use media::MediaSession;
pub(crate) use media::audio_context;
pub use signaling::Signaling;
pub(crate) use util::describe;
pub(crate) use worklet::MixOutput;

use crate::engine::{Command, EngineConfig, EngineError, EngineEvent, MediaError, SystemRequirements};
use crate::machine::{Action, ConnectionId, Input, MediaKey, MediaWork, RoomMachine};
use crate::signaling::SignalingError;
use crate::token::{GuestUrl, Obtain, TokenError};

/// The open signaling connections, shared with the tasks that open them.
type Connections = Rc<RefCell<HashMap<ConnectionId, Signaling>>>;

type Inputs = mpsc::UnboundedSender<Input>;

#[derive(Debug)]
pub(crate) struct Backend {
    inputs: Inputs,
}

impl Backend {
    pub fn start(config: EngineConfig, events: crossbeam_channel::Sender<EngineEvent>) -> Result<Backend, EngineError> {
        let (inputs, input_rx) = mpsc::unbounded();
        let driver = Driver {
            machine: RoomMachine::new(config.reconnect),
            url: config.server_url,
            events,
            inputs: inputs.clone(),
            connections: Connections::default(),
            media_tasks: HashMap::new(),
        };
        wasm_bindgen_futures::spawn_local(driver.run(input_rx));
        Ok(Backend { inputs })
    }

    pub fn send(&self, command: Command) {
        let _ = self.inputs.unbounded_send(Input::Command(command));
    }

    /// Creates a local stream (nothing here blocks: the browser opens its camera by itself).
    pub fn create_stream(
        &self,
        config: crate::stream::StreamConfig,
    ) -> crossbeam_channel::Receiver<Result<crate::stream::LocalStream, crate::stream::StreamError>> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let _ = tx.send(crate::stream::LocalStream::create(config));
        rx
    }

    /// Checks the browser (nothing here blocks: devices are asked for on use).
    pub fn check_system_requirements(&self) -> crossbeam_channel::Receiver<SystemRequirements> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let _ = tx.send(check_system_requirements());
        rx
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.inputs.unbounded_send(Input::Shutdown);
    }
}

/// How a media connection tells the machine that it came up or ended.
#[derive(Clone)]
pub(crate) struct MediaLink {
    pub key: MediaKey,
    pub generation: u64,
    inputs: Inputs,
}

impl MediaLink {
    pub fn up(&self) {
        let _ = self.inputs.unbounded_send(Input::MediaUp {
            key: self.key.clone(),
            generation: self.generation,
        });
    }

    pub fn ended(&self, error: Option<MediaError>) {
        let _ = self.inputs.unbounded_send(Input::MediaEnded {
            key: self.key.clone(),
            generation: self.generation,
            error,
        });
    }
}

struct Driver {
    machine: RoomMachine,
    url: String,
    events: crossbeam_channel::Sender<EngineEvent>,
    inputs: Inputs,
    connections: Connections,
    media_tasks: HashMap<(MediaKey, u64), Rc<MediaSession>>,
}

impl Driver {
    async fn run(mut self, mut inputs: mpsc::UnboundedReceiver<Input>) {
        loop {
            while let Some(action) = self.machine.poll_action() {
                self.perform(action);
            }
            if self.machine.is_finished() {
                break;
            }
            let input = match self.machine.poll_timeout() {
                Some(at) => {
                    let wait = Box::pin(util::sleep(at.saturating_duration_since(Instant::now())));
                    match futures_util::future::select(inputs.next(), wait).await {
                        futures_util::future::Either::Left((input, _)) => input,
                        futures_util::future::Either::Right(((), _)) => {
                            self.machine.handle_timeout(Instant::now());
                            continue;
                        }
                    }
                }
                None => inputs.next().await,
            };
            let Some(input) = input else { break };
            match &input {
                Input::MediaEnded { key, generation, .. } => {
                    self.media_tasks.remove(&(key.clone(), *generation));
                }
                Input::Closed { connection, .. } => {
                    self.connections.borrow_mut().remove(connection);
                }
                _ => {}
            }
            self.machine.handle(Instant::now(), input);
        }
        for (_, session) in self.media_tasks.drain() {
            session.close();
        }
        for (_, signaling) in self.connections.borrow_mut().drain() {
            signaling.close();
        }
    }

    fn input(&self, input: Input) {
        let _ = self.inputs.unbounded_send(input);
    }

    fn perform(&mut self, action: Action) {
        match action {
            Action::Emit(event) => {
                let _ = self.events.send(event);
            }
            Action::FetchToken { fetch, source, request } => match source.obtain(&request) {
                Obtain::Ready(result) => self.input(Input::Token { fetch, result }),
                Obtain::Ask(url) => {
                    let inputs = self.inputs.clone();
                    wasm_bindgen_futures::spawn_local(async move {
                        let result = ask_guest(&url).await;
                        let _ = inputs.unbounded_send(Input::Token { fetch, result });
                    });
                }
            },
            Action::Connect { connection, login } => {
                let (url, connections, inputs) = (self.url.clone(), self.connections.clone(), self.inputs.clone());
                wasm_bindgen_futures::spawn_local(open(url, connection, login, connections, inputs));
            }
            Action::Disconnect { connection } => {
                if let Some(signaling) = self.connections.borrow_mut().remove(&connection) {
                    signaling.close();
                }
            }
            Action::Send {
                connection,
                request,
                body,
            } => match self.connections.borrow().get(&connection).cloned() {
                Some(signaling) => {
                    let inputs = self.inputs.clone();
                    wasm_bindgen_futures::spawn_local(async move {
                        let result = signaling.request(body).await;
                        let _ = inputs.unbounded_send(Input::Response { request, result });
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
                let Some(signaling) = self.connections.borrow().get(&connection).cloned() else {
                    link.ended(Some(MediaError::Signaling(SignalingError::Closed)));
                    return;
                };
                let session = Rc::new(MediaSession::default());
                let events = self.events.clone();
                match work {
                    MediaWork::Publish(local) => {
                        wasm_bindgen_futures::spawn_local(media::publish(
                            signaling,
                            local,
                            events,
                            link,
                            session.clone(),
                        ));
                    }
                    MediaWork::Play(remote) => {
                        wasm_bindgen_futures::spawn_local(media::play(
                            signaling,
                            remote,
                            events,
                            link,
                            session.clone(),
                        ));
                    }
                }
                self.media_tasks.insert((key, generation), session);
            }
            Action::StopMedia { key, generation } => {
                if let Some(session) = self.media_tasks.remove(&(key, generation)) {
                    session.close();
                }
            }
        }
    }
}

/// Opens a signaling connection and logs in; on success adds the connection to the open
/// ones, says so, and then forwards its server events, in order, until it closes.
async fn open(
    url: String,
    connection: ConnectionId,
    login: holoroom_protocol::LoginRequest,
    connections: Connections,
    inputs: Inputs,
) {
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
            let _ = inputs.unbounded_send(Input::Connected {
                connection,
                result: Err(error.into()),
            });
            return;
        }
    };
    connections.borrow_mut().insert(connection, signaling);
    let _ = inputs.unbounded_send(Input::Connected {
        connection,
        result: Ok(Box::new(response)),
    });
    while let Some(event) = server_events.next().await {
        if inputs.unbounded_send(Input::from_signaling(connection, event)).is_err() {
            return;
        }
    }
}

/// Asks a dev server's guest endpoint for a token, with the page's `fetch`.
async fn ask_guest(url: &GuestUrl) -> Result<String, TokenError> {
    let unreachable = |reason: String| TokenError::Unreachable {
        url: url.full(),
        reason,
    };
    let window = util::window().ok_or_else(|| unreachable("no page".into()))?;
    let response: web_sys::Response = util::resolve(window.fetch_with_str(&url.full()))
        .await
        .map_err(unreachable)?
        .dyn_into()
        .map_err(|_| unreachable("not a response".into()))?;
    let text = response.text().map_err(|e| unreachable(describe(e)))?;
    let body = util::resolve(text)
        .await
        .map_err(unreachable)?
        .as_string()
        .unwrap_or_default();
    if !response.ok() {
        return Err(TokenError::Refused {
            url: url.full(),
            status: format!("{} {body}", response.status()),
        });
    }
    GuestUrl::token_from(&body)
}

/// Checks what this browser supports (the browser decodes; cameras are asked for on use).
pub fn check_system_requirements() -> SystemRequirements {
    let global = js_sys::global();
    let has = |name: &str| js_sys::Reflect::has(&global, &name.into()).unwrap_or(false);
    let media_devices = web_sys::window()
        .map(|w| w.navigator())
        .and_then(|n| n.media_devices().ok())
        .is_some();
    let need = |ok: bool, what: &str| {
        if ok {
            Ok(())
        } else {
            Err(format!("this browser has no {what}"))
        }
    };
    SystemRequirements {
        webrtc: need(has("RTCPeerConnection"), "WebRTC"),
        custom_capture: Err("custom frames are not published from a browser yet".into()),
        camera: need(media_devices, "camera access (getUserMedia needs https or localhost)"),
        microphone: need(
            media_devices,
            "microphone access (getUserMedia needs https or localhost)",
        ),
        screen_capture: Err("screen capture is not supported yet".into()),
        video_codecs: vec!["H264"],
        audio_codecs: vec!["opus"],
    }
}
