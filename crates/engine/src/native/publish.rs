//! Publishing one local stream: a peer connection to the SFU, an encoder thread that takes
//! the newest captured frame, and a sender task that hands access units to the track.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use holoroom_protocol::VideoLayer;
use holoroom_protocol::congestion::CongestionCap;
use holoroom_protocol::timing::{FrameStage, capture_time_sei};
use holoroom_protocol::{PublishRequest, Request, ResponseBody, StreamId};
use rtc::media::Sample;
use rtc::rtp::extension::HeaderExtension;
use rtc::rtp::extension::audio_level_extension::AudioLevelExtension;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RTCRtpRtxParameters, RtpCodecKind,
};
use rtc::sdp::extmap::{SDES_MID_URI, SDES_RTP_STREAM_ID_URI};
use rtc::shared::marshal::{Marshal, MarshalSize};
use tokio::sync::{mpsc, oneshot};
use webrtc::media_stream::MediaStreamTrack;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::StatsSelector;
use webrtc::rtp_transceiver::RtpSender;

use super::peer::{self, Peer, PeerEvents};
use super::{MediaEnv, MediaLink, TaskLink};
use crate::codec::{EncoderSettings, H264Encoder};
use crate::engine::{EngineEvent, EventSink, MediaError, QUALITY_INTERVAL, StreamQuality};
use crate::media::{FRAME_SAMPLES, SAMPLE_RATE, Tone, VideoFrame, unix_micros};
use crate::signaling::Signaling;
use crate::stream::{AudioSource, EncodedClip, LocalStream};

/// One encoded access unit of one layer on its way to the track.
struct Unit {
    layer: usize,
    data: Bytes,
    duration: Duration,
}

/// The simulcast layers the desktop sends, lowest first: each picture scaled down by
/// [`VideoLayer::scale_down`] under the layer's RID.
const LAYERS: [VideoLayer; 3] = VideoLayer::SENT;

/// One sent layer: its encoding's SSRC and the RTP header extensions that name it (the MID of
/// the video's m-line and the layer's RID, which is how the SFU tells the layers apart).
struct LayerTrack {
    ssrc: u32,
    extensions: Vec<HeaderExtension>,
}

/// An RTP SDES item (RFC 7941) carried as a header extension: a MID or a RID, as text.
#[derive(Debug, Clone)]
struct SdesItem(Bytes);

impl MarshalSize for SdesItem {
    fn marshal_size(&self) -> usize {
        self.0.len()
    }
}

impl Marshal for SdesItem {
    fn marshal_to(&self, buf: &mut [u8]) -> Result<usize, rtc::shared::error::Error> {
        let n = self.0.len();
        if buf.len() < n {
            return Err(rtc::shared::error::Error::ErrBufferShort);
        }
        buf[..n].copy_from_slice(&self.0);
        Ok(n)
    }
}

fn sdes(uri: &'static str, value: &str) -> HeaderExtension {
    HeaderExtension::Custom {
        uri: uri.into(),
        extension: Box::new(SdesItem(Bytes::copy_from_slice(value.as_bytes()))),
    }
}

/// Hands one layer's access unit to the sender and counts its bytes; false once the sender is
/// gone. (A layer that was paused resumes with its RTP time where it stopped: skipping time
/// in webrtc-rs skips sequence numbers too, which reads as loss. The SFU tells a mapping made
/// stale by a pause from a real one.)
fn send_unit(units: &mpsc::Sender<Unit>, (layer, data, duration): (usize, Bytes, Duration), bytes: &AtomicU64) -> bool {
    bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
    units.blocking_send(Unit { layer, data, duration }).is_ok()
}

/// The layers to encode: those someone receives (dynacast) up to what the uplink carries; when
/// a wanted layer is above that, the highest layer the uplink carries instead, so that its
/// viewers get the best picture that gets through.
fn layers_to_send(local: &LocalStream, uplink_cap: &AtomicUsize) -> [bool; 3] {
    let wanted = [0, 1, 2].map(|layer| local.layer_wanted(layer));
    within_uplink(wanted, uplink_cap.load(Ordering::Relaxed))
}

