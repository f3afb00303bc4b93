//! Playing one remote stream: a receive-only peer connection to the SFU, the receive buffers
//! (video: reorder, NACK, whole decodable frames; audio: reorder, FEC, concealment), and a
//! decoder thread that fills the stream's latest-frame slot.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use holoroom_protocol::timing::{FrameProbe, FrameStage, access_unit_capture_time};
use holoroom_protocol::{PlayRequest, Request, ResponseBody, StreamId};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{TransportLayerNack, nack_pairs_from_sequence_numbers};
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tokio::sync::oneshot;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::StatsSelector;
use webrtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};

use super::peer::{self, Peer, PeerEvents};
use super::{MediaEnv, MediaLink, TaskLink};
use crate::codec::H264Decoder;
use crate::engine::{EngineEvent, EventSink, MediaError, QUALITY_INTERVAL, ReceiveReport, RemoteStream, StreamQuality};
use crate::media::{
    AudioBuffer, AudioJitterBuffer, AudioOutput, FRAME_SAMPLES, FrameSlot, ReceiveOutput, RtpIn, SAMPLE_RATE,
    VideoReceiveBuffer, read_frame_code,
};
use crate::signaling::Signaling;

/// Runs one media connection of a playback into `remote` until stopped or its path fails
/// (see [`peer::run_once`]). The stream's slot stays open: the next connection (after a
/// failure or a reconnect) fills the same one.
pub(crate) async fn run(
    signaling: Signaling,
    remote: RemoteStream,
    env: MediaEnv,
    events: EventSink,
    link: MediaLink,
    stop: oneshot::Receiver<()>,
) {
    let (stream_id, media_id) = (link.key.stream_id.clone(), link.generation);
    let setup = |pc: Peer, mut peer_events: PeerEvents, task: TaskLink| async move {
        let result = play(&signaling, &stream_id, media_id, &remote, &pc, &mut peer_events, task).await;
        (peer_events, result)
    };
    peer::run_once(&env, &events, link, stop, setup).await;
}

/// Sets up playback on `pc`; its tasks run while `running` is set.
async fn play(
    signaling: &Signaling,
    stream_id: &StreamId,
    media_id: u64,
    remote: &RemoteStream,
    pc: &Peer,
    peer_events: &mut PeerEvents,
    link: TaskLink,
) -> Result<(), MediaError> {
    let TaskLink { events, running, probe } = link;
    let slot = &remote.video;
    let failed = |e: webrtc::error::Error| MediaError::Connection(e.to_string());
    for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
        pc.add_transceiver_from_kind(
            kind,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                ..Default::default()
            }),
        )
        .await
        .map_err(failed)?;
    }
    let offer = peer::local_offer(pc, peer_events).await?;
    let response = signaling
        .request(Request::StartPlaying(PlayRequest {
            stream_id: stream_id.clone(),
            sdp_offer: Some(offer),
            media_id: Some(media_id),
            video_layer: Some(remote.layer.get()),
        }))
        .await
        .map_err(MediaError::Signaling)?;
    let ResponseBody::Playing {
        sdp_answer: Some(answer),
        ..
    } = response
    else {
        return Err(MediaError::Negotiation(format!(
            "play answered without SDP: {response:?}"
        )));
    };
    peer::apply_answer(pc, answer).await?;
    peer::wait_connected(peer_events).await?;

    let bytes_received = Arc::new(AtomicU64::new(0));
    // The round trip to the SFU as ICE measures it, for the receive buffer's pacing (µs, 0 = none yet).
    let rtt_us = Arc::new(AtomicU64::new(0));
    let mut tracks = std::mem::replace(&mut peer_events.tracks, tokio::sync::mpsc::unbounded_channel().1);
    let video_slot = slot.clone();
    let audio = remote.audio.clone();
    let report = remote.receive.clone();
    let bytes = bytes_received.clone();
    let rtt = rtt_us.clone();
    tokio::spawn(async move {
        while let Some(track) = tracks.recv().await {
            if track.kind().await == RtpCodecKind::Video {
                tokio::spawn(receive_video(
                    track,
                    video_slot.clone(),
                    report.clone(),
                    Counters {
                        bytes: bytes.clone(),
                        rtt_us: rtt.clone(),
                    },
                    probe.clone(),
                ));
            } else {
                tokio::spawn(receive_audio(track, audio.clone(), report.clone()));
            }
        }
    });

    // Quality reports from the slot's frame count and the transport's stats.
    let pc_for_stats = pc.clone();
    let stream = stream_id.clone();
    let slot = slot.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(QUALITY_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut last = (Instant::now(), slot.count(), 0u64);
        while running.load(Ordering::Relaxed) {
            tick.tick().await;
            let now = Instant::now();
            let frames = slot.count();
            let bytes = bytes_received.load(Ordering::Relaxed);
            let secs = now.duration_since(last.0).as_secs_f32().max(1e-3);
            let report = pc_for_stats.get_stats(now, StatsSelector::None).await;
            let (received, lost) = report.inbound_rtp_streams().fold((0i64, 0i64), |acc, s| {
                (
                    acc.0 + s.received_rtp_stream_stats.packets_received as i64,
                    acc.1 + s.received_rtp_stream_stats.packets_lost,
                )
            });
            let rtt_ms = report
                .candidate_pairs()
                .filter(|p| p.nominated)
                .map(|p| (p.current_round_trip_time * 1000.0) as f32)
                .next();
            if let Some(rtt) = rtt_ms.filter(|&ms| ms > 0.0) {
                rtt_us.store((rtt * 1000.0) as u64, Ordering::Relaxed);
            }
            let (width, height) = slot
                .latest()
                .map(|f| (f.frame.width, f.frame.height))
                .unwrap_or_default();
            let _ = events.send(EngineEvent::PlayQualityUpdate {
                stream_id: stream.clone(),
                quality: StreamQuality {
                    width,
                    height,
                    fps: (frames - last.1) as f32 / secs,
                    kbps: (bytes - last.2) as f32 * 8.0 / 1000.0 / secs,
                    rtt_ms,
                    loss_fraction: if received + lost > 0 {
                        lost.max(0) as f32 / (received + lost) as f32
                    } else {
                        0.0
                    },
                    frames,
                },
            });
            last = (now, frames, bytes);
        }
    });
    Ok(())
}

