//! The SFU core: one str0m `Rtc` per media connection, fed (time, input) and drained of outputs.
//!
//! A publisher's connection receives a stream's video, in up to three simulcast layers, and
//! its audio; each subscriber of that stream has its own connection. Every audio packet is
//! forwarded to each subscriber; of the video, each subscriber gets the one layer it asked for
//! within what its downlink carries, or none while paused (see [`layers`]). Packets go out
//! unchanged in payload, with the subscriber's own SSRC, a sequence number space that starts
//! low and never jumps, and timestamps that run on across layer switches (RTP mode). Media is
//! never decoded here. A new subscriber, a subscriber's PLI or a layer switch asks the
//! publisher for a keyframe of that layer (PLI); while one is on its way (asked for, not yet
//! seen passing through, for at most [`SfuConfig::keyframe_interval`]) further requests share
//! it instead of asking again.
//!
//! Each subscriber's downlink is judged from its receiver reports (loss, a growing round trip)
//! by `holoroom_protocol::congestion::CongestionCap`, which caps its layer. Publishers are told
//! which layers someone receives (dynacast).
//!
//! This module touches no socket and no clock: the shell in `socket.rs` passes in datagrams
//! and the time, and sends out what [`Sfu::poll_transmit`] returns.

pub mod dtls;
mod keepalive;
pub mod layers;
pub mod offer;
pub mod socket;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use holoroom_protocol::VideoLayer;
use holoroom_protocol::timing::{FrameProbe, FrameStage, rtp_capture_time};
use str0m::change::SdpOffer;
use str0m::format::PayloadParams;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, SeqNo};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};

use crate::rooms::{RoomStream, SessionId};
use holoroom_protocol::congestion::CongestionCap;
use layers::{LayerIn, PacketIn, Verdict, VideoOut};

/// Whether an H.264 RTP payload begins a keyframe: an IDR slice or a parameter set, whole,
/// aggregated (STAP-A, any unit) or as the first fragment (FU-A). Only NAL headers are read.
pub fn starts_keyframe(payload: &[u8]) -> bool {
    let is_key = |nal_type: u8| matches!(nal_type, 5 | 7);
    match payload.first().map(|b| b & 0x1f) {
        Some(24) => {
            let mut rest = &payload[1..];
            while let [hi, lo, units @ ..] = rest {
                let size = usize::from(u16::from_be_bytes([*hi, *lo]));
                if units.first().is_some_and(|b| is_key(b & 0x1f)) {
                    return true;
                }
                rest = units.get(size..).unwrap_or_default();
            }
            false
        }
        Some(28) => payload.get(1).is_some_and(|b| b & 0x80 != 0 && is_key(b & 0x1f)),
        Some(nal_type) => is_key(nal_type),
        None => false,
    }
}

/// Identifies one media connection inside the SFU.
pub type PeerId = u64;

/// First outgoing sequence number of a subscriber track: low, so SRTP's rollover counter starts at 0.
const FIRST_OUT_SEQ: u64 = 1000;

/// Why the SFU refused a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SfuError {
    #[error("the SDP offer is not readable: {0}")]
    BadOffer(String),
    #[error("the SDP offer cannot be answered: {0}")]
    Rejected(String),
    #[error("stream {0} has no media here yet")]
    NoPublisher(RoomStream),
    #[error("stream {0} is published by someone else")]
    OwnedByOther(RoomStream),
    #[error("the media address {0} cannot be advertised: {1}")]
    BadAddress(SocketAddr, String),
    #[error("the SFU is not running")]
    Stopped,
}

/// Video packets kept per subscriber for resends (NACK/RTX): about two seconds at 1.5 Mbit/s.
const RTX_HISTORY_PACKETS: usize = 400;
/// How old a packet may be and still be resent: past that, a keyframe request serves better.
const RTX_HISTORY_AGE: Duration = Duration::from_millis(1000);

/// How the SFU runs.
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// The address clients send media to (the host candidate in every answer).
    pub public_addr: SocketAddr,
    /// How long a requested keyframe is waited for before asking again.
    pub keyframe_interval: Duration,
    /// Marks video frames (by the capture time they carry) as they come in and go out; for
    /// measuring, None normally.
    pub probe: Option<FrameProbe>,
    /// A media connection not up (ICE and DTLS) this long after its offer is closed.
    pub connect_deadline: Duration,
    /// The DTLS implementation of every connection (OpenSSL: RSA and ECDSA peers).
    pub dtls: dtls::DtlsStack,
}

/// A datagram to send.
#[derive(Debug, Clone)]
pub struct Transmit {
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

/// Counters for benchmarks and operators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SfuCounters {
    pub packets_in: u64,
    pub packets_forwarded: u64,
    pub keyframe_requests: u64,
    /// Video layer changes at subscribers (switches, pauses and resumes).
    pub layer_switches: u64,
    pub publishers: usize,
    pub subscribers: usize,
    /// Remote addresses the relay knows media to come from (learnt only from datagrams that a
    /// media connection accepts).
    pub sources: usize,
}

