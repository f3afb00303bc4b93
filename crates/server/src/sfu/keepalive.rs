//! Keeping a media connection up while its peer is demonstrably there.
//!
//! The relay is ICE-lite (str0m), which ends a connection when no STUN binding *request* has
//! arrived for 15 s. Browsers send requests every few seconds, but libnice (GStreamer, many
//! gateways) keeps a path alive with binding *indications* every 25 s, and a sending peer
//! proves itself with every packet anyway. So, as Janus and Pion judge it, anything a
//! connection accepts from its peer (media, RTCP, DTLS, any STUN) counts: when the last
//! request is [`REFRESH`] old, the relay hands its connection a binding request of its own
//! making, signed with the connection's own ICE password, as the peer would have sent it. Only
//! silence ends a connection.

use std::time::{Duration, Instant};

use str0m::ice::{StunMessage, TransId};

/// How old the last binding request may grow while the peer is heard before one is made.
pub const REFRESH: Duration = Duration::from_secs(5);

/// One connection's ICE credentials and when it last had a binding request.
#[derive(Debug)]
pub(crate) struct Keepalive {
    /// The relay's side (from its answer): requests are addressed to and signed for it.
    local_ufrag: String,
    local_pwd: String,
    /// The peer's fragment (from its offer).
    remote_ufrag: String,
    last_request: Option<Instant>,
    /// Requests are made only for a connection that is up (ICE and DTLS done).
    connected: bool,
}

