//! Helpers for Holoroom's integration tests.
//!
//! - [`Relay`]: a TCP relay in front of a server whose connections can be cut or refused, as
//!   a flaky network or a vanished server would.
//! - [`UdpRelay`]: a UDP relay in front of a server that impairs each direction's datagrams with delay, jitter,
//!   random or bursty loss, a bandwidth cap and blackouts ([`Impairment`]), as a real network would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

mod impair;

pub use impair::{DEFAULT_QUEUE_BYTES, DirectionStats, GilbertElliott, Impairment, RelayStats, UdpRelay};

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
                    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
                    let cut = async {
                        while current.load(Ordering::SeqCst) == born {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    };
                    tokio::select! {
                        _ = copy => {},
                        () = cut => {},
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

impl Relay {
    /// The relay's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}