fn within_uplink(wanted: [bool; 3], cap: usize) -> [bool; 3] {
    let mut send = [0, 1, 2].map(|layer| wanted[layer] && layer <= cap);
    if wanted.iter().skip(cap + 1).any(|&w| w) {
        send[cap.min(2)] = true;
    }
    send
}

/// Judges the uplink by the SFU's receiver reports on the video (the worst loss of the layers)
/// and the round trip ICE measures, at each report, and sets the highest layer it carries;
/// holds back resends while the round trip shows a queue building.
async fn judge_uplink(
    pc: Peer,
    ssrcs: Vec<u32>,
    mut reports: mpsc::UnboundedReceiver<Vec<(u32, u8)>>,
    (local, uplink_cap, hold_resends): (LocalStream, Arc<AtomicUsize>, Arc<AtomicBool>),
    running: Arc<AtomicBool>,
) {
    let mut judge = CongestionCap::default();
    while let Some(blocks) = reports.recv().await {
        if !running.load(Ordering::Relaxed) {
            return;
        }
        let Some(lost) = blocks
            .iter()
            .filter(|(ssrc, _)| ssrcs.contains(ssrc))
            .map(|&(_, lost)| lost)
            .max()
        else {
            continue;
        };
        let now = Instant::now();
        let rtt = pc
            .get_stats(now, StatsSelector::None)
            .await
            .candidate_pairs()
            .filter(|p| p.nominated && p.current_round_trip_time > 0.0)
            .map(|p| Duration::from_secs_f64(p.current_round_trip_time))
            .next();
        let loss = f32::from(lost) / 256.0;
        let sending = layers_to_send(&local, &uplink_cap).iter().rposition(|&s| s);
        if judge.on_report(now, Some(loss), rtt, sending) {
            tracing::debug!(cap = ?judge.cap, loss, ?rtt, "the uplink caps the video layers");
            uplink_cap.store(judge.cap.index().unwrap_or(0), Ordering::Relaxed);
        }
        // While a queue builds, resends would only lengthen it: the SFU's NACKs wait.
        hold_resends.store(judge.queue_building(), Ordering::Relaxed);
    }
}