/// The first `a=<name>:` value in an SDP.
fn attribute<'a>(sdp: &'a str, name: &str) -> Option<&'a str> {
    sdp.lines()
        .find_map(|line| line.strip_prefix("a=")?.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// Whether a datagram is a STUN binding request (RFC 8489: type 0x0001 and the magic cookie).
fn is_binding_request(data: &[u8]) -> bool {
    data.len() >= 20 && data[..2] == [0x00, 0x01] && data[4..8] == [0x21, 0x12, 0xa4, 0x42]
}

impl Keepalive {
    /// From the peer's offer and the relay's answer; None when either lacks ICE credentials
    /// (str0m would not have accepted such an offer).
    pub fn new(offer: &str, answer: &str) -> Option<Keepalive> {
        Some(Keepalive {
            local_ufrag: attribute(answer, "ice-ufrag")?.to_owned(),
            local_pwd: attribute(answer, "ice-pwd")?.to_owned(),
            remote_ufrag: attribute(offer, "ice-ufrag")?.to_owned(),
            last_request: None,
            connected: false,
        })
    }

    pub fn connected(&mut self) {
        self.connected = true;
    }

    /// The peer sent `data`, which its connection accepts. Returns a binding request to hand
    /// the connection first, when one is due.
    pub fn heard(&mut self, now: Instant, data: &[u8]) -> Option<Vec<u8>> {
        if is_binding_request(data) {
            self.last_request = Some(now);
            return None;
        }
        let due = self
            .last_request
            .is_none_or(|last| now.saturating_duration_since(last) >= REFRESH);
        if !self.connected || !due {
            return None;
        }
        self.last_request = Some(now);
        self.request()
    }

    /// A binding request as the peer (ICE-controlling, nominating the path it uses) would send it.
    fn request(&self) -> Option<Vec<u8>> {
        let username = format!("{}:{}", self.local_ufrag, self.remote_ufrag);
        let message = StunMessage::binding_request(&username, TransId::new(), true, 0, 1, true);
        let mut buf = vec![0u8; 512];
        let hmac = str0m::crypto::from_feature_flags().sha1_hmac_provider;
        let len = message
            .to_bytes(Some(self.local_pwd.as_bytes()), &mut buf, |key, parts| {
                hmac.sha1_hmac(key, parts)
            })
            .ok()?;
        buf.truncate(len);
        Some(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\na=ice-ufrag:peer\r\na=ice-pwd:peerpasswordpeerpassword\r\n";
    const ANSWER: &str = "v=0\r\na=ice-ufrag:relay\r\na=ice-pwd:relaypasswordrelaypassword\r\n";

    #[test]
    fn a_request_is_made_only_when_the_last_is_old_and_the_connection_is_up() {
        let mut keepalive = Keepalive::new(OFFER, ANSWER).expect("credentials");
        let start = Instant::now();
        assert_eq!(keepalive.heard(start, &[0x80, 96, 0, 1]), None, "not connected yet");
        keepalive.connected();
        let request = keepalive
            .heard(start, &[0x80, 96, 0, 1])
            .expect("none seen yet: one is due");
        assert!(is_binding_request(&request));
        let parsed = StunMessage::parse(&request).expect("a STUN message");
        assert_eq!(parsed.username(), Some("relay:peer"));
        assert!(parsed.use_candidate());
        let hmac = str0m::crypto::from_feature_flags().sha1_hmac_provider;
        assert!(parsed.verify(b"relaypasswordrelaypassword", |k, p| hmac.sha1_hmac(k, p)));
        assert_eq!(
            keepalive.heard(start + Duration::from_secs(1), &[0x80]),
            None,
            "not due again yet"
        );
        // A real request resets the wait.
        let mut real = request.clone();
        real[8] ^= 1;
        assert_eq!(keepalive.heard(start + Duration::from_secs(4), &real), None);
        assert_eq!(keepalive.heard(start + Duration::from_secs(8), &[0x80]), None);
        assert!(keepalive.heard(start + Duration::from_secs(9), &[0x00, 0x11]).is_some());
    }

    #[test]
    fn offers_without_credentials_have_no_keepalive() {
        assert!(Keepalive::new("v=0\r\n", ANSWER).is_none());
        assert_eq!(attribute(ANSWER, "ice-pwd"), Some("relaypasswordrelaypassword"));
        assert_eq!(attribute("a=ice-ufrag-x:1\r\na=ice-ufrag:2", "ice-ufrag"), Some("2"));
    }

    /// A real connection: a str0m client (as a browser would be) publishes to the relay; once
    /// it is up the client goes quiet but for what `after` sends from its address, and the
    /// relay's time runs on for 40 s. Returns whether the relay still has the connection.
    fn survives(after: impl Fn(u64) -> Option<Vec<u8>>) -> bool {
        use std::net::SocketAddr;

        use str0m::change::SdpAnswer;
        use str0m::media::{Direction, MediaKind};
        use str0m::net::{Protocol, Receive};
        use str0m::{Candidate, Event, Input, Output, Rtc};

        use crate::sfu::{Sfu, SfuConfig};

        let relay: SocketAddr = ([127, 0, 0, 1], 7882).into();
        let client_addr: SocketAddr = ([127, 0, 0, 2], 5000).into();
        let start = Instant::now();
        let mut sfu = Sfu::new(SfuConfig {
            public_addr: relay,
            keyframe_interval: Duration::from_millis(500),
            connect_deadline: Duration::from_secs(15),
            dtls: Default::default(),
            probe: None,
        })
        .expect("relay");
        let mut client = Rtc::builder().build(start);
        client.add_local_candidate(Candidate::host(client_addr, "udp").expect("candidate"));
        let mut api = client.sdp_api();
        api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let (offer, pending) = api.apply().expect("an offer");
        let stream = crate::rooms::RoomStream::new(
            &holoroom_protocol::RoomId::new("r").expect("valid"),
            &holoroom_protocol::StreamId::new("cam").expect("valid"),
        );
        let (_, answer) = sfu
            .publish(start, &stream, "r/u", &offer.to_sdp_string())
            .expect("published");
        client
            .sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).expect("answer"))
            .expect("accepted");

        let mut now = start;
        let mut connected = false;
        while !connected || !sfu.peers.values().all(|p| p.rtc.is_connected()) {
            now += Duration::from_millis(5);
            assert!(now - start < Duration::from_secs(10), "the handshake completes");
            client.handle_input(Input::Timeout(now)).expect("timeout");
            sfu.handle_timeout(now);
            loop {
                match client.poll_output().expect("output") {
                    Output::Timeout(_) => break,
                    Output::Transmit(t) => sfu.handle_receive(now, client_addr, relay, &t.contents),
                    Output::Event(Event::Connected) => connected = true,
                    Output::Event(_) => {}
                }
            }
            while let Some(t) = sfu.poll_transmit() {
                let contents = t.contents.as_slice().try_into().expect("a datagram");
                let input = Input::Receive(
                    now,
                    Receive {
                        proto: Protocol::Udp,
                        source: relay,
                        destination: client_addr,
                        contents,
                    },
                );
                client.handle_input(input).expect("input");
            }
        }
        for tick in 0..400 {
            now += Duration::from_millis(100);
            if let Some(datagram) = after(tick) {
                sfu.handle_receive(now, client_addr, relay, &datagram);
            }
            sfu.handle_timeout(now);
            while sfu.poll_transmit().is_some() {}
        }
        !sfu.peers.is_empty()
    }

    /// A binding indication as libnice sends every 25 s (here every 2 s): a header, no attributes.
    fn indication() -> Vec<u8> {
        let mut packet = vec![0x00, 0x11, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        packet.extend_from_slice(b"keepalive-01");
        packet
    }

    #[test]
    fn a_peer_that_keeps_alive_with_indications_stays_and_a_silent_one_goes() {
        assert!(
            survives(|tick| (tick % 20 == 0).then(indication)),
            "indications every 2 s"
        );
        assert!(!survives(|_| None), "silence for 40 s ends the connection");
    }
}
