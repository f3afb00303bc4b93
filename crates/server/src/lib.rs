//! holoroom-server: the room server. Rooms, users, token auth and signaling over WebSocket.
//!
//! Code map:
//! - [`auth`]: HS256 tokens, minted and verified with rotating keys.
//! - [`rooms`]: the room core, plain data: members, streams, the events each change causes.
//! - `hub`: the core behind one lock plus a bounded event queue per session.
//! - `session`: one WebSocket connection: requests, responses, events with `seq`, timers.
//! - [`sfu`]: the media relay: a str0m state machine per media connection behind one UDP socket.
//! - [`Server`]: binds, serves HTTP (`/healthz`, the WebSocket at [`WS_PATH`], dev tokens), shuts down gracefully.
//!
//! IO is injected at the edge: [`Server::start`] takes a bound listener, so tests bind `127.0.0.1:0`.

pub mod auth;
pub mod clock;
pub mod config;
mod http;
mod hub;
pub mod rooms;
mod session;
pub mod sfu;
mod web;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Extension, Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use holoroom_protocol::{MAX_MESSAGE_BYTES, RoomId, StreamId, UserId, VideoGrant, VideoLayer, WS_PATH};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use auth::{SigningKey, TokenError, TokenKeys};
pub use clock::Clock;
pub use config::ServerConfig;
pub use http::AddressLimits;
pub use rooms::{Limits, Snapshot};

use crate::hub::Hub;

/// Why a server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("can't listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("can't start the media relay: {0}")]
    Media(#[from] sfu::SfuError),
    #[error("can't start the server's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("the server's thread ended before it listened")]
    Ended,
}

/// How long a graceful shutdown waits for sessions to close; connections still open then are
/// closed.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

#[derive(Clone)]
struct AppState {
    hub: Arc<Hub>,
    addresses: Arc<http::Addresses>,
    shutdown: watch::Receiver<bool>,
}