#[derive(Debug)]
struct Publisher {
    stream: RoomStream,
    /// Who publishes it (the room and user): only they may replace its connection.
    owner: String,
    /// Per video layer: when a keyframe was asked for that has not passed through yet.
    keyframe_requested: [Option<Instant>; 3],
    /// Per video layer: when it was last heard.
    layers: [LayerIn; 3],
    /// The sound's level (0..1), smoothed over about a quarter of a second, and when it was
    /// last heard.
    level: f32,
    last_audio: Option<Instant>,
    /// The layers the publisher was last told someone wants (it starts sending all), and since
    /// when nobody wanted each.
    announced: [bool; 3],
    unwanted_since: [Option<Instant>; 3],
}

/// What the SFU tells signaling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The layers of a stream that its subscribers receive or are about to, lowest first:
    /// the publisher need not encode the others.
    LayersWanted(RoomStream, Vec<VideoLayer>),
    /// A publisher's media connection closed without ever coming up, and why.
    PublishFailed(RoomStream, PeerId, String),
}

/// How long nobody must want a layer before its publisher is told to stop sending it.
const DYNACAST_HOLD: Duration = Duration::from_secs(2);
/// How often the layers wanted are looked at between changes.
const DYNACAST_EVERY: Duration = Duration::from_millis(250);

/// Rewriting state of one forwarded track for one subscriber.
#[derive(Debug)]
struct TrackOut {
    /// The subscriber's m-line for this track.
    mid: Mid,
    /// The publisher's payload type and the subscriber's for the same codec, found once.
    pt: Option<(Pt, Pt)>,
    /// The publisher's extended sequence number that maps to `base_out`.
    base_in: Option<u64>,
    base_out: u64,
    /// Highest sequence number written so far.
    last_out: u64,
}

#[derive(Debug)]
struct Subscriber {
    stream: RoomStream,
    session: SessionId,
    tracks: HashMap<MediaKind, TrackOut>,
    video: VideoOut,
    /// What the receiver reports say of the downlink, and the layer it allows.
    downlink: CongestionCap,
}

#[derive(Debug)]
enum Role {
    Publisher(Publisher),
    Subscriber(Subscriber),
}

impl Role {
    /// The stream a connection publishes or plays.
    fn stream(&self) -> &RoomStream {
        match self {
            Role::Publisher(p) => &p.stream,
            Role::Subscriber(s) => &s.stream,
        }
    }
}

#[derive(Debug)]
struct Peer {
    rtc: Rtc,
    role: Role,
    /// Each m-line's kind, from MediaAdded.
    kinds: HashMap<Mid, MediaKind>,
    timeout: Instant,
    keepalive: Option<keepalive::Keepalive>,
    /// When the offer was answered, and whether the connection has come up since.
    created: Instant,
    connected: bool,
    /// Why it failed, when it did.
    failure: Option<String>,
}

/// Work that one peer's output causes on others.
enum Work {
    Forward(PeerId, Box<RtpPacket>),
    /// A keyframe of a stream's layer (None: of the layers its subscribers receive or wait for).
    KeyframeFor(RoomStream, Option<usize>),
}

/// The SFU state machine.
#[derive(Debug)]
pub struct Sfu {
    config: SfuConfig,
    rtc_config: RtcConfig,
    /// Subscribers' connections also report on their receiver reports.
    subscriber_config: RtcConfig,
    peers: HashMap<PeerId, Peer>,
    next_peer: PeerId,
    publishers: HashMap<RoomStream, PeerId>,
    /// The video layer each session asked for, per stream, while it plays it (a new play
    /// request names its layer again).
    wanted: HashMap<(SessionId, RoomStream), VideoLayer>,
    /// Subscribers of each stream. Kept while the stream's publisher connection is replaced or
    /// reconnects; only [`Sfu::unpublish`] ends it.
    subscribers: HashMap<RoomStream, Vec<PeerId>>,
    /// Last peer seen at each remote address, to skip the search on most packets.
    by_source: HashMap<SocketAddr, PeerId>,
    transmits: VecDeque<Transmit>,
    notices: VecDeque<Notice>,
    /// When the layers wanted were last looked at.
    dynacast_at: Option<Instant>,
    counters: SfuCounters,
}

/// How often a subscriber's connection reports on what its receiver reports said.
const DOWNLINK_REPORT_EVERY: Duration = Duration::from_millis(500);

/// A datagram received from `source` as str0m's input; None for one it cannot take (empty or
/// too large).
fn udp_input<'a>(now: Instant, source: SocketAddr, destination: SocketAddr, data: &'a [u8]) -> Option<Input<'a>> {
    let contents = data.try_into().ok()?;
    Some(Input::Receive(
        now,
        Receive {
            proto: Protocol::Udp,
            source,
            destination,
            contents,
        },
    ))
}

/// The payload type a subscriber's connection sends a publisher's codec as, among those it
/// negotiated: the same codec; or for H.264, one of the same profile (Baseline and
/// Constrained Baseline share one: encoders' Baseline streams use none of the tools only
/// Baseline has) and packetization mode.
fn out_payload_type(codecs: &str0m::format::CodecConfig, negotiated: &[Pt], params: PayloadParams) -> Option<Pt> {
    if let Some(same) = codecs.match_params(params)
        && negotiated.contains(&same.pt())
    {
        return Some(same.pt());
    }
    let spec = params.spec();
    let profile_idc = |id: Option<u32>| id.map(|id| id >> 16);
    if spec.codec != str0m::format::Codec::H264 {
        return None;
    }
    codecs
        .params()
        .iter()
        .filter(|p| negotiated.contains(&p.pt()))
        .find(|p| {
            let out = p.spec();
            out.codec == str0m::format::Codec::H264
                && profile_idc(out.format.profile_level_id) == profile_idc(spec.format.profile_level_id)
                && out.format.packetization_mode == spec.format.packetization_mode
        })
        .map(|p| p.pt())
}

