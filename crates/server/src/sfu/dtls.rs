//! The relay's DTLS, on OpenSSL.
//!
//! str0m's own DTLS (dimpl) asks clients for ECDSA certificates only, so a peer whose
//! certificate is RSA (GStreamer's webrtcbin, many gateways and WHIP encoders) never completes
//! its handshake. Here the handshake runs on OpenSSL (DTLS 1.2), which takes RSA and ECDSA
//! client certificates alike; the relay's own certificate stays ECDSA P-256, and SRTP, hashing
//! and STUN stay on str0m's default provider, so only the handshake changes.
//!
//! OpenSSL is driven through memory: datagrams in, datagrams out, no socket. Its
//! retransmission timer runs inside OpenSSL on the wall clock; while a handshake is under way
//! the instance asks to be woken every [`HANDSHAKE_TICK`] to let OpenSSL resend a lost flight.
//! The peer's certificate is handed to str0m, which checks it against the SDP fingerprint.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use openssl::pkey::PKey;
use openssl::ssl::{ErrorCode, Ssl, SslContext, SslMethod, SslOptions, SslStream, SslVerifyMode, SslVersion};
use openssl::x509::X509;
use str0m::crypto::dtls::{
    DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, KeyingMaterial, ProtocolVersion,
    SrtpProfile,
};
use str0m::crypto::{CryptoError, CryptoProvider};

/// Which DTLS implementation the relay's connections use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DtlsStack {
    /// OpenSSL: RSA and ECDSA peers.
    #[default]
    OpenSsl,
    /// str0m's built-in DTLS (dimpl): ECDSA peers only.
    Builtin,
}

impl DtlsStack {
    /// The crypto provider for str0m connections using this stack.
    pub fn provider(self) -> Arc<CryptoProvider> {
        static OPENSSL: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
        static BUILTIN: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
        match self {
            DtlsStack::Builtin => BUILTIN
                .get_or_init(|| Arc::new(str0m::crypto::from_feature_flags()))
                .clone(),
            DtlsStack::OpenSsl => OPENSSL
                .get_or_init(|| {
                    Arc::new(CryptoProvider {
                        dtls_provider: &OPENSSL_DTLS,
                        ..str0m::crypto::from_feature_flags()
                    })
                })
                .clone(),
        }
    }
}

/// How often a handshake in progress is woken so OpenSSL can resend a lost flight (its own
/// timer starts at 1 s and doubles).
const HANDSHAKE_TICK: Duration = Duration::from_millis(100);
/// The MTU used when str0m gives none.
const DEFAULT_MTU: usize = 1150;
/// Cipher suites, strongest first: the ECDSA ones for our own certificate (as a server), the RSA
/// ones too for a server with an RSA certificate (as a client).
const CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:\
                       ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256:\
                       ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305:\
                       ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES128-SHA";
/// The largest record str0m takes back (it polls with a buffer of this size).
const MAX_RECORD: usize = 2000;
/// SRTP profiles str0m's SRTP implements, preferred first.
const SRTP_PROFILES: &str = "SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80";
/// RFC 5764's exporter label for SRTP keys.
const SRTP_EXPORTER_LABEL: &str = "EXTRACTOR-dtls_srtp";

static OPENSSL_DTLS: OpenSslDtls = OpenSslDtls {
    context: Mutex::new(None),
};

/// A DTLS provider on OpenSSL; the context for the latest certificate is kept (the relay gives
/// every connection the same one).
#[derive(Debug)]
struct OpenSslDtls {
    context: Mutex<Option<(Vec<u8>, SslContext)>>,
}

fn crypto_error(what: &str, error: impl std::fmt::Display) -> CryptoError {
    CryptoError::Other(format!("OpenSSL DTLS: {what}: {error}"))
}