/// What a video receive loop shares with the playback's quality reports.
struct Counters {
    /// Payload bytes received.
    bytes: Arc<AtomicU64>,
    /// The round trip ICE measured (µs, 0 = none yet).
    rtt_us: Arc<AtomicU64>,
}

/// Reads a video track's RTP into the receive buffer, sends what it asks for (NACKs,
/// keyframe requests) and decodes the frames it hands out on a thread of their own; a frame
/// that would not decode makes the buffer wait for a keyframe.
async fn receive_video(
    track: Arc<dyn TrackRemote>,
    slot: FrameSlot,
    report: ReceiveReport,
    counters: Counters,
    probe: Option<FrameProbe>,
) {
    let Counters { bytes, rtt_us } = counters;
    let ssrc = track.ssrcs().await.first().copied().unwrap_or(0);
    let (units_tx, units_rx) = crossbeam_channel::bounded::<(Vec<u8>, Option<u64>)>(32);
    let decode_probe = probe.clone();
    let decode_slot = slot.clone();
    // Set by the decoder when a frame would not decode: what follows needs a keyframe.
    let decode_failed = Arc::new(AtomicBool::new(false));
    let failed = decode_failed.clone();
    let decode_report = report.clone();
    let decoder = std::thread::Builder::new().name("decode".into()).spawn(move || {
        let mut decoder = match H264Decoder::new() {
            Ok(decoder) => decoder,
            Err(err) => {
                tracing::error!(%err, "no H.264 decoder; video will not play");
                return;
            }
        };
        for (unit, capture_us) in units_rx {
            let started = Instant::now();
            let decoded = decoder.decode(&unit);
            decode_report.add_decode_time(started.elapsed());
            match decoded {
                Ok(Some(frame)) => {
                    if let (Some(probe), Some(capture_us)) = (&decode_probe, capture_us) {
                        probe.mark(capture_us, FrameStage::Decoded);
                    }
                    let code = read_frame_code(&frame);
                    decode_slot.put_captured(frame, code, capture_us);
                }
                Ok(None) => {}
                Err(err) => {
                    tracing::debug!(%err, "undecodable access unit dropped");
                    failed.store(true, Ordering::Relaxed);
                }
            }
        }
    });
    if decoder.is_err() {
        tracing::error!("can't start the decoder thread");
        return;
    }

    let mut buffer = VideoReceiveBuffer::new();
    loop {
        let Ok(packet) = next_packet(&track, buffer.next_timeout()).await else {
            break;
        };
        if let Some(packet) = packet {
            bytes.fetch_add(packet.payload.len() as u64, Ordering::Relaxed);
            report.add_video_bytes(packet.payload.len());
            buffer.insert(
                Instant::now(),
                RtpIn {
                    sequence_number: packet.header.sequence_number,
                    timestamp: packet.header.timestamp,
                    marker: packet.header.marker,
                    payload: &packet.payload,
                },
            );
        }
        if decode_failed.swap(false, Ordering::Relaxed) {
            buffer.lost_sync(Instant::now());
        }
        match rtt_us.load(Ordering::Relaxed) {
            0 => {}
            rtt => buffer.set_rtt(Duration::from_micros(rtt)),
        }
        while let Some(output) = buffer.poll(Instant::now()) {
            let rtcp: Box<dyn rtc::rtcp::Packet> = match output {
                ReceiveOutput::Frame(frame) => {
                    if frame.data.is_empty() {
                        continue;
                    }
                    let capture_us = access_unit_capture_time(&frame.data);
                    if let (Some(probe), Some(capture_us)) = (&probe, capture_us) {
                        probe.mark(capture_us, FrameStage::Received);
                    }
                    match units_tx.try_send((frame.data, capture_us)) {
                        Ok(()) => {}
                        Err(crossbeam_channel::TrySendError::Full(_)) => {
                            // What follows needs the dropped frame: start again at a keyframe.
                            tracing::debug!("decoder behind; waiting for a keyframe");
                            buffer.lost_sync(Instant::now());
                        }
                        // The decoder is gone (it could not start): nothing to play into.
                        Err(crossbeam_channel::TrySendError::Disconnected(_)) => return,
                    }
                    continue;
                }
                ReceiveOutput::Nack(seqs) => Box::new(TransportLayerNack {
                    sender_ssrc: 0,
                    media_ssrc: ssrc,
                    nacks: nack_pairs_from_sequence_numbers(&seqs),
                }),
                ReceiveOutput::RequestKeyframe => Box::new(PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc: ssrc,
                }),
            };
            if let Err(err) = track.write_rtcp(vec![rtcp]).await {
                tracing::debug!(%err, "feedback not sent");
            }
        }
        report.set_video(buffer.stats());
    }
}

