//! Building webrtc-rs peer connections the way Holoroom needs them: H.264 Constrained
//! Baseline and Opus only, host candidates on one address, no mDNS, fast ICE checks.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use std::collections::VecDeque;
use std::time::Instant;

use async_trait::async_trait;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::NackResponderBuilder;
use rtc::interceptor::{Attribute, Interceptor, Packet, Slot, StreamInfo, TaggedPacket};
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_RTX};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::rtp_sender::RTCPFeedback;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::sdp::extmap::AUDIO_LEVEL_URI;
use tokio::sync::{mpsc, oneshot, watch};
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceConnectionState, RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription, Registry,
    SettingEngineBuilder, configure_rtcp_reports, configure_simulcast_extension_headers, configure_twcc_receiver_only,
};

use crate::engine::MediaError;

/// Silence on the media path after which ICE calls it disconnected, and the further silence
/// after which it has failed.
const ICE_DISCONNECTED_AFTER: Duration = Duration::from_secs(3);
const ICE_FAILED_AFTER: Duration = Duration::from_secs(4);

/// How long ICE gathering and connecting may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the secure (DTLS) handshake may take once ICE has a path (at least; four times
/// what ICE took when that is longer): a few of its retransmissions on a lossy path; a
/// handshake still unfinished then has stalled (seen at 2% loss: a few in every few hundred),
/// and the connection is set up afresh.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

pub(crate) fn h264_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_H264.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// Payload types offered for H.264 and its retransmissions (RFC 4588).
pub(crate) const H264_PT: u8 = 102;
pub(crate) const RTX_PT: u8 = 103;

pub(crate) fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// An interceptor that shows each inbound RTCP compound to `inspect`, which may change it and
/// says whether it goes on towards the application end of the chain; all else passes.
struct RtcpTap<F> {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
    inspect: F,
}

impl<F: FnMut(&mut TaggedPacket) -> bool> RtcpTap<F> {
    fn new(inspect: F) -> Self {
        RtcpTap {
            read: VecDeque::new(),
            write: VecDeque::new(),
            inspect,
        }
    }
}

impl<F: FnMut(&mut TaggedPacket) -> bool> Protocol<TaggedPacket, TaggedPacket, ()> for RtcpTap<F> {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = webrtc::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if matches!(msg.message.packet, Packet::Rtcp(_)) && !(self.inspect)(&mut msg) {
            return Ok(());
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }
}

impl<F: FnMut(&mut TaggedPacket) -> bool + Send + Sync> Interceptor for RtcpTap<F> {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// Hands inbound keyframe requests (PLI, FIR) to the application, where the encoder can answer
/// them; other inbound RTCP has done its work in the interceptors before this one and stops here.
/// On the way, takes the loss the remote's receiver reports give each of our streams: SSRC and
/// fraction lost (of 256) per report block.
fn keyframe_requests(
    reports: mpsc::UnboundedSender<Vec<(u32, u8)>>,
) -> impl FnMut(&mut TaggedPacket) -> bool + Send + Sync + use<> {
    move |msg| {
        let Packet::Rtcp(packets) = &msg.message.packet else {
            return true;
        };
        let blocks: Vec<(u32, u8)> = packets
            .iter()
            .filter_map(|p| p.as_any().downcast_ref::<ReceiverReport>())
            .flat_map(|rr| rr.reports.iter().map(|r| (r.ssrc, r.fraction_lost)))
            .collect();
        if !blocks.is_empty() {
            let _ = reports.send(blocks);
        }
        let requests: Vec<Box<dyn rtc::rtcp::Packet>> = packets
            .iter()
            .filter(|p| p.as_any().is::<PictureLossIndication>() || p.as_any().is::<FullIntraRequest>())
            .cloned()
            .collect();
        if requests.is_empty() {
            return false;
        }
        msg.message.packet = Packet::Rtcp(requests);
        msg.message.add(Attribute::DeliverToApplication);
        true
    }
}

/// Drops inbound NACKs while `hold` is set: on a link whose queue is building, resending what
/// it dropped only adds to the queue (the frame they belong to is late anyway, and the receiver
/// asks for a keyframe). Everything else passes.
fn resend_gate(hold: Arc<AtomicBool>) -> impl FnMut(&mut TaggedPacket) -> bool + Send + Sync + use<> {
    move |msg| {
        if hold.load(Ordering::Relaxed)
            && let Packet::Rtcp(packets) = &mut msg.message.packet
        {
            packets.retain(|p| !p.as_any().is::<TransportLayerNack>());
            return !packets.is_empty();
        }
        true
    }
}

/// What a peer connection reports, as channels.
pub(crate) struct PeerEvents {
    pub state: watch::Receiver<RTCPeerConnectionState>,
    /// ICE's own state, to say which part of a connection that does not come up is stuck.
    pub ice: watch::Receiver<RTCIceConnectionState>,
    pub gathered: watch::Receiver<bool>,
    pub tracks: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
    /// Receiver reports on our streams: (SSRC, fraction lost of 256) per block.
    pub reports: Option<mpsc::UnboundedReceiver<Vec<(u32, u8)>>>,
    /// Set to hold back resends (NACKs are dropped on arrival).
    pub hold_resends: Arc<AtomicBool>,
}

struct Handler {
    state: watch::Sender<RTCPeerConnectionState>,
    ice: watch::Sender<RTCIceConnectionState>,
    gathered: watch::Sender<bool>,
    tracks: mpsc::UnboundedSender<Arc<dyn TrackRemote>>,
}

#[async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.state.send(state);
    }

    async fn on_ice_connection_state_change(&self, state: RTCIceConnectionState) {
        let _ = self.ice.send(state);
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.tracks.send(track);
    }
}

