//! Helpers for Holoroom's integration tests.
//!
//! - [`Relay`]: a TCP relay in front of a server whose connections can be cut or refused, as
//!   a flaky network or a vanished server would, optionally holding every byte for a delay.
//! - [`UdpRelay`]: a UDP relay in front of a server that impairs each direction's datagrams with delay, jitter,
//!   random or bursty loss, a bandwidth cap and blackouts ([`Impairment`]), as a real network would.
//! - [`wait_for_event`]: waits on an event channel (blocking, with a deadline) instead of
//!   sleeping and polling; [`percentile`] of measurements.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

mod impair;
mod wait;

pub use impair::{DEFAULT_QUEUE_BYTES, DirectionStats, GilbertElliott, Impairment, RelayStats, UdpRelay};
pub use wait::{percentile, sorted, wait_for_event, wait_for_event_in_runtime};

/// A TCP relay between clients and the server whose connections can be cut, as a network would.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    generation: Arc<AtomicU64>,
    accept: JoinHandle<()>,
}

impl Relay {
    /// Listens on a free loopback port and relays each connection to `target`.
    pub async fn start(target: SocketAddr) -> Relay {
        Self::start_with_delay(target, Duration::ZERO).await
    }

    /// Like [`Relay::start`], with every byte held for `delay` in each direction (a long path
    /// for signaling).
    pub async fn start_with_delay(target: SocketAddr, delay: Duration) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay binds");
        let addr = listener.local_addr().expect("relay address");
        let generation = Arc::new(AtomicU64::new(0));
        let current = generation.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let Ok(mut upstream) = TcpStream::connect(target).await else {
                    continue;
                };
                let born = current.load(Ordering::SeqCst);
                let current = current.clone();
                tokio::spawn(async move {
                    let cut = async {
                        while current.load(Ordering::SeqCst) == born {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    };
                    if delay.is_zero() {
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {},
                            () = cut => {},
                        }
                    } else {
                        let (client_read, client_write) = client.split();
                        let (upstream_read, upstream_write) = upstream.split();
                        tokio::select! {
                            () = delayed_copy(client_read, upstream_write, delay) => {},
                            () = delayed_copy(upstream_read, client_write, delay) => {},
                            () = cut => {},
                        }
                    }
                });
            }
        });
        Relay {
            addr,
            generation,
            accept,
        }
    }

    /// The signaling URL through the relay.
    pub fn url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    /// Drops every open connection without a close frame.
    pub fn cut(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Stops accepting and drops every connection: the server is gone.
    pub fn stop(&self) {
        self.accept.abort();
        self.cut();
    }
}

/// Copies `from` to `to`, each chunk `delay` after it was read, in order.
async fn delayed_copy(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    delay: Duration,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (send, mut chunks) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let read = async move {
        let mut buffer = vec![0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buffer).await {
            if n == 0
                || send
                    .send((tokio::time::Instant::now() + delay, buffer[..n].to_vec()))
                    .is_err()
            {
                break;
            }
        }
    };
    let write = async move {
        while let Some((due, chunk)) = chunks.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}

impl Relay {
    /// The relay's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn a_delayed_relay_holds_each_direction_and_keeps_the_bytes() {
        let echo = TcpListener::bind("127.0.0.1:0").await.expect("echo binds");
        let target = echo.local_addr().expect("echo address");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = socket.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        let relay = Relay::start_with_delay(target, Duration::from_millis(40)).await;
        let mut client = TcpStream::connect(relay.addr()).await.expect("connects");
        let message: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        let sent = Instant::now();
        client.write_all(&message).await.expect("writes");
        let mut echoed = vec![0u8; message.len()];
        client.read_exact(&mut echoed).await.expect("reads the echo");
        assert!(sent.elapsed() >= Duration::from_millis(80), "{:?}", sent.elapsed());
        assert_eq!(echoed, message);
        relay.cut();
        let mut rest = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(2), client.read(&mut rest)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "a cut closes the connection");
    }
}
