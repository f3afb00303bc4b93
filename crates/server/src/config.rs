//! What a server is told at start: keys, timings, limits.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::auth::TokenKeys;
use crate::http::AddressLimits;
use crate::rooms::Limits;

/// Everything a [`crate::Server`] needs besides its listener.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub keys: TokenKeys,
    /// The clock for token lifetimes and reconnect grace (tests move it forward).
    pub clock: crate::clock::Clock,
    /// Mint guest tokens at `GET /v1/dev/token` (for the embedded server and local trials).
    pub dev_tokens: bool,
    /// How long a dropped member stays listed before DELETE, so a reconnect does not flicker the room.
    pub reconnect_grace: Duration,
    /// Close sockets that have not logged in within this time.
    pub login_timeout: Duration,
    /// Close HTTP connections whose request headers have not all arrived within this time.
    pub header_timeout: Duration,
    /// Connections and failed logins allowed per remote address.
    pub per_address: AddressLimits,
    /// Send TokenWillExpire this long before a token expires.
    pub token_expiry_warning: Duration,
    /// Requests per second a connection may sustain, and the burst above it.
    pub rate_per_second: f64,
    pub rate_burst: f64,
    /// Allowed `Origin` headers for browser connections; empty allows any.
    pub allowed_origins: Vec<String>,
    pub limits: Limits,
    /// Events that may wait for one slow connection before it is closed.
    pub session_queue: usize,
    /// The SFU's UDP socket.
    pub media: MediaConfig,
    /// A directory of the browser app (`make web`) to serve at `/`.
    pub web_root: Option<std::path::PathBuf>,
}

/// Where media flows.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// The UDP address the SFU binds (one socket for every media connection).
    pub bind: SocketAddr,
    /// The address clients are told to send media to, when it differs from the bound one
    /// (needed when binding 0.0.0.0 or behind NAT).
    pub public_ip: Option<IpAddr>,
    /// Marks video frames passing the SFU (benchmarks); None normally.
    pub probe: Option<holoroom_protocol::timing::FrameProbe>,
    /// A media connection not up this long after its offer is closed; a publication's is
    /// unlisted and its publisher told (`publish_failed`).
    pub connect_deadline: Duration,
    /// The DTLS implementation of media connections (OpenSSL: peers with RSA and ECDSA
    /// certificates alike).
    pub dtls: crate::sfu::dtls::DtlsStack,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            public_ip: None,
            probe: None,
            connect_deadline: Duration::from_secs(15),
            dtls: crate::sfu::dtls::DtlsStack::default(),
        }
    }
}

impl ServerConfig {
    pub fn new(keys: TokenKeys) -> Self {
        Self {
            keys,
            clock: crate::clock::Clock::system(),
            dev_tokens: false,
            web_root: None,
            reconnect_grace: Duration::from_secs(10),
            login_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            per_address: AddressLimits::default(),
            token_expiry_warning: Duration::from_secs(30),
            rate_per_second: 50.0,
            rate_burst: 100.0,
            allowed_origins: Vec::new(),
            limits: Limits::default(),
            session_queue: 1024,
            media: MediaConfig::default(),
        }
    }
}