pub(crate) type Peer = Arc<dyn PeerConnection>;

/// A new peer connection whose host candidates are bound on `bind` (e.g. `127.0.0.1:0`).
pub(crate) async fn new_peer(bind: &str) -> Result<(Peer, PeerEvents), MediaError> {
    let failed = |e: webrtc::error::Error| MediaError::Connection(e.to_string());
    let mut media = MediaEngine::default();
    media
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: h264_codec(),
                payload_type: H264_PT,
            },
            RtpCodecKind::Video,
        )
        .map_err(failed)?;
    // Retransmissions on a stream of their own: the SFU resends lost packets only this way,
    // and asks a publisher for them only when it offers one.
    media
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_RTX.to_owned(),
                    clock_rate: 90_000,
                    channels: 0,
                    sdp_fmtp_line: format!("apt={H264_PT}"),
                    rtcp_feedback: vec![],
                },
                payload_type: RTX_PT,
            },
            RtpCodecKind::Video,
        )
        .map_err(failed)?;
    media
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: opus_codec(),
                payload_type: 111,
            },
            RtpCodecKind::Audio,
        )
        .map_err(failed)?;
    // The default set less the NACK generator: a player's receive buffer NACKs itself, at
    // once and paced by the round trip, instead of on a fixed 100 ms tick.
    for parameter in ["", "pli"] {
        media.register_feedback(
            RTCPFeedback {
                typ: "nack".to_owned(),
                parameter: parameter.to_owned(),
            },
            RtpCodecKind::Video,
        );
    }
    configure_simulcast_extension_headers(&mut media).map_err(failed)?;
    // The sound's level in each packet (RFC 6464): the SFU tells the room who is speaking.
    media
        .register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: AUDIO_LEVEL_URI.to_owned(),
            },
            RtpCodecKind::Audio,
            None,
        )
        .map_err(failed)?;
    // Ahead of the responder (nearer the wire): NACKs are held back while the uplink queues.
    let hold_resends = Arc::new(AtomicBool::new(false));
    let registry = Registry::new()
        .with(Slot::Custom(3_500), RtcpTap::new(resend_gate(hold_resends.clone())))
        .with(Slot::NackResponder, NackResponderBuilder::new().with_size(1024).build());
    let registry = configure_twcc_receiver_only(registry, &mut media).map_err(failed)?;
    let (reports_tx, reports) = mpsc::unbounded_channel();
    let registry =
        configure_rtcp_reports(registry).with(Slot::from(14_000), RtcpTap::new(keyframe_requests(reports_tx)));
    // Checks every 20 ms instead of 200 ms: the check tick gates both nomination and the
    // first DTLS flight. More attempts keep pairs alive while the answer is on its way.
    // A path silent for 3 s is disconnected (and may come back by itself); silent 4 s more, it
    // has failed and the task sets media up anew. Keepalives every second keep a quiet
    // (receive-only) connection from looking dead.
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        // Simulcast layers' SSRCs and their retransmission SSRCs in the offer: retransmitted
        // packets carry no RID, so the SFU pairs them with their layer from these.
        .with_write_ssrc_attributes_for_simulcast(true)
        .with_ice_connection_attempts(Some(Duration::from_millis(20)), Some(250))
        .with_ice_timeouts(
            Some(ICE_DISCONNECTED_AFTER),
            Some(ICE_FAILED_AFTER),
            Some(Duration::from_secs(1)),
        )
        .build();
    let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
    let (ice_tx, ice) = watch::channel(RTCIceConnectionState::New);
    let (gathered_tx, gathered) = watch::channel(false);
    let (tracks_tx, tracks) = mpsc::unbounded_channel();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .with_handler(Arc::new(Handler {
            state: state_tx,
            ice: ice_tx,
            gathered: gathered_tx,
            tracks: tracks_tx,
        }))
        .with_udp_addrs(vec![bind.to_owned()])
        .build()
        .await
        .map_err(failed)?;
    Ok((
        Arc::new(pc),
        PeerEvents {
            state,
            ice,
            gathered,
            tracks,
            reports: Some(reports),
            hold_resends,
        },
    ))
}