/// The track has ended.
struct Ended;

/// The next RTP packet of `track`, or None once `wake` (a receive buffer's timer) is due.
async fn next_packet(track: &Arc<dyn TrackRemote>, wake: Option<Instant>) -> Result<Option<rtc::rtp::Packet>, Ended> {
    let timer = async {
        match wake {
            Some(at) => tokio::time::sleep_until(at.into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        event = track.poll() => match event {
            Some(TrackRemoteEvent::OnRtpPacket(packet)) => Ok(Some(packet)),
            Some(TrackRemoteEvent::OnEnded) | None => Err(Ended),
            Some(_) => Ok(None),
        },
        () = timer => Ok(None),
    }
}

/// Reads an audio track's Opus packets through the jitter buffer and decodes them into the
/// stream's audio buffer: in order, lost packets recovered from FEC or concealed.
async fn receive_audio(track: Arc<dyn TrackRemote>, audio: AudioBuffer, report: ReceiveReport) {
    let mut decoder = match opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono) {
        Ok(decoder) => decoder,
        Err(err) => {
            tracing::error!(%err, "no Opus decoder; audio will not play");
            return;
        }
    };
    // Room for the longest Opus packet (120 ms).
    let mut pcm = vec![0f32; FRAME_SAMPLES * 6];
    let mut buffer = AudioJitterBuffer::new();
    // The duration of the last packet decoded: what a lost one is assumed to have lasted.
    let mut packet_samples = FRAME_SAMPLES;
    loop {
        let Ok(packet) = next_packet(&track, buffer.next_timeout()).await else {
            break;
        };
        if let Some(packet) = packet {
            buffer.insert(
                Instant::now(),
                packet.header.sequence_number,
                packet.header.timestamp,
                &packet.payload,
            );
        }
        while let Some(output) = buffer.poll(Instant::now()) {
            let decoded = match &output {
                AudioOutput::Packet(payload) => decoder.decode_float(payload, &mut pcm, false),
                AudioOutput::Fec(next) => decoder.decode_float(next, &mut pcm[..packet_samples], true),
                AudioOutput::Conceal => decoder.decode_float(&[], &mut pcm[..packet_samples], false),
            };
            match decoded {
                Ok(n) => {
                    if matches!(output, AudioOutput::Packet(_)) {
                        packet_samples = n.clamp(1, FRAME_SAMPLES * 6);
                    }
                    audio.push(&pcm[..n]);
                }
                Err(err) => tracing::debug!(%err, "undecodable Opus packet dropped"),
            }
        }
        report.set_audio(buffer.stats());
    }
}
