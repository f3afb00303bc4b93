//! The HTTP side's connections: an accept loop that gives every request a deadline for its
//! headers, counts connections and failed logins per address, and at shutdown ends whatever is
//! still open after a hard deadline.
//!
//! Connections over an address's cap are still answered, once: a WebSocket upgrade is
//! accepted and closed at once with [`close_code::POLICY`] and the reason, so a client can
//! say why; anything beyond twice the cap is dropped unanswered.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use tower_service::Service;

#[cfg(doc)]
use holoroom_protocol::close_code;

/// How many connections, and failed logins, one address may have.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AddressLimits {
    /// Connections open at once (a WebSocket session keeps its connection's place).
    pub connections: usize,
    /// Failed logins (bad, expired or foreign tokens) per minute; the count refills evenly.
    pub login_failures_per_minute: u32,
}

impl Default for AddressLimits {
    fn default() -> Self {
        Self {
            connections: 64,
            login_failures_per_minute: 30,
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    /// Connections served normally.
    open: usize,
    /// Connections over the cap, open until they have been told so.
    refusing: usize,
}

/// A token bucket of failed logins.
#[derive(Debug, Clone, Copy)]
struct Failures {
    left: f64,
    at: Instant,
}

/// What the server counts per remote address.
#[derive(Debug)]
pub(crate) struct Addresses {
    limits: AddressLimits,
    counts: Mutex<HashMap<IpAddr, Counts>>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

/// Buckets kept before full ones (addresses that have not failed for a minute) are forgotten.
const FORGET_FAILURES_ABOVE: usize = 4096;

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Addresses {
    pub fn new(limits: AddressLimits) -> Arc<Addresses> {
        Arc::new(Addresses {
            limits,
            counts: Mutex::default(),
            failures: Mutex::default(),
        })
    }

    /// A place for a new connection from `ip`: served, refused (answered once and closed), or
    /// none at all when even the refusals are at the cap.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Place> {
        let mut counts = locked(&self.counts);
        let count = counts.entry(ip).or_default();
        let served = if count.open < self.limits.connections {
            count.open += 1;
            true
        } else if count.refusing < self.limits.connections {
            count.refusing += 1;
            false
        } else {
            return None;
        };
        Some(Place {
            addresses: self.clone(),
            ip,
            served,
        })
    }

    /// Whether `ip` may try another login (it has failed fewer than its limit lately).
    pub fn may_log_in(&self, ip: IpAddr) -> bool {
        let failures = locked(&self.failures);
        failures
            .get(&ip)
            .is_none_or(|f| self.refilled(*f, Instant::now()).left >= 1.0)
    }

    /// Counts a failed login from `ip`.
    pub fn login_failed(&self, ip: IpAddr) {
        let now = Instant::now();
        let full = Failures {
            left: f64::from(self.limits.login_failures_per_minute),
            at: now,
        };
        let mut failures = locked(&self.failures);
        if failures.len() >= FORGET_FAILURES_ABOVE {
            failures.retain(|_, f| self.refilled(*f, now).left < full.left);
        }
        let bucket = failures.entry(ip).or_insert(full);
        *bucket = self.refilled(*bucket, now);
        bucket.left = (bucket.left - 1.0).max(0.0);
    }

    fn refilled(&self, failures: Failures, now: Instant) -> Failures {
        let per_minute = f64::from(self.limits.login_failures_per_minute);
        let gained = now.duration_since(failures.at).as_secs_f64() * per_minute / 60.0;
        Failures {
            left: (failures.left + gained).min(per_minute),
            at: now,
        }
    }

    /// The cap, for the words of a refusal.
    pub fn connection_cap(&self) -> usize {
        self.limits.connections
    }
}

/// A connection's place in its address's count, given back when dropped (a WebSocket session
/// holds it after its HTTP connection has been handed over).
#[derive(Debug)]
pub(crate) struct Place {
    addresses: Arc<Addresses>,
    ip: IpAddr,
    served: bool,
}

impl Place {
    /// False for a connection over its address's cap.
    pub fn served(&self) -> bool {
        self.served
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut counts = locked(&self.addresses.counts);
        if let Some(count) = counts.get_mut(&self.ip) {
            if self.served {
                count.open = count.open.saturating_sub(1);
            } else {
                count.refusing = count.refusing.saturating_sub(1);
            }
            if count.open == 0 && count.refusing == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// What a request knows of its connection (an extension of every request).
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub addr: SocketAddr,
    pub place: Arc<Place>,
}

/// How connections are served.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Serving {
    /// A request's headers must arrive within this time of the connection's first byte being
    /// awaited (new and kept-alive connections alike).
    pub header_timeout: Duration,
}

/// Serves `router` on `listener` until `stop` turns true; then stops accepting, lets each
/// connection finish the answer it is writing, and aborts those still open when `hard_stop`
/// fires (or is dropped).
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    addresses: Arc<Addresses>,
    serving: Serving,
    mut stop: watch::Receiver<bool>,
    hard_stop: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    let (drain, draining) = watch::channel(false);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, addr)) => {
                    let Some(place) = addresses.admit(addr.ip()) else {
                        tracing::debug!(%addr, "too many connections from this address; dropped");
                        continue;
                    };
                    let _ = tcp.set_nodelay(true);
                    let peer = Peer { addr, place: Arc::new(place) };
                    connections.spawn(connection(tcp, peer, router.clone(), serving, draining.clone()));
                }
                Err(err) => {
                    // Out of descriptors, most likely: wait for some to close rather than spin.
                    tracing::warn!(%err, "can't accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = async { let _ = stop.wait_for(|&down| down).await; } => break,
        }
    }
    drop(listener);
    let _ = drain.send(true);
    let finish = async { while connections.join_next().await.is_some() {} };
    tokio::select! {
        () = finish => {}
        _ = hard_stop => {
            if !connections.is_empty() {
                tracing::warn!(open = connections.len(), "closing connections still open at the shutdown deadline");
            }
            connections.shutdown().await;
        }
    }
}