/// Creates an offer, applies it, waits for host candidates and returns the complete SDP.
pub(crate) async fn local_offer(pc: &Peer, events: &mut PeerEvents) -> Result<String, MediaError> {
    let failed = |e: webrtc::error::Error| MediaError::Connection(e.to_string());
    let offer = pc.create_offer(None).await.map_err(failed)?;
    pc.set_local_description(offer).await.map_err(failed)?;
    tokio::time::timeout(CONNECT_TIMEOUT, events.gathered.wait_for(|&done| done))
        .await
        .map_err(|_| MediaError::Connection("ICE gathering did not finish".into()))?
        .map_err(|_| MediaError::Connection("peer connection closed while gathering".into()))?;
    pc.local_description()
        .await
        .map(|d| d.sdp)
        .ok_or_else(|| MediaError::Connection("no local description after gathering".into()))
}

/// Applies the server's answer.
pub(crate) async fn apply_answer(pc: &Peer, answer: String) -> Result<(), MediaError> {
    let answer =
        RTCSessionDescription::answer(answer).map_err(|e| MediaError::Negotiation(format!("bad answer: {e}")))?;
    pc.set_remote_description(answer)
        .await
        .map_err(|e| MediaError::Negotiation(format!("answer refused: {e}")))
}

/// Waits until the connection is up, or fails.
pub(crate) async fn wait_connected(events: &mut PeerEvents) -> Result<(), MediaError> {
    let finished = |s: &RTCPeerConnectionState| {
        matches!(
            s,
            RTCPeerConnectionState::Connected | RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
        )
    };
    let path_up =
        |s: &RTCIceConnectionState| matches!(s, RTCIceConnectionState::Connected | RTCIceConnectionState::Completed);
    let (mut state, mut ice) = (events.state.clone(), events.ice.clone());
    let outcome = tokio::time::timeout(CONNECT_TIMEOUT, async move {
        // The path first (ICE), then the secure handshake on it, which gets less time: on a
        // lossy path a handshake sometimes stalls for good, and a fresh connection does better.
        // None: the handshake stalled. A path whose checks took long (a long round trip) gives
        // the handshake, a few round trips, longer too.
        let started = tokio::time::Instant::now();
        tokio::select! {
            done = state.wait_for(finished) => return done.map(|s| Some(*s)),
            _ = ice.wait_for(path_up) => {}
        }
        let limit = HANDSHAKE_TIMEOUT.max(started.elapsed() * 4);
        match tokio::time::timeout(limit, state.wait_for(finished)).await {
            Ok(done) => done.map(|s| Some(*s)),
            Err(_) => Ok(None),
        }
    })
    .await;
    let stuck = || {
        MediaError::Connection(format!(
            "media connection timed out (ICE {}, connection {})",
            *events.ice.borrow(),
            *events.state.borrow()
        ))
    };
    match outcome {
        Err(_) | Ok(Ok(None)) => Err(stuck()),
        Ok(Err(_)) => Err(MediaError::Connection("peer connection dropped".into())),
        Ok(Ok(Some(RTCPeerConnectionState::Connected))) => Ok(()),
        Ok(Ok(Some(other))) => Err(MediaError::Connection(format!("media connection {other:?}"))),
    }
}