fn new_context(cert: &DtlsCert) -> Result<SslContext, CryptoError> {
    let mut builder = SslContext::builder(SslMethod::dtls()).map_err(|e| crypto_error("context", e))?;
    builder
        .set_min_proto_version(Some(SslVersion::DTLS1_2))
        .map_err(|e| crypto_error("version", e))?;
    let certificate = X509::from_der(&cert.certificate).map_err(|e| crypto_error("certificate", e))?;
    let key = PKey::private_key_from_pkcs8(&cert.private_key)
        .or_else(|_| PKey::private_key_from_der(&cert.private_key))
        .map_err(|e| crypto_error("private key", e))?;
    builder
        .set_certificate(&certificate)
        .map_err(|e| crypto_error("certificate", e))?;
    builder
        .set_private_key(&key)
        .map_err(|e| crypto_error("private key", e))?;
    builder.check_private_key().map_err(|e| crypto_error("key pair", e))?;
    builder
        .set_cipher_list(CIPHERS)
        .map_err(|e| crypto_error("ciphers", e))?;
    builder
        .set_tlsext_use_srtp(SRTP_PROFILES)
        .map_err(|e| crypto_error("SRTP profiles", e))?;
    // Self-signed certificates on both sides: any certificate passes here, str0m then
    // compares its fingerprint with the one in the SDP. A peer without one is refused.
    builder.set_verify_callback(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT, |_, _| true);
    builder.set_options(SslOptions::NO_QUERY_MTU | SslOptions::NO_TICKET);
    Ok(builder.build())
}

impl DtlsProvider for OpenSslDtls {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        // ECDSA P-256, as browsers expect; OpenSSL loads the same DER.
        str0m::crypto::from_feature_flags().dtls_provider.generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        _version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let context = {
            let mut cached = self.context.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            match &*cached {
                Some((der, context)) if *der == cert.certificate => context.clone(),
                _ => {
                    let context = new_context(cert)?;
                    *cached = Some((cert.certificate.clone(), context.clone()));
                    context
                }
            }
        };
        let mut ssl = Ssl::new(&context).map_err(|e| crypto_error("connection", e))?;
        let mtu = u32::try_from(mtu.unwrap_or(DEFAULT_MTU)).unwrap_or(u32::MAX);
        ssl.set_mtu(mtu).map_err(|e| crypto_error("MTU", e))?;
        Ok(Box::new(OpenSslInstance {
            state: State::Idle(Some(ssl)),
            active: false,
            events: VecDeque::new(),
            now,
            close_sent: false,
            close_reported: false,
        }))
    }
}

/// Datagrams between OpenSSL and str0m.
#[derive(Debug, Default)]
struct Datagrams {
    incoming: VecDeque<Vec<u8>>,
    outgoing: VecDeque<Vec<u8>>,
}

impl Read for Datagrams {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(datagram) = self.incoming.pop_front() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let n = datagram.len().min(buf.len());
        buf[..n].copy_from_slice(&datagram[..n]);
        Ok(n)
    }
}

impl Write for Datagrams {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outgoing.push_back(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Debug)]
enum State {
    /// Before str0m says which side this is.
    Idle(Option<Ssl>),
    Handshaking(SslStream<Datagrams>),
    Connected(SslStream<Datagrams>),
    /// Failed or closed: what is queued (a fatal alert, a close_notify) still goes out.
    Closed(SslStream<Datagrams>),
    /// Never started.
    Dead,
}

/// What is reported to str0m after the handshake.
#[derive(Debug)]
enum Report {
    PeerCert(Vec<u8>),
    Keys(Vec<u8>, SrtpProfile),
    Connected,
    Data(Vec<u8>),
    CloseNotify,
}

#[derive(Debug)]
struct OpenSslInstance {
    state: State,
    active: bool,
    events: VecDeque<Report>,
    /// The latest time str0m gave; timeouts are reckoned from it.
    now: Instant,
    /// A close_notify was queued (by us) or reported (from the peer).
    close_sent: bool,
    close_reported: bool,
}

fn handshake_failed(error: impl std::fmt::Display) -> DtlsImplError {
    tracing::warn!("DTLS handshake failed: {error}");
    DtlsImplError::ConnectionClosed
}

