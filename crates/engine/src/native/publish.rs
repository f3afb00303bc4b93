//! Publishing one local stream: a peer connection to the SFU, an encoder thread that takes
//! the newest captured frame, and a sender task that hands access units to the track.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use holoroom_protocol::timing::{FrameStage, capture_time_sei};
use holoroom_protocol::{PublishRequest, Request, ResponseBody, StreamId};
use rtc::media::Sample;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RTCRtpRtxParameters, RtpCodecKind,
};
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
use crate::media::{FRAME_SAMPLES, SAMPLE_RATE, Tone, unix_micros};
use crate::signaling::Signaling;
use crate::stream::{AudioSource, LocalStream};

/// One encoded access unit on its way to the track.
struct Unit {
    data: Bytes,
    duration: Duration,
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
    let (track, sender, ssrc) = add_track(pc, stream_id, RtpCodecKind::Video, peer::h264_codec()).await?;
    let audio_source = local.audio();
    let audio = if audio_source == AudioSource::Off {
        None
    } else {
        Some(add_track(pc, stream_id, RtpCodecKind::Audio, peer::opus_codec()).await?)
    };
    let offer = peer::local_offer(pc, peer_events).await?;
    let response = signaling
        .request(Request::StartPublishing(PublishRequest {
            stream_id: stream_id.clone(),
            source: local.source(),
            extra_info: local.extra_info(),
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
    let settings = EncoderSettings::for_size(width, height, fps);
    let keyframe = Arc::new(AtomicBool::new(true));
    let frames_encoded = Arc::new(AtomicU64::new(0));
    let bytes_encoded = Arc::new(AtomicU64::new(0));
    let (units_tx, mut units_rx) = mpsc::channel::<Unit>(4);
    {
        let preview = local.preview().clone();
        let keyframe = keyframe.clone();
        let running = running.clone();
        let frames_encoded = frames_encoded.clone();
        let bytes_encoded = bytes_encoded.clone();
        let mut encoder = H264Encoder::new(settings).map_err(|e| MediaError::Codec(e.to_string()))?;
        let duration = Duration::from_secs_f32(1.0 / fps.max(1.0));
        std::thread::Builder::new()
            .name(format!("encode-{stream_id}"))
            .spawn(move || {
                let mut seen = 0;
                while running.load(Ordering::Relaxed) {
                    let Some(frame) = preview.wait_newer_than(seen, Duration::from_millis(200)) else {
                        if preview.is_closed() {
                            break;
                        }
                        continue;
                    };
                    seen = frame.sequence;
                    if keyframe.swap(false, Ordering::Relaxed) {
                        encoder.request_keyframe();
                    }
                    match encoder.encode(&frame.frame) {
                        Ok(Some(encoded)) => {
                            // The frame's capture time travels with it, ahead of its picture.
                            let capture_us = unix_micros().saturating_sub(frame.at.elapsed().as_micros() as u64);
                            let mut data = capture_time_sei(capture_us);
                            data.extend_from_slice(&encoded.data);
                            if let Some(probe) = &probe {
                                probe.mark(capture_us, FrameStage::Encoded);
                            }
                            frames_encoded.fetch_add(1, Ordering::Relaxed);
                            bytes_encoded.fetch_add(data.len() as u64, Ordering::Relaxed);
                            let unit = Unit {
                                data: Bytes::from(data),
                                duration,
                            };
                            if units_tx.blocking_send(unit).is_err() {
                                break;
                            }
                        }
                        Ok(None) => {}
                        Err(err) => tracing::warn!(%err, "encoding failed; frame dropped"),
                    }
                }
            })
            .map_err(|e| MediaError::Connection(format!("can't start the encoder thread: {e}")))?;
    }

    // Keyframe requests (PLI/FIR) from the SFU reach the track as RTCP events.
    {
        let track = track.clone();
        let keyframe = keyframe.clone();
        tokio::spawn(async move {
            while let Some(event) = track.poll().await {
                if let TrackLocalEvent::OnRtcpPacket(_) = event {
                    keyframe.store(true, Ordering::Relaxed);
                }
            }
        });
    }

    // The sender: writes access units and reports quality.
    let pc_for_sender = pc.clone();
    let stream = stream_id.clone();
    let sender_running = running.clone();
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
                    let sample = Sample {
                        data: unit.data,
                        duration: unit.duration,
                        ..Sample::new(Instant::now())
                    };
                    if let Err(err) = track.write_sample(ssrc, pt, &sample, &[]).await {
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
                    let _ = events.send(EngineEvent::PublishQualityUpdate {
                        stream_id: stream.clone(),
                        quality: StreamQuality {
                            width,
                            height,
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

/// Adds a sending track with its own SSRC (webrtc-rs sends nothing for a track without one);
/// video also gets an SSRC for retransmissions, so the SFU can NACK what it missed.
async fn add_track(
    pc: &Peer,
    stream_id: &StreamId,
    kind: RtpCodecKind,
    codec: RTCRtpCodec,
) -> Result<(Arc<TrackLocalStaticSample>, Arc<dyn RtpSender>, u32), MediaError> {
    let failed = |e: webrtc::error::Error| MediaError::Connection(e.to_string());
    let ssrc: u32 = rand::random::<u32>() | 1;
    let label = format!("{stream_id}-{kind}");
    let encoding = RTCRtpEncodingParameters {
        rtp_coding_parameters: RTCRtpCodingParameters {
            ssrc: Some(ssrc),
            rtx: (kind == RtpCodecKind::Video).then(|| RTCRtpRtxParameters {
                ssrc: rand::random::<u32>() | 1,
            }),
            ..Default::default()
        },
        codec,
        ..Default::default()
    };
    let track = MediaStreamTrack::new(stream_id.to_string(), label.clone(), label, kind, vec![encoding]);
    let track = Arc::new(TrackLocalStaticSample::new(Instant::now(), track).map_err(failed)?);
    let sender = pc
        .add_track(track.clone() as Arc<dyn TrackLocal>)
        .await
        .map_err(failed)?;
    Ok((track, sender, ssrc))
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
        if let Err(err) = track.write_sample(ssrc, pt, &sample, &[]).await {
            tracing::debug!(%err, "audio sample not sent");
        }
    }
}
