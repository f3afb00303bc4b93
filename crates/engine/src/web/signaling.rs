//! Signaling in the browser: the page's WebSocket, requests matched to responses by ID,
//! events in order on a channel. The same JSON protocol as the desktop client.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use futures_channel::{mpsc, oneshot};
use holoroom_protocol::{ClientMessage, ErrorBody, LoginRequest, LoginResponse, Request, ResponseBody, ServerMessage};
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;
use web_sys::{CloseEvent, MessageEvent, WebSocket};

use super::util::sleep;
use crate::signaling::{REQUEST_TIMEOUT, SignalingError, SignalingEvent, logged_in};

type Pending = Rc<RefCell<HashMap<u64, oneshot::Sender<Result<ResponseBody, ErrorBody>>>>>;

/// A signaling connection. Cheap to clone; clones share the socket.
#[derive(Clone)]
pub struct Signaling {
    inner: Rc<Inner>,
}

impl std::fmt::Debug for Signaling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signaling")
            .field("url", &self.inner.socket.url())
            .finish()
    }
}

struct Inner {
    socket: WebSocket,
    next_id: Cell<u64>,
    pending: Pending,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.socket.set_onmessage(None);
        self.socket.set_onclose(None);
        let _ = self.socket.close();
    }
}

impl Signaling {
    /// Opens the WebSocket; events (and the close) arrive on the returned channel.
    pub async fn connect(url: &str) -> Result<(Signaling, mpsc::UnboundedReceiver<SignalingEvent>), SignalingError> {
        let connect_error = |reason: String| SignalingError::Connect {
            url: url.to_owned(),
            reason,
        };
        let socket = WebSocket::new(url).map_err(|e| connect_error(format!("{e:?}")))?;
        let (opened_tx, opened) = oneshot::channel::<Result<(), String>>();
        let opened_tx = Rc::new(RefCell::new(Some(opened_tx)));
        let on_open = {
            let opened_tx = opened_tx.clone();
            Closure::<dyn FnMut()>::new(move || {
                if let Some(tx) = opened_tx.borrow_mut().take() {
                    let _ = tx.send(Ok(()));
                }
            })
        };
        let on_error = {
            let opened_tx = opened_tx.clone();
            Closure::<dyn FnMut()>::new(move || {
                if let Some(tx) = opened_tx.borrow_mut().take() {
                    let _ = tx.send(Err("the connection failed".into()));
                }
            })
        };
        socket.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        socket.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        let result = futures_util::future::select(opened, Box::pin(sleep(REQUEST_TIMEOUT))).await;
        socket.set_onopen(None);
        socket.set_onerror(None);
        let failed = match result {
            futures_util::future::Either::Left((Ok(Ok(())), _)) => None,
            futures_util::future::Either::Left((Ok(Err(reason)), _)) => Some(reason),
            futures_util::future::Either::Left((Err(_), _)) => Some("cancelled".into()),
            futures_util::future::Either::Right(_) => Some("no answer".into()),
        };
        if let Some(reason) = failed {
            // It must not connect later, unattended.
            let _ = socket.close();
            return Err(connect_error(reason));
        }

        let (events_tx, events) = mpsc::unbounded();
        let pending: Pending = Rc::default();
        let on_message = {
            let pending = pending.clone();
            let events_tx = events_tx.clone();
            Closure::<dyn FnMut(MessageEvent)>::new(move |message: MessageEvent| {
                let Some(text) = message.data().as_string() else {
                    return;
                };
                match ServerMessage::parse(&text) {
                    Ok(ServerMessage::Response { id, result }) => {
                        if let Some(reply) = id.and_then(|id| pending.borrow_mut().remove(&id)) {
                            let _ = reply.send(result.into());
                        }
                    }
                    Ok(ServerMessage::Event { seq, event }) => {
                        let _ = events_tx.unbounded_send(SignalingEvent::Event { seq, event });
                    }
                    Err(err) => tracing::warn!(%err, "unreadable message from the room server"),
                }
            })
        };
        let on_close = {
            let pending = pending.clone();
            Closure::<dyn FnMut(CloseEvent)>::new(move |close: CloseEvent| {
                // Requests still waiting will not be answered.
                pending.borrow_mut().clear();
                let _ = events_tx.unbounded_send(SignalingEvent::Closed {
                    code: Some(close.code()),
                    reason: close.reason(),
                });
            })
        };
        socket.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        socket.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        let signaling = Signaling {
            inner: Rc::new(Inner {
                socket,
                next_id: Cell::new(1),
                pending,
                _on_message: on_message,
                _on_close: on_close,
            }),
        };
        Ok((signaling, events))
    }

    /// Sends a request and waits for its response.
    pub async fn request(&self, request: Request) -> Result<ResponseBody, SignalingError> {
        let id = self.inner.next_id.get();
        self.inner.next_id.set(id + 1);
        let (reply, response) = oneshot::channel();
        self.inner.pending.borrow_mut().insert(id, reply);
        let text = ClientMessage { id, request }.to_json();
        if self.inner.socket.send_with_str(&text).is_err() {
            self.inner.pending.borrow_mut().remove(&id);
            return Err(SignalingError::Closed);
        }
        match futures_util::future::select(response, Box::pin(sleep(REQUEST_TIMEOUT))).await {
            futures_util::future::Either::Left((Ok(result), _)) => result.map_err(SignalingError::Refused),
            futures_util::future::Either::Left((Err(_), _)) => Err(SignalingError::Closed),
            futures_util::future::Either::Right(_) => {
                self.inner.pending.borrow_mut().remove(&id);
                Err(SignalingError::Timeout(REQUEST_TIMEOUT))
            }
        }
    }

    /// Logs in (see `login_request`); the answer carries the room's snapshot.
    pub async fn login(&self, request: LoginRequest) -> Result<LoginResponse, SignalingError> {
        logged_in(self.request(Request::Login(request)).await?)
    }

    pub fn close(&self) {
        let _ = self.inner.socket.close();
    }
}