/// A running room server.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    hub: Arc<Hub>,
    shutdown: watch::Sender<bool>,
    hard_stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Server {
    /// Binds `addr` and starts serving.
    pub async fn bind(addr: &str, config: ServerConfig) -> Result<Server, ServerError> {
        let listener = TcpListener::bind(addr).await.map_err(|source| ServerError::Bind {
            addr: addr.to_owned(),
            source,
        })?;
        Self::start(listener, config)
    }

    /// Starts serving on a bound listener (must be called inside a tokio runtime).
    pub fn start(listener: TcpListener, config: ServerConfig) -> Result<Server, ServerError> {
        let addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: "listener".into(),
            source,
        })?;
        let media_bind = config.media.bind;
        let udp = std::net::UdpSocket::bind(media_bind)
            .and_then(|socket| {
                socket.set_nonblocking(true)?;
                tokio::net::UdpSocket::from_std(socket)
            })
            .map_err(|source| ServerError::Bind {
                addr: format!("udp {media_bind}"),
                source,
            })?;
        let (sfu, notices) = sfu::socket::SfuHandle::start(
            udp,
            config.media.public_ip,
            config.media.probe.clone(),
            config.media.connect_deadline,
            config.media.dtls,
        )?;
        tracing::info!(media = %sfu.media_addr(), "media relay listening");
        let hub = Arc::new(Hub::new(Arc::new(config), sfu));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let addresses = http::Addresses::new(hub.config.per_address);
        let state = AppState {
            hub: hub.clone(),
            addresses: addresses.clone(),
            shutdown: shutdown_rx.clone(),
        };
        let web_root = state.hub.config.web_root.clone();
        let mut router = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route(WS_PATH, get(websocket))
            .route("/v1/dev/token", get(dev_token))
            .with_state(state);
        if let Some(root) = web_root {
            router = router.fallback(get(move |uri: axum::http::Uri, headers: HeaderMap| {
                web::serve(root.clone(), uri, headers)
            }));
        }
        tokio::spawn(announce_speakers(hub.clone(), shutdown_rx.clone()));
        tokio::spawn(pass_notices(hub.clone(), notices));
        let serving = http::Serving {
            header_timeout: hub.config.header_timeout,
        };
        let (hard_stop, hard_stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(http::serve(
            listener,
            router,
            addresses,
            serving,
            shutdown_rx,
            hard_stopped,
        ));
        tracing::info!(%addr, "room server listening");
        Ok(Server {
            addr,
            hub,
            shutdown,
            hard_stop,
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The signaling WebSocket URL, e.g. `ws://127.0.0.1:7880/v1/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}{WS_PATH}", self.addr)
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The keys this server signs and verifies tokens with.
    pub fn keys(&self) -> &TokenKeys {
        &self.hub.config.keys
    }

    /// The clock this server times tokens and grace by.
    pub fn clock(&self) -> &Clock {
        &self.hub.config.clock
    }

    /// A picture of every room right now.
    pub fn snapshot(&self) -> Snapshot {
        self.hub.snapshot()
    }

    /// The address clients send media to.
    pub fn media_addr(&self) -> SocketAddr {
        self.hub.sfu().media_addr()
    }

    /// The media relay's counters.
    pub async fn media_counters(&self) -> Result<sfu::SfuCounters, sfu::SfuError> {
        self.hub.sfu().counters().await
    }

    /// The video layers (simulcast) the publisher of `stream` in `room` sends now, lowest first.
    pub async fn layers_sent(&self, room: &RoomId, stream: &StreamId) -> Result<Vec<VideoLayer>, sfu::SfuError> {
        self.hub.sfu().layers_sent(rooms::RoomStream::new(room, stream)).await
    }

    /// Open WebSocket connections.
    pub fn session_count(&self) -> usize {
        self.hub.session_count()
    }

    /// Stops listening, closes every session's socket with 1012 (service restart: clients come
    /// back on their own), waits up to 5 s for them, then closes whatever is still open, and
    /// the media relay's socket.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        let _ = self.shutdown.send(true);
        let deadline = tokio::time::Instant::now() + SHUTDOWN_WAIT;
        loop {
            let gone = self.hub.session_gone.notified();
            if self.hub.session_count() == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, gone).await.is_err() {
                tracing::warn!(
                    open = self.hub.session_count(),
                    "sessions still open after shutdown wait"
                );
                break;
            }
        }
        // HTTP answers being written (the app's download, say) get the rest of the wait.
        let mut task = self.task;
        match tokio::time::timeout_at(deadline, &mut task).await {
            Ok(joined) => joined?,
            Err(_) => {
                let _ = self.hard_stop.send(());
                task.await?;
            }
        }
        self.hub.sfu().stop().await;
        Ok(())
    }
}

/// A room server on a runtime and thread of its own, for an app that embeds one:
/// [`BackgroundServer::start`] returns once it listens; dropping it shuts it down (as
/// [`Server::shutdown`] does) and waits for its thread.
#[derive(Debug)]
pub struct BackgroundServer {
    ws_url: String,
    keys: TokenKeys,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BackgroundServer {
    /// Binds `addr` and serves on a thread of its own.
    pub fn start(addr: &str, config: ServerConfig) -> Result<BackgroundServer, ServerError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("room-server")
            .enable_all()
            .build()
            .map_err(ServerError::Runtime)?;
        let keys = config.keys.clone();
        let addr = addr.to_owned();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("room-server".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match Server::bind(&addr, config).await {
                        Ok(server) => {
                            let _ = ready_tx.send(Ok(server.ws_url()));
                            let _ = stopped.await;
                            if let Err(err) = server.shutdown().await {
                                tracing::warn!(%err, "the embedded server did not stop cleanly");
                            }
                        }
                        Err(err) => {
                            let _ = ready_tx.send(Err(err));
                        }
                    }
                });
            })
            .map_err(ServerError::Runtime)?;
        let ws_url = ready.recv().map_err(|_| ServerError::Ended)??;
        Ok(BackgroundServer {
            ws_url,
            keys,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The signaling WebSocket URL.
    pub fn ws_url(&self) -> &str {
        &self.ws_url
    }

    /// The keys the server signs and verifies tokens with.
    pub fn keys(&self) -> &TokenKeys {
        &self.keys
    }
}

impl Drop for BackgroundServer {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Passes what the SFU tells on to the sessions concerned, until the SFU stops.
async fn pass_notices(hub: Arc<Hub>, mut notices: tokio::sync::mpsc::UnboundedReceiver<sfu::Notice>) {
    while let Some(notice) = notices.recv().await {
        match notice {
            sfu::Notice::LayersWanted(stream_id, layers) => hub.tell_publisher(&stream_id, layers),
            sfu::Notice::PublishFailed(stream, peer, why) => {
                // Unless a new connection took the stream over meanwhile (a republish).
                if matches!(hub.sfu().publisher(stream.clone()).await, Ok(None)) {
                    hub.publish_failed(&stream, why);
                } else {
                    tracing::debug!(%stream, peer, "a failed connection was replaced; the stream stays");
                }
            }
        }
    }
}

/// How often rooms hear who is speaking (at most; only changes are sent).
const SPEAKERS_INTERVAL: Duration = Duration::from_millis(250);

/// Reads the streams' sound levels from the SFU a few times a second and tells each room its
/// active speakers, until shutdown.
async fn announce_speakers(hub: Arc<Hub>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(SPEAKERS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|&down| down) => return,
        }
        let Ok(levels) = hub.sfu().levels().await else { return };
        hub.announce_speakers(&levels);
    }
}

async fn websocket(
    State(state): State<AppState>,
    Extension(peer): Extension<http::Peer>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !peer.place.served() {
        let cap = state.addresses.connection_cap();
        tracing::debug!(addr = %peer.addr, cap, "too many connections from one address; refused");
        return upgrade.on_upgrade(move |socket| session::refuse(socket, cap));
    }
    let allowed = &state.hub.config.allowed_origins;
    if let Some(origin) = headers.get(header::ORIGIN)
        && !allowed.is_empty()
        && !allowed.iter().any(|a| origin.as_bytes() == a.as_bytes())
    {
        return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }
    if *state.shutdown.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "server shutting down").into_response();
    }
    upgrade
        // Frames up to 1 MiB are read so that oversize messages get a 1009 close with a reason;
        // anything larger fails the socket outright.
        .max_message_size(16 * MAX_MESSAGE_BYTES)
        .max_frame_size(16 * MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| session::run(socket, peer, state.addresses, state.hub, state.shutdown))
}

#[derive(Deserialize)]
struct DevTokenQuery {
    room: String,
    user: Option<String>,
    name: Option<String>,
    #[serde(default)]
    spectator: bool,
    ttl: Option<u64>,
}

#[derive(Serialize)]
struct DevToken {
    token: String,
    room_id: RoomId,
    user_id: UserId,
}

/// Mints a guest token; only in dev mode.
async fn dev_token(State(state): State<AppState>, Query(query): Query<DevTokenQuery>) -> Response {
    if !state.hub.config.dev_tokens {
        return (StatusCode::NOT_FOUND, "dev tokens are off; start the server with --dev").into_response();
    }
    let room_id = match RoomId::new(query.room) {
        Ok(id) => id,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let user_id = match query.user.map(UserId::new).transpose() {
        Ok(Some(id)) => id,
        Ok(None) => auth::guest_user_id(),
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    if let Some(name) = &query.name
        && let Err(why) = holoroom_protocol::validate_user_name(name)
    {
        return (StatusCode::BAD_REQUEST, why).into_response();
    }
    let grant = if query.spectator {
        VideoGrant::spectator(room_id.as_str())
    } else {
        VideoGrant::participant(room_id.as_str())
    };
    let ttl = query.ttl.unwrap_or(3600).clamp(1, 86_400);
    let now = state.hub.config.clock.unix_now();
    let token = state.hub.config.keys.mint_at(now, grant, &user_id, query.name, ttl);
    axum::Json(DevToken {
        token,
        room_id,
        user_id,
    })
    .into_response()
}