impl OpenSslInstance {
    fn stream(&mut self) -> Option<&mut SslStream<Datagrams>> {
        match &mut self.state {
            State::Handshaking(stream) | State::Connected(stream) | State::Closed(stream) => Some(stream),
            State::Idle(_) | State::Dead => None,
        }
    }

    /// Ends the connection, keeping what is queued to go out.
    fn fail(&mut self) {
        self.state = match std::mem::replace(&mut self.state, State::Dead) {
            State::Handshaking(stream) | State::Connected(stream) | State::Closed(stream) => State::Closed(stream),
            State::Idle(_) | State::Dead => State::Dead,
        };
    }

    /// Moves the handshake on, or reads what arrived after it.
    fn drive(&mut self) -> Result<(), DtlsImplError> {
        match &mut self.state {
            State::Handshaking(stream) => match stream.do_handshake() {
                Ok(()) => match connected(stream) {
                    Ok(reports) => {
                        self.events.extend(reports);
                        if let State::Handshaking(stream) = std::mem::replace(&mut self.state, State::Dead) {
                            self.state = State::Connected(stream);
                        }
                        self.read_data()
                    }
                    Err(e) => {
                        self.fail();
                        Err(e)
                    }
                },
                Err(e) if matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) => Ok(()),
                Err(e) => {
                    self.fail();
                    Err(handshake_failed(e))
                }
            },
            State::Connected(_) => self.read_data(),
            State::Idle(_) | State::Closed(_) | State::Dead => Ok(()),
        }
    }

    fn read_data(&mut self) -> Result<(), DtlsImplError> {
        let State::Connected(stream) = &mut self.state else {
            return Ok(());
        };
        let mut buf = vec![0u8; MAX_RECORD];
        loop {
            match stream.ssl_read(&mut buf) {
                Ok(n) => self.events.push_back(Report::Data(buf[..n].to_vec())),
                Err(e) if e.code() == ErrorCode::WANT_READ || e.code() == ErrorCode::WANT_WRITE => return Ok(()),
                Err(e) if e.code() == ErrorCode::ZERO_RETURN => {
                    // The peer closed: said once; our close_notify answers it.
                    if !self.close_reported {
                        self.close_reported = true;
                        self.events.push_back(Report::CloseNotify);
                    }
                    let _ = stream.shutdown();
                    self.close_sent = true;
                    self.fail();
                    return Ok(());
                }
                Err(e) => {
                    // A record that does not decrypt is dropped by OpenSSL; anything else ends
                    // the connection.
                    tracing::debug!("DTLS read failed: {e}");
                    self.fail();
                    return Err(DtlsImplError::ConnectionClosed);
                }
            }
        }
    }
}

/// What str0m needs once the handshake is done: the peer's certificate, the SRTP keys.
fn connected(stream: &SslStream<Datagrams>) -> Result<Vec<Report>, DtlsImplError> {
    let ssl = stream.ssl();
    let peer = ssl
        .peer_certificate()
        .ok_or_else(|| handshake_failed("the peer sent no certificate"))?
        .to_der()
        .map_err(handshake_failed)?;
    let profile = match ssl.selected_srtp_profile().map(|p| p.name()) {
        Some("SRTP_AEAD_AES_128_GCM") => SrtpProfile::AEAD_AES_128_GCM,
        Some("SRTP_AES128_CM_SHA1_80") => SrtpProfile::AES128_CM_SHA1_80,
        other => return Err(handshake_failed(format!("no usable SRTP profile ({other:?})"))),
    };
    let mut keys = vec![0u8; profile.keying_material_len()];
    ssl.export_keying_material(&mut keys, SRTP_EXPORTER_LABEL, None)
        .map_err(handshake_failed)?;
    Ok(vec![
        Report::PeerCert(peer),
        Report::Keys(keys, profile),
        Report::Connected,
    ])
}

/// Copies `data` into `buf`, or says how much room it needs.
fn fill<'a>(buf: &'a mut [u8], data: &[u8]) -> Result<&'a [u8], usize> {
    let target = buf.get_mut(..data.len()).ok_or(data.len())?;
    target.copy_from_slice(data);
    Ok(target)
}