/// The address to bind host candidates on for a server at `server_url`: loopback for a
/// loopback server, every interface otherwise (IPv4 or IPv6 as the server's address is).
pub(crate) fn bind_for(server_url: &str) -> &'static str {
    let authority = server_url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(ip)) if ip.is_loopback() => "[::1]:0",
        Ok(std::net::IpAddr::V6(_)) => "[::]:0",
        Ok(ip) if ip.is_loopback() => "127.0.0.1:0",
        Err(_) if host == "localhost" => "127.0.0.1:0",
        _ => "0.0.0.0:0",
    }
}

/// Waits until an established connection fails or closes, and says so.
pub(crate) async fn connection_lost(events: &mut PeerEvents) -> MediaError {
    let lost = events
        .state
        .wait_for(|s| matches!(s, RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed))
        .await;
    match lost {
        Ok(state) => MediaError::Connection(format!("media connection {:?}", *state)),
        Err(_) => MediaError::Connection("media connection dropped".into()),
    }
}

/// Runs one media connection: sets it up with `setup` (which hands back the connection's
/// events with its result), reports it up, and runs until `stop` fires (its sender is
/// dropped) or the path fails; then closes it and reports the end (with the failure, if
/// any) to the room machine, which decides what comes next.
pub(crate) async fn run_once<S, F>(
    env: &super::MediaEnv,
    events: &crate::engine::EventSink,
    link: super::MediaLink,
    mut stop: oneshot::Receiver<()>,
    setup: S,
) where
    S: FnOnce(Peer, PeerEvents, super::TaskLink) -> F,
    F: Future<Output = (PeerEvents, Result<(), MediaError>)>,
{
    let (pc, peer_events) = match new_peer(env.bind).await {
        Ok(peer) => peer,
        Err(error) => return link.ended(Some(error)),
    };
    let running = Arc::new(AtomicBool::new(true));
    let task = super::TaskLink {
        events: events.clone(),
        running: running.clone(),
        probe: env.probe.clone(),
    };
    let outcome = tokio::select! {
        outcome = setup(pc.clone(), peer_events, task) => Some(outcome),
        _ = &mut stop => None,
    };
    let error = match outcome {
        None => None,
        Some((mut peer_events, Ok(()))) => {
            link.up();
            tokio::select! {
                _ = &mut stop => None,
                lost = connection_lost(&mut peer_events) => Some(lost),
            }
        }
        Some((_, Err(error))) => Some(error),
    };
    running.store(false, Ordering::Relaxed);
    let _ = pc.close().await;
    link.ended(error);
}

#[cfg(test)]
mod tests {
    use super::bind_for;

    #[test]
    fn media_binds_where_the_server_is() {
        assert_eq!(bind_for("ws://127.0.0.1:7880/v1/ws"), "127.0.0.1:0");
        assert_eq!(bind_for("ws://localhost:7880/v1/ws"), "127.0.0.1:0");
        assert_eq!(bind_for("ws://[::1]:7880/v1/ws"), "[::1]:0");
        assert_eq!(bind_for("ws://[2001:db8::1]:7880/v1/ws"), "[::]:0");
        assert_eq!(bind_for("wss://room.example:443/v1/ws"), "0.0.0.0:0");
    }
}