fn rtc_config(dtls: dtls::DtlsStack, cert: Option<&str0m::crypto::dtls::DtlsCert>) -> RtcConfig {
    let mut config = Rtc::builder().set_crypto_provider(dtls.provider());
    // One certificate for the relay: not one made per connection.
    if let Some(cert) = cert {
        config = config.set_dtls_cert(cert.clone());
    }
    let mut config = config
        .set_ice_lite(true)
        .clear_codecs()
        .enable_opus(true, false)
        .set_rtp_mode(true);
    // H.264 with packetization-mode 1, with RTX so NACKed packets are resent: Constrained
    // Baseline first (what is chosen when an offer has several), then Baseline (forwarded to
    // Constrained Baseline receivers: encoders' Baseline streams use none of the tools only
    // Baseline has) and Main (forwarded to receivers that take Main).
    for (pt, rtx, profile_level_id) in [(108, 109, 0x42e01f), (104, 105, 0x42001f), (106, 107, 0x4d001f)] {
        config
            .codec_config()
            .add_h264(Pt::from(pt), Some(Pt::from(rtx)), true, profile_level_id);
    }
    config
}

impl Sfu {
    pub fn new(config: SfuConfig) -> Result<Sfu, SfuError> {
        Candidate::host(config.public_addr, "udp")
            .map_err(|e| SfuError::BadAddress(config.public_addr, e.to_string()))?;
        let dtls = config.dtls;
        let cert = dtls.provider().dtls_provider.generate_certificate();
        Ok(Sfu {
            config,
            rtc_config: rtc_config(dtls, cert.as_ref()),
            subscriber_config: rtc_config(dtls, cert.as_ref()).set_stats_interval(Some(DOWNLINK_REPORT_EVERY)),
            peers: HashMap::new(),
            next_peer: 1,
            publishers: HashMap::new(),
            wanted: HashMap::new(),
            subscribers: HashMap::new(),
            by_source: HashMap::new(),
            transmits: VecDeque::new(),
            notices: VecDeque::new(),
            dynacast_at: None,
            counters: SfuCounters::default(),
        })
    }

    pub fn counters(&self) -> SfuCounters {
        SfuCounters {
            publishers: self.publishers.len(),
            subscribers: self.peers.len() - self.publishers.len(),
            sources: self.by_source.len(),
            ..self.counters
        }
    }

