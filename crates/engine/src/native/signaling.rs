//! The native signaling connection: tokio + tungstenite.
//!
//! A [`Signaling`] handle sends requests and awaits their responses; server events arrive,
//! in order, on the receiver returned by [`Signaling::connect`]. A driver task owns the socket.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::{SinkExt, StreamExt};
use holoroom_protocol::{ClientMessage, ErrorBody, LoginRequest, LoginResponse, Request, ResponseBody, ServerMessage};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::signaling::{REQUEST_TIMEOUT, SignalingError, SignalingEvent, logged_in};

type Pending = HashMap<u64, oneshot::Sender<Result<ResponseBody, ErrorBody>>>;

enum Command {
    Request {
        message: ClientMessage,
        reply: oneshot::Sender<Result<ResponseBody, ErrorBody>>,
    },
    Close,
}

/// A live signaling connection. Cheap to clone; the socket closes when the last clone is dropped or on [`Signaling::close`].
#[derive(Debug, Clone)]
pub struct Signaling {
    commands: mpsc::UnboundedSender<Command>,
    next_id: Arc<AtomicU64>,
}

impl Signaling {
    /// Opens the WebSocket at `url` (e.g. `ws://127.0.0.1:7880/v1/ws`).
    /// A server that does not answer (packets dropped on the way) fails after
    /// [`REQUEST_TIMEOUT`], as in a browser, rather than after the system's TCP timeout.
    pub async fn connect(url: &str) -> Result<(Signaling, mpsc::UnboundedReceiver<SignalingEvent>), SignalingError> {
        let failed = |reason: String| SignalingError::Connect {
            url: url.to_owned(),
            reason,
        };
        let (socket, _) = tokio::time::timeout(REQUEST_TIMEOUT, tokio_tungstenite::connect_async(url))
            .await
            .map_err(|_| failed(format!("no answer within {REQUEST_TIMEOUT:?}")))?
            .map_err(|e| failed(e.to_string()))?;
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (events, event_rx) = mpsc::unbounded_channel();
        tokio::spawn(drive(socket, command_rx, events));
        Ok((
            Signaling {
                commands,
                next_id: Arc::new(AtomicU64::new(1)),
            },
            event_rx,
        ))
    }

    /// Sends `request` and waits for its response.
    pub async fn request(&self, request: Request) -> Result<ResponseBody, SignalingError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, response) = oneshot::channel();
        self.commands
            .send(Command::Request {
                message: ClientMessage { id, request },
                reply,
            })
            .map_err(|_| SignalingError::Closed)?;
        match tokio::time::timeout(REQUEST_TIMEOUT, response).await {
            Err(_) => Err(SignalingError::Timeout(REQUEST_TIMEOUT)),
            Ok(Err(_)) => Err(SignalingError::Closed),
            Ok(Ok(result)) => result.map_err(SignalingError::Refused),
        }
    }

    /// Logs into `room_id` with `token` as `user`.
    /// Logs in (see `login_request`); the answer carries the room's snapshot.
    pub async fn login(&self, request: LoginRequest) -> Result<LoginResponse, SignalingError> {
        logged_in(self.request(Request::Login(request)).await?)
    }

    /// Closes the socket politely.
    pub fn close(&self) {
        let _ = self.commands.send(Command::Close);
    }
}

async fn drive<S>(
    socket: tokio_tungstenite::WebSocketStream<S>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<SignalingEvent>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = socket.split();
    let mut pending: Pending = HashMap::new();
    let closed = loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Request { message, reply }) => {
                    pending.insert(message.id, reply);
                    if sink.send(Message::Text(message.to_json().into())).await.is_err() {
                        break SignalingEvent::Closed { code: None, reason: "send failed".into() };
                    }
                }
                Some(Command::Close) | None => {
                    let _ = sink.send(Message::Close(None)).await;
                    break SignalingEvent::Closed { code: None, reason: "closed by this client".into() };
                }
            },
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(text))) => match ServerMessage::parse(&text) {
                    Ok(ServerMessage::Response { id, result }) => {
                        if let Some(reply) = id.and_then(|id| pending.remove(&id)) {
                            let _ = reply.send(result.into());
                        } else {
                            tracing::warn!(?id, ?result, "response to no pending request");
                        }
                    }
                    Ok(ServerMessage::Event { seq, event }) => {
                        let _ = events.send(SignalingEvent::Event { seq, event });
                    }
                    Err(err) => tracing::warn!(%err, "unreadable message from the room server"),
                },
                Some(Ok(Message::Close(frame))) => {
                    break SignalingEvent::Closed {
                        code: frame.as_ref().map(|f| u16::from(f.code)),
                        reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                    };
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => break SignalingEvent::Closed { code: None, reason: err.to_string() },
                None => break SignalingEvent::Closed { code: Some(u16::from(CloseCode::Abnormal)), reason: "connection lost".into() },
            },
        }
    };
    let _ = events.send(closed);
}