/// Serves one connection until it ends, or ends it gracefully once `draining`.
async fn connection(
    tcp: tokio::net::TcpStream,
    peer: Peer,
    router: Router,
    serving: Serving,
    mut draining: watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(peer.clone());
        router.clone().call(request)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(serving.header_timeout);
    let connection = builder.serve_connection(TokioIo::new(tcp), service).with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(err) = result {
                tracing::debug!(%err, "HTTP connection ended");
            }
        }
        () = async { let _ = draining.wait_for(|&down| down).await; } => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_over_its_cap_is_refused_then_dropped_and_places_come_back() {
        let addresses = Addresses::new(AddressLimits {
            connections: 2,
            login_failures_per_minute: 3,
        });
        let ip = IpAddr::from([10, 0, 0, 1]);
        let served: Vec<Place> = (0..2).filter_map(|_| addresses.admit(ip)).collect();
        assert!(served.iter().all(Place::served));
        let refused: Vec<Place> = (0..2).filter_map(|_| addresses.admit(ip)).collect();
        assert_eq!(refused.len(), 2);
        assert!(refused.iter().all(|p| !p.served()));
        assert!(
            addresses.admit(ip).is_none(),
            "beyond twice the cap nothing is answered"
        );
        let other = addresses.admit(IpAddr::from([10, 0, 0, 2])).expect("another address");
        assert!(other.served(), "other addresses are not affected");
        drop(served);
        assert!(
            addresses.admit(ip).is_some_and(|p| p.served()),
            "a closed connection's place is free again"
        );
        drop((refused, other));
        assert!(
            locked(&addresses.counts).is_empty(),
            "nothing is kept for addresses with nothing open"
        );
    }

    #[test]
    fn failed_logins_are_limited_per_address_and_refill() {
        let addresses = Addresses::new(AddressLimits {
            connections: 2,
            login_failures_per_minute: 3,
        });
        let ip = IpAddr::from([10, 0, 0, 1]);
        for _ in 0..3 {
            assert!(addresses.may_log_in(ip));
            addresses.login_failed(ip);
        }
        assert!(!addresses.may_log_in(ip), "three failures use up a minute's allowance");
        assert!(addresses.may_log_in(IpAddr::from([10, 0, 0, 2])));
        let mut failures = locked(&addresses.failures);
        let bucket = failures.get_mut(&ip).expect("a bucket");
        bucket.at = bucket
            .at
            .checked_sub(Duration::from_secs(20))
            .expect("an earlier instant");
        drop(failures);
        assert!(addresses.may_log_in(ip), "one failure's worth comes back after 20 s");
    }
}