impl DtlsInstance for OpenSslInstance {
    fn set_active(&mut self, active: bool) {
        self.active = active;
        if let State::Idle(ssl) = &mut self.state
            && let Some(mut ssl) = ssl.take()
        {
            if active {
                ssl.set_connect_state();
            } else {
                ssl.set_accept_state();
            }
            self.state = match SslStream::new(ssl, Datagrams::default()) {
                Ok(stream) => State::Handshaking(stream),
                Err(e) => {
                    tracing::warn!("DTLS could not start: {e}");
                    State::Dead
                }
            };
            if active {
                // The client speaks first.
                let _ = self.drive();
            }
        }
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        if matches!(self.state, State::Closed(_) | State::Dead) {
            return Err(DtlsImplError::ConnectionClosed);
        }
        // An empty packet only nudges the handshake (str0m starts a client that way): an
        // empty datagram would read as the end of the stream.
        if !packet.is_empty()
            && let Some(stream) = self.stream()
        {
            stream.get_mut().incoming.push_back(packet.to_vec());
        }
        self.drive()
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        if let Some(stream) = self.stream()
            && let Some(datagram) = stream.get_mut().outgoing.pop_front()
        {
            return match fill(buf, &datagram) {
                Ok(packet) => DtlsOutput::Packet(packet),
                Err(needed) => {
                    stream.get_mut().outgoing.push_front(datagram);
                    DtlsOutput::BufferTooSmall { needed }
                }
            };
        }
        if let Some(report) = self.events.pop_front() {
            let data = match &report {
                Report::PeerCert(data) | Report::Data(data) => data,
                Report::Keys(keys, profile) => return DtlsOutput::KeyingMaterial(KeyingMaterial::new(keys), *profile),
                Report::Connected => return DtlsOutput::Connected,
                Report::CloseNotify => return DtlsOutput::CloseNotify,
            };
            let Ok(len) = fill(buf, data).map(<[u8]>::len) else {
                let needed = data.len();
                self.events.push_front(report);
                return DtlsOutput::BufferTooSmall { needed };
            };
            let filled = &buf[..len];
            return match report {
                Report::PeerCert(_) => DtlsOutput::PeerCert(filled),
                _ => DtlsOutput::ApplicationData(filled),
            };
        }
        let wake = match self.state {
            State::Handshaking(_) => HANDSHAKE_TICK,
            _ => Duration::from_secs(3600),
        };
        DtlsOutput::Timeout(self.now + wake)
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.now = now;
        if matches!(self.state, State::Handshaking(_)) {
            // OpenSSL resends its last flight from here once its own timer has run out.
            self.drive()?;
        }
        Ok(())
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        let State::Connected(stream) = &mut self.state else {
            return Ok(0);
        };
        if data.is_empty() {
            return Ok(0);
        }
        match stream.ssl_write(data) {
            Ok(n) => Ok(n),
            Err(e) if e.code() == ErrorCode::WANT_WRITE || e.code() == ErrorCode::WANT_READ => Ok(0),
            Err(e) => {
                tracing::debug!("DTLS write failed: {e}");
                Err(DtlsImplError::ConnectionClosed)
            }
        }
    }

    fn is_active(&self) -> bool {
        self.active
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        matches!(self.state, State::Connected(_)).then_some(ProtocolVersion::DTLS1_2)
    }

    fn is_closing(&self) -> bool {
        self.close_sent && !self.is_closed()
    }

