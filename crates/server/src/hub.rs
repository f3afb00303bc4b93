//! The hub: the room core behind one lock, and the queues that carry its events to sessions.
//!
//! Every change is made and delivered under the lock, so all sessions see changes in one order.
//! Deliveries never wait: a session whose queue is full is closed as too slow and
//! handled like a dropped connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use holoroom_protocol::{ErrorBody, Event, KickoutReason};
use tokio::sync::{Notify, mpsc};

use crate::config::ServerConfig;
use crate::rooms::{Outputs, RoomStream, Rooms, SessionId, Snapshot};
use crate::sfu::socket::SfuHandle;

/// What the hub sends a session.
#[derive(Debug)]
pub(crate) enum ToSession {
    Event(Event),
    Kickout(KickoutReason),
}

/// The hub's end of one session.
#[derive(Debug)]
struct SessionLink {
    queue: mpsc::Sender<ToSession>,
    /// Woken when the session must close because its queue overflowed.
    overflow: Arc<Notify>,
}

#[derive(Debug)]
struct Inner {
    rooms: Rooms,
    links: HashMap<SessionId, SessionLink>,
    sfu: SfuHandle,
}

#[derive(Debug)]
pub(crate) struct Hub {
    inner: Mutex<Inner>,
    next_session: AtomicU64,
    /// Woken whenever a session unregisters (for graceful shutdown).
    pub(crate) session_gone: Notify,
    pub(crate) config: Arc<ServerConfig>,
}

/// A session's registration: its id and the receiving ends of its queues.
pub(crate) struct Registration {
    pub id: SessionId,
    pub queue: mpsc::Receiver<ToSession>,
    pub overflow: Arc<Notify>,
}

/// A locked hub. Operations go through [`HubGuard::apply`] so their outputs are delivered before the lock is released.
pub(crate) struct HubGuard<'a> {
    inner: MutexGuard<'a, Inner>,
}

impl HubGuard<'_> {
    pub fn rooms(&mut self) -> &mut Rooms {
        &mut self.inner.rooms
    }

    /// Delivers `outputs` to every session but `me`, and returns `me`'s share in order.
    pub fn deliver(&mut self, me: Option<SessionId>, outputs: Outputs) -> Vec<Event> {
        for stream in outputs.unpublished {
            self.inner.sfu.unpublish(stream);
        }
        let mut mine = Vec::new();
        let mut overflowed = Vec::new();
        for (session, event) in outputs.deliveries {
            if Some(session) == me {
                mine.push(event);
            } else if let Some(link) = self.inner.links.get(&session)
                && link.queue.try_send(ToSession::Event(event)).is_err()
            {
                overflowed.push(session);
            }
        }
        for (session, reason) in outputs.kicks {
            if Some(session) == me {
                continue;
            }
            if let Some(link) = self.inner.links.get(&session)
                && link.queue.try_send(ToSession::Kickout(reason)).is_err()
            {
                overflowed.push(session);
            }
        }
        for session in overflowed {
            tracing::warn!(session, "session cannot keep up with its events; closing it");
            if let Some(link) = self.inner.links.get(&session) {
                link.overflow.notify_one();
            }
            self.inner.rooms.disconnect(session);
        }
        mine
    }

    /// Runs a room operation and delivers what it caused to everyone, `me` too, through the
    /// sessions' queues: `me`'s share then keeps its place among what others caused (chat
    /// messages arrive in the room's order), rather than following the answer.
    pub fn apply_in_order<T>(
        &mut self,
        op: impl FnOnce(&mut Rooms) -> Result<(T, Outputs), ErrorBody>,
    ) -> Result<T, ErrorBody> {
        let (value, outputs) = op(&mut self.inner.rooms)?;
        self.deliver(None, outputs);
        Ok(value)
    }

    /// Runs a room operation and delivers what it caused; `me`'s events come back.
    pub fn apply<T>(
        &mut self,
        me: SessionId,
        op: impl FnOnce(&mut Rooms) -> Result<(T, Outputs), ErrorBody>,
    ) -> Result<(T, Vec<Event>), ErrorBody> {
        let (value, outputs) = op(&mut self.inner.rooms)?;
        let mine = self.deliver(Some(me), outputs);
        Ok((value, mine))
    }
}

impl Hub {
    pub fn new(config: Arc<ServerConfig>, sfu: SfuHandle) -> Self {
        Self {
            inner: Mutex::new(Inner {
                rooms: Rooms::new(config.limits.clone()),
                links: HashMap::new(),
                sfu,
            }),
            next_session: AtomicU64::new(1),
            session_gone: Notify::new(),
            config,
        }
    }

    pub fn lock(&self) -> HubGuard<'_> {
        // A panic while holding the lock cannot leave the rooms half-changed in a way later
        // operations trust less than a dead server, so a poisoned lock is taken over.
        HubGuard {
            inner: self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner()),
        }
    }

    pub fn register(&self) -> Registration {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.config.session_queue);
        let overflow = Arc::new(Notify::new());
        self.lock().inner.links.insert(
            id,
            SessionLink {
                queue: tx,
                overflow: overflow.clone(),
            },
        );
        Registration {
            id,
            queue: rx,
            overflow,
        }
    }

    /// The session's socket is gone: keep its member for the grace window, then remove it.
    pub fn unregister(self: &Arc<Self>, session: SessionId) {
        let was_member = {
            let mut hub = self.lock();
            hub.inner.links.remove(&session);
            hub.inner.sfu.drop_session(session);
            hub.inner.rooms.disconnect(session)
        };
        self.session_gone.notify_waiters();
        if !was_member {
            return;
        }
        let grace = self.config.reconnect_grace;
        let hub = Arc::clone(self);
        tokio::spawn(async move {
            hub.config.clock.sleep(grace).await;
            let mut guard = hub.lock();
            let outputs = guard.rooms().grace_expired(session);
            guard.deliver(None, outputs);
        });
    }

    pub fn session_count(&self) -> usize {
        self.lock().inner.links.len()
    }

    pub fn snapshot(&self) -> Snapshot {
        self.lock().inner.rooms.snapshot()
    }

    /// Tells the publisher of `stream` which of its video layers someone wants.
    pub fn tell_publisher(&self, stream: &RoomStream, layers: Vec<holoroom_protocol::VideoLayer>) {
        let mut hub = self.lock();
        let event = Event::VideoLayersWanted {
            stream_id: stream.stream.clone(),
            layers,
        };
        let outputs = hub.rooms().to_owner(stream, event);
        hub.deliver(None, outputs);
    }

    /// A publication's media connection never came up: its publisher is told why and the
    /// stream is unlisted.
    pub fn publish_failed(&self, stream: &RoomStream, message: String) {
        let mut hub = self.lock();
        let event = Event::PublishFailed {
            stream_id: stream.stream.clone(),
            message,
        };
        let told = hub.rooms().to_owner(stream, event);
        hub.deliver(None, told);
        let unlisted = hub.rooms().unlist(stream);
        hub.deliver(None, unlisted);
    }

    /// Tells each room who is speaking, from the streams' sound levels (when it changed).
    pub fn announce_speakers(&self, levels: &[(RoomStream, f32)]) {
        let mut hub = self.lock();
        let outputs = hub.rooms().active_speakers(levels);
        hub.deliver(None, outputs);
    }

    pub fn sfu(&self) -> SfuHandle {
        self.lock().inner.sfu.clone()
    }
}