/// Sends a pre-encoded clip's layers in a loop at its frame rate while `running`, those that
/// someone receives; a keyframe request, or a layer wanted again, starts the loop over (every
/// layer's first unit is a keyframe).
fn loop_clip(
    clip: EncodedClip,
    (local, uplink_cap): (LocalStream, Arc<AtomicUsize>),
    keyframes: Arc<[AtomicBool; 3]>,
    running: Arc<AtomicBool>,
    units: mpsc::Sender<Unit>,
    (frames, bytes): (Arc<AtomicU64>, Arc<AtomicU64>),
) {
    let (_, _, fps) = clip.format();
    let duration = Duration::from_secs_f32(1.0 / fps.max(1.0));
    let mut next = Instant::now();
    let mut frame = 0;
    let mut sending = [true; 3];
    while running.load(Ordering::Relaxed) && !clip.is_empty() {
        let wanted = layers_to_send(&local, &uplink_cap);
        if (0..3).any(|layer| wanted[layer] && !sending[layer]) {
            frame = 0;
        }
        sending = wanted;
        // Every layer's request is taken (and cleared): the loop restarts for all of them.
        let mut asked = false;
        for keyframe in keyframes.iter() {
            asked |= keyframe.swap(false, Ordering::Relaxed);
        }
        if asked {
            frame = 0;
        }
        for layer in (0..LAYERS.len()).rev().filter(|&layer| wanted[layer]) {
            let Some(data) = clip.unit(layer, frame) else { continue };
            let unit = (layer, Bytes::copy_from_slice(data), duration);
            if !send_unit(&units, unit, &bytes) {
                return;
            }
        }
        frames.fetch_add(1, Ordering::Relaxed);
        frame = (frame + 1) % clip.len();
        next += duration;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

/// The level of 20 ms of sound as RFC 6464 gives it: -dBov of its RMS (0 loudest, 127
/// silence), and voice when above -50 dBov.
fn audio_level(samples: &[f32]) -> AudioLevelExtension {
    let power = samples.iter().map(|s| s * s).sum::<f32>() / samples.len().max(1) as f32;
    let dbov = -10.0 * power.max(1e-13).log10();
    let level = dbov.clamp(0.0, 127.0).round() as u8;
    AudioLevelExtension {
        level,
        voice: level < 50,
    }
}

/// An access unit with the capture-time SEI placed before its first picture slice, after any
/// parameter sets (the order H.264 gives an access unit): a keyframe then still begins with its
/// SPS, which is where the SFU may switch a viewer to this layer.
fn with_capture_time(annex_b: &[u8], capture_us: u64) -> Vec<u8> {
    let sei = capture_time_sei(capture_us);
    let mut at = None;
    let mut i = 0;
    while i + 3 < annex_b.len() {
        if annex_b[i..i + 3] == [0, 0, 1] {
            if matches!(annex_b[i + 3] & 0x1f, 1..=5) {
                at = Some(if i > 0 && annex_b[i - 1] == 0 { i - 1 } else { i });
                break;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    let at = at.unwrap_or(0);
    let mut out = Vec::with_capacity(annex_b.len() + sei.len());
    out.extend_from_slice(&annex_b[..at]);
    out.extend_from_slice(&sei);
    out.extend_from_slice(&annex_b[at..]);
    out
}

/// The MID of the first video m-line of an SDP.
fn video_mid(sdp: &str) -> Option<&str> {
    let mut in_video = false;
    for line in sdp.lines() {
        if let Some(media) = line.strip_prefix("m=") {
            in_video = media.starts_with("video");
        } else if in_video && let Some(mid) = line.strip_prefix("a=mid:") {
            return Some(mid.trim());
        }
    }
    None
}

/// Runs one media connection of a publication until stopped or its path fails (see
/// [`peer::run_once`]); reports its quality through `events`. The encoder and audio tasks
/// end with it.
pub(crate) async fn run(
    signaling: Signaling,
    local: LocalStream,
    env: MediaEnv,
    events: EventSink,
    link: MediaLink,
    stop: oneshot::Receiver<()>,
) {
    let (stream_id, media_id) = (link.key.stream_id.clone(), link.generation);
    let setup = |pc: Peer, mut peer_events: PeerEvents, task: TaskLink| async move {
        let result = publish(&signaling, &stream_id, media_id, &local, &pc, &mut peer_events, task).await;
        (peer_events, result)
    };
    peer::run_once(&env, &events, link, stop, setup).await;
}

/// The packet loss Opus prepares its in-band FEC for.
const EXPECTED_AUDIO_LOSS_PERCENT: i32 = 10;

/// Sets up the publication on `pc`; the encoder thread and the sender tasks it starts run
/// while `running` is set.
async fn publish(
    signaling: &Signaling,
    stream_id: &StreamId,
    media_id: u64,
    local: &LocalStream,
    pc: &Peer,
    peer_events: &mut PeerEvents,
    link: TaskLink,
) -> Result<(), MediaError> {
    let TaskLink { events, running, probe } = link;
    // A new media connection starts with every layer, as the SFU expects of a new publisher;
    // it says again which it wants.
    local.set_layers_wanted(&VideoLayer::SENT);
    let (track, sender, ssrcs) = add_track(pc, stream_id, RtpCodecKind::Video, peer::h264_codec()).await?;
    let audio_source = local.audio();
    let audio = if audio_source == AudioSource::Off {
        None
    } else {
        let (track, sender, ssrcs) = add_track(pc, stream_id, RtpCodecKind::Audio, peer::opus_codec()).await?;
        Some((track, sender, ssrcs[0]))
    };
    let offer = peer::local_offer(pc, peer_events).await?;
    let mid = video_mid(&offer)
        .ok_or_else(|| MediaError::Negotiation("the offer has no video m-line".into()))?
        .to_owned();
    let layer_tracks: Vec<LayerTrack> = LAYERS
        .iter()
        .zip(&ssrcs)
        .map(|(layer, &ssrc)| LayerTrack {
            ssrc,
            extensions: vec![
                sdes(SDES_MID_URI, &mid),
                sdes(SDES_RTP_STREAM_ID_URI, layer.rid().unwrap_or_default()),
            ],
        })
        .collect();
    let response = signaling
        .request(Request::StartPublishing(PublishRequest {
            stream_id: stream_id.clone(),
            source: local.source(),
            extra_info: local.extra_info(),
            mute: local.mute(),
            sdp_offer: Some(offer),
            media_id: Some(media_id),
        }))
        .await
        .map_err(MediaError::Signaling)?;
    let ResponseBody::Publishing {
        sdp_answer: Some(answer),
    } = response
    else {
        return Err(MediaError::Negotiation(format!(
            "publish answered without SDP: {response:?}"
        )));
    };
    peer::apply_answer(pc, answer).await?;
    peer::wait_connected(peer_events).await?;
    let pt = negotiated_pt(&sender, &peer::h264_codec()).await?;
    if let Some((audio_track, audio_sender, audio_ssrc)) = audio {
        let audio_pt = negotiated_pt(&audio_sender, &peer::opus_codec()).await?;
        let mut encoder = opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)
            .map_err(|e| MediaError::Codec(format!("can't start the Opus encoder: {e}")))?;
        // In-band FEC: each packet carries a coarse copy of the one before, which a listener
        // decodes when that one is lost. Sized for the loss a poor network has.
        encoder
            .set_inband_fec(true)
            .and_then(|()| encoder.set_packet_loss_perc(EXPECTED_AUDIO_LOSS_PERCENT))
            .map_err(|e| MediaError::Codec(format!("can't turn on Opus FEC: {e}")))?;
        tokio::spawn(send_audio(
            audio_track,
            audio_ssrc,
            audio_pt,
            encoder,
            local.clone(),
            running.clone(),
        ));
    }
    let (width, height, fps) = local.video_format();
    // Per layer: a keyframe is wanted (a PLI names the layer's SSRC).
    let keyframes: Arc<[AtomicBool; 3]> = Arc::new([true, true, true].map(AtomicBool::new));
    let frames_encoded = Arc::new(AtomicU64::new(0));
    let bytes_encoded = Arc::new(AtomicU64::new(0));
    // The highest layer the uplink carries (an index into LAYERS), as its receiver reports tell.
    let uplink_cap = Arc::new(AtomicUsize::new(LAYERS.len() - 1));
    let (units_tx, mut units_rx) = mpsc::channel::<Unit>(8);
    if let Some(clip) = local.clip().cloned() {
        let counters = (frames_encoded.clone(), bytes_encoded.clone());
        let (local, keyframes, running) = (local.clone(), keyframes.clone(), running.clone());
        let uplink_cap = uplink_cap.clone();
        std::thread::Builder::new()
            .name(format!("clip-{stream_id}"))
            .spawn(move || loop_clip(clip, (local, uplink_cap), keyframes, running, units_tx, counters))
            .map_err(|e| MediaError::Connection(format!("can't start the clip thread: {e}")))?;
    } else {
        let preview = local.preview().clone();
        let local = local.clone();
        let uplink_cap = uplink_cap.clone();
        let keyframes = keyframes.clone();
        let running = running.clone();
        let frames_encoded = frames_encoded.clone();
        let bytes_encoded = bytes_encoded.clone();
        let mut encoders = LAYERS
            .iter()
            .map(|layer| {
                let scale = layer.scale_down();
                let settings = EncoderSettings::for_size(width / scale, height / scale, fps);
                H264Encoder::new(settings).map_err(|e| MediaError::Codec(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let duration = Duration::from_secs_f32(1.0 / fps.max(1.0));
        std::thread::Builder::new()
            .name(format!("encode-{stream_id}"))
            .spawn(move || {
                let mut seen = 0;
                // Layers nobody receives are not encoded (dynacast); one wanted again starts
                // with a keyframe.
                let mut sending = [true; 3];
                while running.load(Ordering::Relaxed) {
                    let Some(frame) = preview.wait_newer_than(seen, Duration::from_millis(200)) else {
                        if preview.is_closed() {
                            break;
                        }
                        continue;
                    };
                    seen = frame.sequence;
                    // The frame's capture time travels with each layer's picture, ahead of it.
                    let capture_us = unix_micros().saturating_sub(frame.at.elapsed().as_micros() as u64);
                    let wanted = layers_to_send(&local, &uplink_cap);
                    let half = (wanted[0] || wanted[1]).then(|| frame.frame.half()).flatten();
                    let quarter = wanted[0].then(|| half.as_ref().and_then(VideoFrame::half)).flatten();
                    let pictures = [quarter.as_ref(), half.as_ref(), Some(&frame.frame)];
                    // Highest first: the full picture is what most viewers near it see.
                    for layer in (0..LAYERS.len()).rev() {
                        if !wanted[layer] {
                            sending[layer] = false;
                            continue;
                        }
                        let Some(picture) = pictures[layer] else { continue };
                        let encoder = &mut encoders[layer];
                        let resumed = !std::mem::replace(&mut sending[layer], true);
                        if keyframes[layer].swap(false, Ordering::Relaxed) || resumed {
                            encoder.request_keyframe();
                        }
                        match encoder.encode(picture) {
                            Ok(Some(encoded)) => {
                                let data = with_capture_time(&encoded.data, capture_us);
                                if layer == LAYERS.len() - 1 {
                                    if let Some(probe) = &probe {
                                        probe.mark(capture_us, FrameStage::Encoded);
                                    }
                                    frames_encoded.fetch_add(1, Ordering::Relaxed);
                                }
                                let unit = (layer, Bytes::from(data), duration);
                                if !send_unit(&units_tx, unit, &bytes_encoded) {
                                    return;
                                }
                            }
                            Ok(None) => {}
                            Err(err) => tracing::warn!(%err, "encoding failed; frame dropped"),
                        }
                    }
                }
            })
            .map_err(|e| MediaError::Connection(format!("can't start the encoder thread: {e}")))?;
    }

    // Keyframe requests (PLI/FIR) from the SFU reach the track as RTCP events, naming the
    // layer's SSRC.
    {
        let track = track.clone();
        let keyframes = keyframes.clone();
        let ssrcs = ssrcs.clone();
        tokio::spawn(async move {
            while let Some(event) = track.poll().await {
                let TrackLocalEvent::OnRtcpPacket(packets) = event else {
                    continue;
                };
                let named: Vec<usize> = packets
                    .iter()
                    .flat_map(|p| p.destination_ssrc())
                    .filter_map(|ssrc| ssrcs.iter().position(|&s| s == ssrc))
                    .collect();
                if named.is_empty() {
                    keyframes.iter().for_each(|k| k.store(true, Ordering::Relaxed));
                }
                for layer in named {
                    keyframes[layer].store(true, Ordering::Relaxed);
                }
            }
        });
    }

    // The uplink: the SFU's receiver reports on the video, judged as the SFU judges downlinks.
    if let Some(reports) = peer_events.reports.take() {
        let judged = (local.clone(), uplink_cap.clone(), peer_events.hold_resends.clone());
        tokio::spawn(judge_uplink(
            pc.clone(),
            ssrcs.clone(),
            reports,
            judged,
            running.clone(),
        ));
    }

    // The sender: writes access units and reports quality.
    let pc_for_sender = pc.clone();
    let stream = stream_id.clone();
    let sender_running = running.clone();
    let (sent_local, sent_cap) = (local.clone(), uplink_cap.clone());
    tokio::spawn(async move {
        // Reports cover whole intervals from now: frames encoded while connecting are not counted
        // in the first, and a stalled runtime delays the next report instead of bursting.
        let mut quality_tick =
            tokio::time::interval_at(tokio::time::Instant::now() + QUALITY_INTERVAL, QUALITY_INTERVAL);
        quality_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = (
            Instant::now(),
            frames_encoded.load(Ordering::Relaxed),
            bytes_encoded.load(Ordering::Relaxed),
        );
        loop {
            tokio::select! {
                unit = units_rx.recv() => {
                    let Some(unit) = unit else { break };
                    let layer = &layer_tracks[unit.layer];
                    let sample = Sample {
                        data: unit.data,
                        duration: unit.duration,
                        ..Sample::new(Instant::now())
                    };
                    if let Err(err) = track.write_sample(layer.ssrc, pt, &sample, &layer.extensions).await {
                        tracing::debug!(%err, "sample not sent");
                    }
                }
                _ = quality_tick.tick() => {
                    let now = Instant::now();
                    let frames = frames_encoded.load(Ordering::Relaxed);
                    let bytes = bytes_encoded.load(Ordering::Relaxed);
                    let secs = now.duration_since(last.0).as_secs_f32().max(1e-3);
                    let report = pc_for_sender.get_stats(now, StatsSelector::None).await;
                    let rtt_ms = report
                        .candidate_pairs()
                        .filter(|p| p.nominated)
                        .map(|p| (p.current_round_trip_time * 1000.0) as f32)
                        .next();
                    // The size of the top layer being sent (none while nobody watches).
                    let scale = layers_to_send(&sent_local, &sent_cap)
                        .iter()
                        .rposition(|&s| s)
                        .map_or(0, |top| LAYERS[top].scale_down());
                    let _ = events.send(EngineEvent::PublishQualityUpdate {
                        stream_id: stream.clone(),
                        quality: StreamQuality {
                            width: width.checked_div(scale).unwrap_or(0),
                            height: height.checked_div(scale).unwrap_or(0),
                            fps: (frames - last.1) as f32 / secs,
                            kbps: (bytes - last.2) as f32 * 8.0 / 1000.0 / secs,
                            rtt_ms,
                            loss_fraction: 0.0,
                            frames,
                        },
                    });
                    last = (now, frames, bytes);
                }
            }
            if !sender_running.load(Ordering::Relaxed) {
                break;
            }
        }
    });
    Ok(())
}

/// Adds a sending track with its own SSRCs (webrtc-rs sends nothing for a track without one):
/// video as three simulcast encodings ([`LAYERS`], under their RIDs), each with an SSRC for
/// retransmissions, so the SFU can NACK what it missed; audio as one. Returns the SSRCs in the
/// order of [`LAYERS`].
async fn add_track(
    pc: &Peer,
    stream_id: &StreamId,
    kind: RtpCodecKind,
    codec: RTCRtpCodec,
) -> Result<(Arc<TrackLocalStaticSample>, Arc<dyn RtpSender>, Vec<u32>), MediaError> {
    let failed = |e: webrtc::error::Error| MediaError::Connection(e.to_string());
    let label = format!("{stream_id}-{kind}");
    let video = kind == RtpCodecKind::Video;
    let rids: Vec<&str> = if video {
        LAYERS.iter().filter_map(|l| l.rid()).collect()
    } else {
        vec![""]
    };
    let encodings: Vec<RTCRtpEncodingParameters> = rids
        .iter()
        .map(|rid| RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                rid: rid.to_string(),
                ssrc: Some(rand::random::<u32>() | 1),
                rtx: video.then(|| RTCRtpRtxParameters {
                    ssrc: rand::random::<u32>() | 1,
                }),
                ..Default::default()
            },
            codec: codec.clone(),
            ..Default::default()
        })
        .collect();
    let ssrcs = encodings.iter().filter_map(|e| e.rtp_coding_parameters.ssrc).collect();
    let track = MediaStreamTrack::new(stream_id.to_string(), label.clone(), label, kind, encodings);
    let track = Arc::new(TrackLocalStaticSample::new(Instant::now(), track).map_err(failed)?);
    let sender = pc
        .add_track(track.clone() as Arc<dyn TrackLocal>)
        .await
        .map_err(failed)?;
    Ok((track, sender, ssrcs))
}

/// The payload type the answer gave `codec`.
async fn negotiated_pt(sender: &Arc<dyn RtpSender>, codec: &RTCRtpCodec) -> Result<u8, MediaError> {
    let parameters = sender
        .get_parameters()
        .await
        .map_err(|e| MediaError::Connection(e.to_string()))?;
    parameters
        .rtp_parameters
        .codecs
        .iter()
        .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(&codec.mime_type))
        .map(|c| c.payload_type)
        .ok_or_else(|| MediaError::Negotiation(format!("{} was not negotiated", codec.mime_type)))
}

/// Sends 20 ms Opus packets of the stream's sound while `running` is set.
async fn send_audio(
    track: Arc<TrackLocalStaticSample>,
    ssrc: u32,
    pt: u8,
    mut encoder: opus::Encoder,
    local: LocalStream,
    running: Arc<AtomicBool>,
) {
    let mut tone = match local.audio() {
        AudioSource::Tone(frequency) => Some(Tone::new(frequency, 0.5)),
        _ => None,
    };
    let silence = vec![0f32; FRAME_SAMPLES];
    let mut recorded = Vec::with_capacity(FRAME_SAMPLES);
    let mut scaled = Vec::with_capacity(FRAME_SAMPLES);
    let mut packet = vec![0u8; 1500];
    let period = Duration::from_millis(20);
    let mut tick = tokio::time::interval(period);
    while running.load(Ordering::Relaxed) {
        tick.tick().await;
        let frame = tone.as_mut().map(Tone::next_frame);
        let samples = match (local.captured_audio(), &frame) {
            (Some(microphone), _) => {
                // Whatever the microphone has, topped up with silence if it is late.
                recorded.clear();
                let queued = microphone.len();
                if queued > 5 * FRAME_SAMPLES {
                    microphone.skip(queued - 2 * FRAME_SAMPLES); // a fast clock: stay close to live
                }
                microphone.take_into(FRAME_SAMPLES, &mut recorded);
                recorded.resize(FRAME_SAMPLES, 0.0);
                &recorded[..]
            }
            (None, Some(tone)) => &tone[..],
            (None, None) => &silence[..],
        };
        let samples = if local.is_audio_muted() { &silence[..] } else { samples };
        let volume = local.audio_volume();
        let samples = if volume == 1.0 {
            samples
        } else {
            scaled.clear();
            scaled.extend(samples.iter().map(|s| (s * volume).clamp(-1.0, 1.0)));
            &scaled[..]
        };
        let len = match encoder.encode_float(samples, &mut packet) {
            Ok(len) => len,
            Err(err) => {
                tracing::warn!(%err, "Opus encoding failed; audio frame dropped");
                continue;
            }
        };
        let sample = Sample {
            data: Bytes::copy_from_slice(&packet[..len]),
            duration: period,
            ..Sample::new(Instant::now())
        };
        let level = HeaderExtension::AudioLevel(audio_level(samples));
        if let Err(err) = track.write_sample(ssrc, pt, &sample, &[level]).await {
            tracing::debug!(%err, "audio sample not sent");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holoroom_protocol::timing::access_unit_capture_time;

    #[test]
    fn a_short_uplink_sends_the_best_layer_it_carries() {
        assert_eq!(within_uplink([true; 3], 2), [true; 3]);
        assert_eq!(
            within_uplink([false, false, true], 1),
            [false, true, false],
            "high wanted, medium instead"
        );
        assert_eq!(within_uplink([true, false, true], 0), [true, false, false]);
        assert_eq!(within_uplink([true, true, false], 1), [true, true, false]);
        assert_eq!(within_uplink([false; 3], 0), [false; 3], "nobody watches: nothing");
    }

    #[test]
    fn sound_levels_are_minus_dbov() {
        assert_eq!(audio_level(&[0.0; 960]).level, 127, "silence");
        let full: Vec<f32> = (0..960).map(|i| if i % 2 == 0 { 1.0 } else { -1.0 }).collect();
        assert_eq!(audio_level(&full).level, 0, "full scale");
        let tone = Tone::new(440.0, 0.5).next_frame();
        // A sine at half scale: RMS 0.354, -9 dBov.
        assert_eq!(audio_level(&tone).level, 9);
        assert!(audio_level(&tone).voice);
    }

    #[test]
    fn the_capture_time_goes_after_the_parameter_sets_and_before_the_picture() {
        let keyframe = [0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x68, 0xce, 0, 0, 0, 1, 0x65, 0x88];
        let out = with_capture_time(&keyframe, 1234);
        assert_eq!(&out[..12], &keyframe[..12], "SPS and PPS first");
        assert_eq!(out[16] & 0x1f, 6, "then the SEI");
        assert_eq!(&out[out.len() - 6..], &keyframe[12..], "then the IDR slice");
        assert_eq!(access_unit_capture_time(&out), Some(1234));
        let delta = [0, 0, 0, 1, 0x41, 0x9a];
        let out = with_capture_time(&delta, 99);
        assert_eq!(out[4] & 0x1f, 6, "a picture alone gets the SEI first");
        assert_eq!(access_unit_capture_time(&out), Some(99));
    }
}