    fn is_closed(&self) -> bool {
        match &self.state {
            State::Closed(stream) => self.close_sent && stream.get_ref().outgoing.is_empty(),
            State::Dead => true,
            _ => false,
        }
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        if !self.close_sent
            && let Some(stream) = self.stream()
        {
            // Queues close_notify; polled out like any record.
            let _ = stream.shutdown();
        }
        self.close_sent = true;
        self.fail();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What one side reported while the two talked.
    #[derive(Debug, Default)]
    struct Seen {
        connected: bool,
        keys: Option<(Vec<u8>, SrtpProfile)>,
        peer_cert: bool,
        close_notify: usize,
    }

    /// Drains `from`'s output into `to` (and what `from` reported into `seen`).
    fn drain(from: &mut dyn DtlsInstance, to: &mut dyn DtlsInstance, seen: &mut Seen) {
        let mut buf = vec![0u8; MAX_RECORD];
        loop {
            match from.poll_output(&mut buf) {
                DtlsOutput::Packet(packet) => {
                    let packet = packet.to_vec();
                    let _ = to.handle_packet(&packet);
                }
                DtlsOutput::Connected => seen.connected = true,
                DtlsOutput::KeyingMaterial(keys, profile) => seen.keys = Some((keys.to_vec(), profile)),
                DtlsOutput::PeerCert(_) => seen.peer_cert = true,
                DtlsOutput::CloseNotify => seen.close_notify += 1,
                DtlsOutput::Timeout(_) => return,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    fn pump(client: &mut dyn DtlsInstance, server: &mut dyn DtlsInstance) -> (Seen, Seen) {
        let (mut seen_client, mut seen_server) = (Seen::default(), Seen::default());
        let now = Instant::now();
        for round in 0..20 {
            drain(client, server, &mut seen_client);
            drain(server, client, &mut seen_server);
            let _ = client.handle_timeout(now + HANDSHAKE_TICK * round);
            let _ = server.handle_timeout(now + HANDSHAKE_TICK * round);
        }
        (seen_client, seen_server)
    }

    fn instance(provider: &dyn DtlsProvider, active: bool) -> Box<dyn DtlsInstance> {
        let cert = provider.generate_certificate().expect("a certificate");
        let mut dtls = provider
            .new_dtls(&cert, Instant::now(), DtlsVersion::Dtls12, None)
            .expect("an instance");
        dtls.set_active(active);
        // str0m times an instance before feeding it (the built-in DTLS counts on that).
        dtls.handle_timeout(Instant::now()).expect("a first timeout");
        if active {
            // How str0m starts a client.
            dtls.handle_packet(&[]).expect("a client starts");
        }
        dtls
    }

    #[test]
    fn both_roles_agree_on_keys_with_either_dtls_on_the_other_side_and_close_cleanly() {
        let builtin = DtlsStack::Builtin.provider();
        for (what, client_openssl) in [
            ("OpenSSL client, built-in server", true),
            ("built-in client, OpenSSL server", false),
        ] {
            let (client_provider, server_provider): (&dyn DtlsProvider, &dyn DtlsProvider) = if client_openssl {
                (&OPENSSL_DTLS, builtin.dtls_provider)
            } else {
                (builtin.dtls_provider, &OPENSSL_DTLS)
            };
            let mut client = instance(client_provider, true);
            let mut server = instance(server_provider, false);
            let (seen_client, seen_server) = pump(client.as_mut(), server.as_mut());
            assert!(
                seen_client.connected && seen_server.connected,
                "{what}: {seen_client:?} {seen_server:?}"
            );
            assert!(
                seen_client.peer_cert && seen_server.peer_cert,
                "{what}: certificates exchanged"
            );
            let (client_keys, server_keys) = (seen_client.keys.expect("keys"), seen_server.keys.expect("keys"));
            assert_eq!(client_keys, server_keys, "{what}: one set of SRTP keys");
            assert_eq!(client_keys.0.len(), client_keys.1.keying_material_len());
        }

        // OpenSSL on both sides: a close is said once and ends both.
        let mut client = instance(&OPENSSL_DTLS, true);
        let mut server = instance(&OPENSSL_DTLS, false);
        let _ = pump(client.as_mut(), server.as_mut());
        client.close().expect("closes");
        assert!(client.is_closing(), "the close_notify is still to go out");
        let (_, seen_server) = pump(client.as_mut(), server.as_mut());
        assert_eq!(seen_server.close_notify, 1, "said once");
        assert!(client.is_closed() && server.is_closed());
        assert!(server.handle_packet(b"late").is_err(), "nothing more is taken");
    }
}