    fn new_rtc(&self, now: Instant, offer: &str, config: &RtcConfig) -> Result<(Rtc, String), SfuError> {
        let offer = SdpOffer::from_sdp_string(offer).map_err(|e| SfuError::BadOffer(e.to_string()))?;
        let mut rtc = config.clone().build(now);
        let candidate = Candidate::host(self.config.public_addr, "udp")
            .map_err(|e| SfuError::BadAddress(self.config.public_addr, e.to_string()))?;
        rtc.add_local_candidate(candidate);
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| SfuError::Rejected(e.to_string()))?
            .to_sdp_string();
        offer::check_answer(&answer).map_err(SfuError::Rejected)?;
        Ok((rtc, offer::finish_answer(&answer)))
    }

    /// Adds a connection made from `offer`, answered with `answer`.
    fn add_peer(&mut self, now: Instant, rtc: Rtc, role: Role, offer: &str, answer: &str) -> PeerId {
        let id = self.next_peer;
        self.next_peer += 1;
        self.peers.insert(
            id,
            Peer {
                rtc,
                role,
                kinds: HashMap::new(),
                timeout: now,
                keepalive: keepalive::Keepalive::new(offer, answer),
                created: now,
                connected: false,
                failure: None,
            },
        );
        let work = self.drain(id);
        self.run(now, work);
        id
    }

    /// Accepts `owner`'s offer to publish `stream` and returns the new connection and the
    /// answer. A second offer from the same owner (a reconnecting publisher) replaces the first
    /// connection; its subscribers stay, and their sequence numbers continue without a jump.
    /// Another owner's offer for a stream that has a connection is refused: two publishers
    /// racing for one stream ID cannot take each other's media.
    pub fn publish(
        &mut self,
        now: Instant,
        stream: &RoomStream,
        owner: &str,
        offer: &str,
    ) -> Result<(PeerId, String), SfuError> {
        if let Some(Peer {
            role: Role::Publisher(current),
            ..
        }) = self.publishers.get(stream).and_then(|id| self.peers.get(id))
            && current.owner != owner
        {
            return Err(SfuError::OwnedByOther(stream.clone()));
        }
        let (mut rtc, answer) = self.new_rtc(now, offer, &self.rtc_config)?;
        for layer in offer::simulcast_ssrcs(offer) {
            let mid = Mid::from(layer.mid.as_str());
            if rtc.media(mid).is_some() {
                rtc.direct_api().expect_stream_rx(
                    layer.ssrc.into(),
                    Some(layer.rtx.into()),
                    mid,
                    Some(str0m::media::Rid::from(layer.rid.as_str())),
                );
            }
        }
        if let Some(old) = self.publishers.remove(stream) {
            self.remove_peer(old);
        }
        for sub in self.subscribers.get(stream).into_iter().flatten() {
            if let Some(Peer {
                role: Role::Subscriber(s),
                ..
            }) = self.peers.get_mut(sub)
            {
                for track in s.tracks.values_mut() {
                    track.base_in = None;
                    track.base_out = track.last_out + 1;
                }
                s.video.restart();
            }
        }
        let role = Role::Publisher(Publisher {
            stream: stream.clone(),
            owner: owner.to_owned(),
            keyframe_requested: [None; 3],
            layers: Default::default(),
            level: 0.0,
            last_audio: None,
            announced: [true; 3],
            unwanted_since: [None; 3],
        });
        let id = self.add_peer(now, rtc, role, offer, &answer);
        self.publishers.insert(stream.clone(), id);
        tracing::debug!(%stream, peer = id, "publisher connected");
        Ok((id, answer))
    }

    /// Accepts a subscriber's offer for `stream` and returns the answer. The video starts at
    /// `layer` when given, else at the layer the session last asked for (high at first).
    pub fn subscribe(
        &mut self,
        now: Instant,
        session: SessionId,
        stream: &RoomStream,
        offer: &str,
        layer: Option<VideoLayer>,
    ) -> Result<(PeerId, String), SfuError> {
        if !self.publishers.contains_key(stream) {
            return Err(SfuError::NoPublisher(stream.clone()));
        }
        let (rtc, answer) = self.new_rtc(now, offer, &self.subscriber_config)?;
        let key = (session, stream.clone());
        if let Some(layer) = layer {
            self.wanted.insert(key.clone(), layer);
        }
        let wanted = self.wanted.get(&key).copied().unwrap_or_default();
        let role = Role::Subscriber(Subscriber {
            stream: stream.clone(),
            session,
            tracks: HashMap::new(),
            video: VideoOut::new(wanted),
            downlink: CongestionCap::default(),
        });
        let id = self.add_peer(now, rtc, role, offer, &answer);
        self.subscribers.entry(stream.clone()).or_default().push(id);
        self.update_dynacast(now, true);
        Ok((id, answer))
    }

    /// Drops the publisher of `stream` and every subscriber to it (the stream is no longer listed).
    pub fn unpublish(&mut self, stream: &RoomStream) {
        if let Some(id) = self.publishers.remove(stream) {
            self.remove_peer(id);
        }
        for sub in self.subscribers.remove(stream).unwrap_or_default() {
            self.remove_peer(sub);
        }
    }

    /// Drops one publisher connection if it is still the one for `stream` (undoing a publish
    /// whose listing failed, without touching a newer connection).
    pub fn unpublish_peer(&mut self, stream: &RoomStream, peer: PeerId) {
        if self.publishers.get(stream) == Some(&peer) {
            self.unpublish(stream);
        }
    }

    /// Sets the video layer `session` receives of `stream`, in its connection now and in one
    /// set up again while it plays.
    pub fn set_layer(&mut self, now: Instant, session: SessionId, stream: &RoomStream, layer: VideoLayer) {
        self.wanted.insert((session, stream.clone()), layer);
        let mut resumed = false;
        for sub in self.subscribers.get(stream).into_iter().flatten() {
            if let Some(Peer {
                role: Role::Subscriber(s),
                ..
            }) = self.peers.get_mut(sub)
                && s.session == session
            {
                resumed |= s.video.wanted != layer && layer != VideoLayer::Off;
                s.video.wanted = layer;
            }
        }
        self.update_dynacast(now, true);
        if resumed {
            // The new layer begins at a keyframe: ask for it now rather than at its next packet.
            let work = vec![Work::KeyframeFor(stream.clone(), None)];
            self.run(now, work);
        }
    }

    /// The connection publishing `stream` now, if any.
    pub fn publisher(&self, stream: &RoomStream) -> Option<PeerId> {
        self.publishers.get(stream).copied()
    }

    /// The video layers the publisher of `stream` sends now, lowest first.
    pub fn layers_sent(&self, now: Instant, stream: &RoomStream) -> Vec<VideoLayer> {
        let Some(Peer {
            role: Role::Publisher(p),
            ..
        }) = self.publishers.get(stream).and_then(|id| self.peers.get(id))
        else {
            return Vec::new();
        };
        let sent = layers::sent_layers(&p.layers, now);
        VideoLayer::SENT
            .into_iter()
            .filter(|l| l.index().is_some_and(|i| sent[i]))
            .collect()
    }

    /// The smoothed sound level (0..1) of every published stream: 0 for one whose sound
    /// stopped coming (muted, or gone) over half a second ago.
    pub fn levels(&self, now: Instant) -> Vec<(RoomStream, f32)> {
        self.peers
            .values()
            .filter_map(|p| match &p.role {
                Role::Publisher(p) => {
                    let fresh = p
                        .last_audio
                        .is_some_and(|at| now.saturating_duration_since(at) < Duration::from_millis(500));
                    Some((p.stream.clone(), if fresh { p.level } else { 0.0 }))
                }
                _ => None,
            })
            .collect()
    }

    /// Drops `session`'s subscription to `stream`.
    pub fn unsubscribe(&mut self, session: SessionId, stream: &RoomStream) {
        self.wanted.remove(&(session, stream.clone()));
        let ids: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| matches!(&p.role, Role::Subscriber(s) if s.session == session && &s.stream == stream))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.remove_peer(id);
        }
    }

    /// Drops every subscription of `session`.
    pub fn drop_session(&mut self, session: SessionId) {
        self.wanted.retain(|(s, _), _| *s != session);
        let ids: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| matches!(&p.role, Role::Subscriber(s) if s.session == session))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.remove_peer(id);
        }
    }

    fn remove_peer(&mut self, id: PeerId) {
        let Some(mut peer) = self.peers.remove(&id) else {
            return;
        };
        peer.rtc.disconnect();
        match peer.role {
            Role::Subscriber(s) => {
                if let Some(list) = self.subscribers.get_mut(&s.stream) {
                    list.retain(|&x| x != id);
                }
            }
            Role::Publisher(p) => {
                // The stream stays listed and its subscribers stay: the publisher may reconnect.
                if self.publishers.get(&p.stream) == Some(&id) {
                    self.publishers.remove(&p.stream);
                }
            }
        }
        self.by_source.retain(|_, peer| *peer != id);
    }

    /// Feeds one received datagram.
    pub fn handle_receive(&mut self, now: Instant, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        let Some(input) = udp_input(now, source, destination, data) else {
            return;
        };
        let cached = self
            .by_source
            .get(&source)
            .copied()
            .filter(|id| self.peers.get(id).is_some_and(|p| p.rtc.accepts(&input)));
        let Some(id) = cached.or_else(|| {
            self.peers
                .iter()
                .find(|(_, p)| p.rtc.accepts(&input))
                .map(|(id, _)| *id)
        }) else {
            return;
        };
        self.by_source.insert(source, id);
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        // A peer that is heard is there: its connection gets the binding request it may not send.
        if let Some(request) = peer.keepalive.as_mut().and_then(|k| k.heard(now, data))
            && let Some(refresh) = udp_input(now, source, destination, &request)
            && let Err(err) = peer.rtc.handle_input(refresh)
        {
            tracing::debug!(peer = id, %err, "keepalive refused");
        }
        if let Err(err) = peer.rtc.handle_input(input) {
            tracing::debug!(peer = id, %err, "media input refused");
        }
        let work = self.drain(id);
        self.run(now, work);
    }

    /// Advances every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.timeout <= now)
            .map(|(id, _)| *id)
            .collect();
        let mut work = Vec::new();
        for id in due {
            if let Some(peer) = self.peers.get_mut(&id) {
                if let Err(err) = peer.rtc.handle_input(Input::Timeout(now)) {
                    tracing::debug!(peer = id, %err, "timeout refused");
                }
                work.extend(self.drain(id));
            }
        }
        self.run(now, work);
        let deadline = self.config.connect_deadline;
        for (id, peer) in &mut self.peers {
            if !peer.connected && now.saturating_duration_since(peer.created) >= deadline && peer.rtc.is_alive() {
                let why = format!("no media connection within {} s of the offer", deadline.as_secs_f32());
                tracing::warn!(peer = id, stream = %peer.role.stream(), "{why}");
                peer.failure.get_or_insert(why);
                peer.rtc.disconnect();
            }
        }
        let dead: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.rtc.is_alive())
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            tracing::debug!(peer = id, "media connection closed");
            if let Some(Peer {
                role: Role::Publisher(p),
                connected: false,
                failure,
                ..
            }) = self.peers.get(&id)
                && self.publishers.get(&p.stream) == Some(&id)
            {
                let why = failure.clone().unwrap_or_else(|| "the media connection closed".into());
                self.notices.push_back(Notice::PublishFailed(p.stream.clone(), id, why));
            }
            self.remove_peer(id);
        }
        self.update_dynacast(now, false);
    }

    /// When [`Sfu::handle_timeout`] should next run.
    pub fn poll_timeout(&self, now: Instant) -> Instant {
        let mut next = now + Duration::from_secs(1);
        for peer in self.peers.values() {
            next = next.min(peer.timeout);
            if !peer.connected {
                next = next.min(peer.created + self.config.connect_deadline);
            }
        }
        next
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// What signaling should pass on.
    pub fn poll_notice(&mut self) -> Option<Notice> {
        self.notices.pop_front()
    }

    /// Tells publishers which layers someone wants (dynacast): a layer is wanted when a
    /// subscriber asks for it within what its downlink carries; it is added at once and
    /// dropped once unwanted for [`DYNACAST_HOLD`]. Looked at every [`DYNACAST_EVERY`], or at
    /// once when `changed`.
    fn update_dynacast(&mut self, now: Instant, changed: bool) {
        if !changed && self.dynacast_at.is_some_and(|at| now < at + DYNACAST_EVERY) {
            return;
        }
        self.dynacast_at = Some(now);
        for (stream, &id) in &self.publishers {
            // A layer the publisher has never sent (a browser sends fewer below 960x540, a small
            // picture has no quarter) cannot be wanted: its subscribers get the nearest it has.
            let has = match self.peers.get(&id) {
                Some(Peer {
                    role: Role::Publisher(p),
                    ..
                }) if p.layers.iter().any(LayerIn::ever_sent) => [0, 1, 2].map(|i| p.layers[i].ever_sent()),
                _ => [true; 3],
            };
            let mut wanted = [false; 3];
            for sub in self.subscribers.get(stream).into_iter().flatten() {
                if let Some(Peer {
                    role: Role::Subscriber(s),
                    ..
                }) = self.peers.get(sub)
                    && let Some(i) = s.video.target(has)
                {
                    wanted[i] = true;
                }
            }
            let Some(Peer {
                role: Role::Publisher(p),
                ..
            }) = self.peers.get_mut(&id)
            else {
                continue;
            };
            let mut next = p.announced;
            for i in 0..3 {
                if wanted[i] {
                    p.unwanted_since[i] = None;
                    next[i] = true;
                } else {
                    let since = *p.unwanted_since[i].get_or_insert(now);
                    if now.saturating_duration_since(since) >= DYNACAST_HOLD {
                        next[i] = false;
                    }
                }
            }
            if next != p.announced {
                p.announced = next;
                let layers = VideoLayer::SENT
                    .into_iter()
                    .filter(|l| l.index().is_some_and(|i| next[i]));
                self.notices
                    .push_back(Notice::LayersWanted(stream.clone(), layers.collect()));
            }
        }
    }

    /// Polls one peer until it has nothing more, collecting transmits and the work its events cause.
    fn drain(&mut self, id: PeerId) -> Vec<Work> {
        let mut work = Vec::new();
        self.drain_into(id, &mut work);
        work
    }

    /// [`Sfu::drain`], adding to `work`.
    fn drain_into(&mut self, id: PeerId, work: &mut Vec<Work>) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        loop {
            match peer.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    peer.timeout = t;
                    break;
                }
                Ok(Output::Transmit(t)) => self.transmits.push_back(Transmit {
                    destination: t.destination,
                    contents: t.contents.to_vec(),
                }),
                Ok(Output::Event(event)) => match event {
                    Event::MediaAdded(added) => {
                        peer.kinds.insert(added.mid, added.kind);
                    }
                    Event::RtpPacket(packet) => {
                        if matches!(peer.role, Role::Publisher(_)) {
                            self.counters.packets_in += 1;
                            work.push(Work::Forward(id, Box::new(packet)));
                        }
                    }
                    Event::KeyframeRequest(_) | Event::Connected => {
                        if matches!(event, Event::Connected) {
                            peer.connected = true;
                            if let Some(keepalive) = &mut peer.keepalive {
                                keepalive.connected();
                            }
                        }
                        if let Role::Subscriber(s) = &peer.role {
                            work.push(Work::KeyframeFor(s.stream.clone(), None));
                        }
                    }
                    Event::MediaEgressStats(stats) => {
                        let is_video = peer.kinds.get(&stats.mid) == Some(&MediaKind::Video);
                        if let Role::Subscriber(s) = &mut peer.role
                            && is_video
                            && s.downlink
                                .on_report(stats.timestamp, stats.loss, stats.rtt, s.video.current)
                        {
                            tracing::debug!(peer = id, cap = ?s.downlink.cap, loss = ?stats.loss, rtt = ?stats.rtt, "the downlink caps the video layer");
                            s.video.cap = s.downlink.cap;
                            // A layer let through again must be sent again.
                            self.dynacast_at = None;
                        }
                    }
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        tracing::info!(peer = id, stream = %peer.role.stream(), "media connection silent; closing it");
                        peer.rtc.disconnect();
                    }
                    _ => {}
                },
                Err(err) => {
                    // A failed handshake (DTLS: a certificate it cannot use, say) or a broken peer.
                    tracing::warn!(peer = id, stream = %peer.role.stream(), %err, "media connection failed");
                    peer.failure.get_or_insert_with(|| err.to_string());
                    peer.rtc.disconnect();
                    break;
                }
            }
        }
    }

    fn run(&mut self, now: Instant, mut work: Vec<Work>) {
        while !work.is_empty() {
            let mut next = Vec::new();
            for item in work {
                match item {
                    Work::Forward(from, packet) => next.extend(self.forward(now, from, packet)),
                    Work::KeyframeFor(stream, layer) => next.extend(self.request_keyframe(now, &stream, layer)),
                }
            }
            work = next;
        }
    }

    fn forward(&mut self, now: Instant, from: PeerId, packet: Box<RtpPacket>) -> Vec<Work> {
        let Some(publisher) = self.peers.get_mut(&from) else {
            return Vec::new();
        };
        let Some((mid, rid)) = publisher
            .rtc
            .direct_api()
            .stream_rx(&packet.header.ssrc)
            .map(|s| (s.mid(), s.rid()))
        else {
            return Vec::new();
        };
        let Some(&kind) = publisher.kinds.get(&mid) else {
            return Vec::new();
        };
        let Some(params): Option<PayloadParams> = publisher
            .rtc
            .codec_config()
            .find(|p| p.pt() == packet.header.payload_type)
            .copied()
        else {
            return Vec::new();
        };
        let Role::Publisher(p) = &mut publisher.role else {
            return Vec::new();
        };
        let video = kind == MediaKind::Video;
        // A publisher without simulcast sends its one picture as the high layer.
        let layer = rid
            .map(|rid| VideoLayer::from_rid(&rid))
            .and_then(VideoLayer::index)
            .unwrap_or(2);
        let keyframe = video && starts_keyframe(&packet.payload);
        if video {
            p.layers[layer].on_packet(now);
            if keyframe {
                p.keyframe_requested[layer] = None;
            }
        } else if let Some(level) = packet.header.ext_vals.audio_level {
            // RFC 6464: the level in -dBov; smoothed per 20 ms packet over about a quarter of a
            // second.
            let linear = 10f32.powf(f32::from(level.min(0)) / 20.0);
            p.level += (linear - p.level) * 0.08;
            p.last_audio = Some(now);
        }
        let sent = layers::sent_layers(&p.layers, now);
        // When the frame was captured, by the publisher's clock: its sender report maps RTP
        // time to that clock (the layers' RTP clocks start apart; this one they share).
        let sender_info = packet.last_sender_info.as_ref().filter(|_| video);
        let capture_us = sender_info.and_then(|sr| {
            let ntp_us = sr.ntp_time.duration_since(std::time::UNIX_EPOCH).ok()?.as_micros() as i64;
            let ticks = i64::from(packet.header.timestamp.wrapping_sub(sr.rtp_time.numer() as u32) as i32);
            Some(ntp_us + ticks * 1_000_000 / 90_000)
        });
        let stream = p.stream.clone();
        let captured = match &self.config.probe {
            Some(probe) if video => rtp_capture_time(&packet.payload).inspect(|&capture_us| {
                probe.mark(capture_us, FrameStage::SfuIn);
            }),
            _ => None,
        };
        let Some(subscribers) = self.subscribers.remove(&stream) else {
            return Vec::new();
        };
        let mut work = Vec::new();
        let mut keyframe_wanted = false;
        for &sub in &subscribers {
            let Some(peer) = self.peers.get_mut(&sub) else {
                continue;
            };
            if !peer.rtc.is_connected() {
                continue;
            }
            let Role::Subscriber(s) = &mut peer.role else {
                continue;
            };
            let mut timestamp = packet.header.timestamp;
            let mut switched = false;
            if video {
                let packet_in = PacketIn {
                    layer,
                    starts_keyframe: keyframe,
                    ts_in: packet.header.timestamp,
                    capture_us,
                };
                match s.video.on_packet(now, packet_in, sent) {
                    Verdict::Forward {
                        timestamp: ts,
                        switched: sw,
                    } => {
                        timestamp = ts;
                        switched = sw;
                        if sw {
                            self.counters.layer_switches += 1;
                        }
                    }
                    Verdict::Drop => continue,
                    Verdict::AwaitKeyframe(_) => {
                        keyframe_wanted = true;
                        continue;
                    }
                }
            }
            let track = match s.tracks.entry(kind) {
                std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::hash_map::Entry::Vacant(entry) => {
                    let Some(mid) = peer.kinds.iter().find(|(_, k)| **k == kind).map(|(m, _)| *m) else {
                        continue;
                    };
                    if video && let Some(tx) = peer.rtc.direct_api().stream_tx_by_mid(mid, None) {
                        // Keep what a NACK can still usefully ask for, no more: a smaller
                        // history per subscriber keeps fan-out in cache. No resend-ratio cap
                        // (its bookkeeping costs every packet): resends are bounded by this
                        // history, and heavy loss is met with keyframe requests instead.
                        tx.set_rtx_cache(RTX_HISTORY_PACKETS, RTX_HISTORY_AGE, None);
                    }
                    entry.insert(TrackOut {
                        mid,
                        pt: None,
                        base_in: None,
                        base_out: FIRST_OUT_SEQ,
                        last_out: FIRST_OUT_SEQ - 1,
                    })
                }
            };
            if switched {
                // Another layer is another sequence space: it continues after the last written.
                track.base_in = None;
                track.base_out = track.last_out + 1;
            }
            let out_pt = match track.pt {
                Some((pt_in, pt_out)) if pt_in == packet.header.payload_type => pt_out,
                _ => {
                    let negotiated = peer
                        .rtc
                        .media(track.mid)
                        .map(|m| m.remote_pts().to_vec())
                        .unwrap_or_default();
                    let Some(pt_out) = out_payload_type(peer.rtc.codec_config(), &negotiated, params) else {
                        continue;
                    };
                    track.pt = Some((packet.header.payload_type, pt_out));
                    pt_out
                }
            };
            let out_mid = track.mid;
            let seq_in = *packet.seq_no;
            let base_in = *track.base_in.get_or_insert(seq_in);
            if seq_in < base_in {
                continue;
            }
            let seq_out = seq_in - base_in + track.base_out;
            track.last_out = track.last_out.max(seq_out);
            let ext = ExtensionValues {
                audio_level: packet.header.ext_vals.audio_level,
                voice_activity: packet.header.ext_vals.voice_activity,
                ..Default::default()
            };
            let mut api = peer.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(out_mid, None) else {
                continue;
            };
            tx.write_rtp(
                RtpWrite::new(
                    out_pt,
                    SeqNo::from(seq_out),
                    timestamp,
                    packet.timestamp,
                    packet.payload.clone(),
                )
                .marker(packet.header.marker)
                .nackable(video)
                .ext_vals(ext),
            );
            self.counters.packets_forwarded += 1;
            self.drain_into(sub, &mut work);
        }
        self.subscribers.insert(stream.clone(), subscribers);
        if keyframe_wanted {
            work.push(Work::KeyframeFor(stream, Some(layer)));
        }
        if let (Some(probe), Some(capture_us)) = (&self.config.probe, captured) {
            probe.mark(capture_us, FrameStage::SfuOut);
        }
        work
    }

    /// Asks the publisher of `stream` for a keyframe of `layer` (or of every layer some
    /// subscriber receives or waits for), unless one asked for is still on its way.
    fn request_keyframe(&mut self, now: Instant, stream: &RoomStream, layer: Option<usize>) -> Vec<Work> {
        let Some(&id) = self.publishers.get(stream) else {
            return Vec::new();
        };
        let wanted: Vec<usize> = match layer {
            Some(layer) => vec![layer],
            None => {
                let Some(Peer {
                    role: Role::Publisher(p),
                    ..
                }) = self.peers.get(&id)
                else {
                    return Vec::new();
                };
                let sent = layers::sent_layers(&p.layers, now);
                let mut wanted: Vec<usize> = self
                    .subscribers
                    .get(stream)
                    .into_iter()
                    .flatten()
                    .filter_map(|sub| match self.peers.get(sub).map(|p| &p.role) {
                        Some(Role::Subscriber(s)) => s.video.target(sent).or(s.video.current),
                        _ => None,
                    })
                    .collect();
                if wanted.is_empty() && !sent.contains(&true) {
                    // Nothing heard yet: whichever layer comes first should start with a keyframe.
                    wanted = vec![0, 1, 2];
                }
                wanted.sort_unstable();
                wanted.dedup();
                wanted
            }
        };
        let wait = self.config.keyframe_interval;
        let Some(peer) = self.peers.get_mut(&id) else {
            return Vec::new();
        };
        let Role::Publisher(p) = &mut peer.role else {
            return Vec::new();
        };
        let sent = layers::sent_layers(&p.layers, now);
        let mut ask = Vec::new();
        for layer in wanted {
            // A layer not being sent cannot answer; its publisher starts it with a keyframe when
            // it is wanted again (dynacast). Asking would only hold back the next request.
            let silent = !sent[layer] && sent.contains(&true);
            if silent || p.keyframe_requested[layer].is_some_and(|asked| now < asked + wait) {
                continue;
            }
            p.keyframe_requested[layer] = Some(now);
            ask.push(layer);
        }
        if ask.is_empty() {
            return Vec::new();
        }
        let video_mids: Vec<Mid> = peer
            .kinds
            .iter()
            .filter(|(_, k)| **k == MediaKind::Video)
            .map(|(m, _)| *m)
            .collect();
        let mut api = peer.rtc.direct_api();
        for mid in video_mids {
            // Simulcast layers are addressed by RID; a publisher without them has one stream.
            let mut asked_any = false;
            for &layer in &ask {
                let rid = VideoLayer::SENT[layer].rid().map(str0m::media::Rid::from);
                if let Some(rx) = api.stream_rx_by_mid(mid, rid) {
                    rx.request_keyframe(KeyframeRequestKind::Pli);
                    self.counters.keyframe_requests += 1;
                    asked_any = true;
                }
            }
            if !asked_any
                && ask.contains(&2)
                && let Some(rx) = api.stream_rx_by_mid(mid, None)
            {
                rx.request_keyframe(KeyframeRequestKind::Pli);
                self.counters.keyframe_requests += 1;
            }
        }
        self.drain(id)
    }
}

#[cfg(test)]
mod tests {
    use super::starts_keyframe;

    #[test]
    fn keyframes_are_recognised_in_every_packetization() {
        assert!(starts_keyframe(&[0x65, 0x88]), "IDR slice");
        assert!(starts_keyframe(&[0x67, 0x42]), "SPS");
        assert!(
            starts_keyframe(&[0x78, 0x00, 0x0a, 0x67, 0x42]),
            "STAP-A starting with SPS"
        );
        assert!(
            starts_keyframe(&[0x78, 0x00, 0x02, 0x06, 0x05, 0x00, 0x02, 0x67, 0x42]),
            "STAP-A with an SEI before the SPS"
        );
        assert!(
            !starts_keyframe(&[0x78, 0x00, 0x02, 0x06, 0x05, 0x00, 0x02, 0x41, 0x9a]),
            "STAP-A of an SEI and a P slice"
        );
        assert!(starts_keyframe(&[0x7c, 0x85, 0x88]), "FU-A start of an IDR slice");
        assert!(!starts_keyframe(&[0x7c, 0x05, 0x88]), "FU-A middle of an IDR slice");
        assert!(!starts_keyframe(&[0x41, 0x9a]), "P slice");
        assert!(!starts_keyframe(&[]));
    }
}
