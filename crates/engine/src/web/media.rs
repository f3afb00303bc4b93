//! Publishing and playing in the browser: one RTCPeerConnection per stream to the SFU, with
//! the same offer/answer exchange as the desktop client. The browser encodes the camera and
//! decodes what it plays; played pictures are tapped into the stream's frame slot and its
//! sound into the stream's audio buffer, where the app takes them as on the desktop.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use holoroom_protocol::{PlayRequest, PublishRequest, Request, ResponseBody, StreamId, VideoLayer};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{
    AudioContext, MediaStream, RtcIceGatheringState, RtcPeerConnection, RtcPeerConnectionState,
    RtcRtpTransceiverDirection, RtcRtpTransceiverInit, RtcSdpType, RtcSessionDescriptionInit, RtcTrackEvent,
};

use super::MediaLink;
use super::capture::{VideoTap, local_media};
use super::signaling::Signaling;
use super::util::{describe, resolve, sleep};
use super::worklet::AudioTap;
use crate::engine::{EngineEvent, EventSink, MediaError, QUALITY_INTERVAL, RemoteStream, StreamQuality};
use crate::media::SAMPLE_RATE;
use crate::stream::LocalStream;

type TrackHandler = Closure<dyn FnMut(RtcTrackEvent)>;

/// One media connection and what hangs off it. Closing it ends everything.
#[derive(Default)]
pub(crate) struct MediaSession {
    pc: RefCell<Option<RtcPeerConnection>>,
    closed: Cell<bool>,
    video: RefCell<Option<VideoTap>>,
    audio: RefCell<Option<AudioTap>>,
    _on_track: RefCell<Option<TrackHandler>>,
}

impl MediaSession {
    /// Sets the connection, unless the session closed meanwhile (then it is closed at once).
    fn attach(&self, pc: &RtcPeerConnection) -> Result<(), MediaError> {
        if self.is_closed() {
            pc.close();
            return Err(connection_error("stopped"));
        }
        *self.pc.borrow_mut() = Some(pc.clone());
        Ok(())
    }

    /// Ends the connection and what hangs off it (the stream's slot stays open: the room
    /// machine closes it when the stream ends for good).
    pub fn close(&self) {
        self.closed.set(true);
        self.drop_connection();
    }

    fn drop_connection(&self) {
        if let Some(pc) = self.pc.borrow_mut().take() {
            pc.close();
        }
        self.video.borrow_mut().take();
        self.audio.borrow_mut().take();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }
}

fn connection_error(what: impl Into<String>) -> MediaError {
    MediaError::Connection(what.into())
}

fn negotiation_error(what: impl Into<String>) -> MediaError {
    MediaError::Negotiation(what.into())
}

fn new_pc() -> Result<RtcPeerConnection, MediaError> {
    RtcPeerConnection::new().map_err(|e| negotiation_error(describe(e)))
}

/// Offers, sends the offer with `request`, applies the answer and waits for the connection.
async fn negotiate(
    pc: &RtcPeerConnection,
    session: &MediaSession,
    signaling: &Signaling,
    request: impl FnOnce(String) -> Request,
) -> Result<ResponseBody, MediaError> {
    let offer = resolve(pc.create_offer()).await.map_err(negotiation_error)?;
    let sdp = js_sys::Reflect::get(&offer, &"sdp".into())
        .ok()
        .and_then(|s| s.as_string())
        .ok_or_else(|| negotiation_error("the browser made an offer without SDP"))?;
    let description = RtcSessionDescriptionInit::new(RtcSdpType::Offer);
    description.set_sdp(&sdp);
    resolve(pc.set_local_description(&description))
        .await
        .map_err(negotiation_error)?;
    // The SFU is ICE-lite and learns addresses from checks; the offer goes out with the
    // host candidates gathered, without trickling.
    for _ in 0..150 {
        if pc.ice_gathering_state() == RtcIceGatheringState::Complete {
            break;
        }
        sleep(Duration::from_millis(20)).await;
    }
    let sdp = pc
        .local_description()
        .map(|d| d.sdp())
        .ok_or_else(|| connection_error("no local description"))?;
    // Stopped while gathering: the offer must not reach the server (a stop was sent already).
    if session.is_closed() {
        return Err(connection_error("stopped"));
    }
    let response = signaling.request(request(sdp)).await.map_err(MediaError::Signaling)?;
    let answer = match &response {
        ResponseBody::Publishing {
            sdp_answer: Some(answer),
        }
        | ResponseBody::Playing {
            sdp_answer: Some(answer),
            ..
        } => answer.clone(),
        other => return Err(negotiation_error(format!("answered without SDP: {other:?}"))),
    };
    let description = RtcSessionDescriptionInit::new(RtcSdpType::Answer);
    description.set_sdp(&answer);
    resolve(pc.set_remote_description(&description))
        .await
        .map_err(negotiation_error)?;
    for _ in 0..500 {
        match pc.connection_state() {
            RtcPeerConnectionState::Connected => return Ok(response),
            RtcPeerConnectionState::Failed | RtcPeerConnectionState::Closed => {
                return Err(connection_error("the media connection failed"));
            }
            _ => sleep(Duration::from_millis(20)).await,
        }
    }
    Err(connection_error("the media connection did not come up within 10 s"))
}

/// Video counters of one direction, read from the connection's statistics.
#[derive(Debug, Default, Clone)]
struct VideoStats {
    /// Each video RTP stream (a simulcast layer when publishing): its RID, frames so far, size.
    streams: Vec<(String, u64, u32, u32)>,
    /// Bytes of all of them.
    bytes: u64,
    lost: i64,
    received: u64,
    /// What the receiving side reported lost (publishing), 0 to 1.
    fraction_lost: Option<f32>,
    rtt_ms: Option<f32>,
}

/// Reads `getStats`: the outbound (publishing) or inbound (playing) video RTP stream, and the
/// round-trip time of the nominated candidate pair.
async fn video_stats(pc: &RtcPeerConnection, publishing: bool) -> Option<VideoStats> {
    let report = resolve(pc.get_stats()).await.ok()?;
    let values: js_sys::Function = js_sys::Reflect::get(&report, &"values".into()).ok()?.dyn_into().ok()?;
    let iterator = values.call0(&report).ok()?;
    let get = |entry: &JsValue, key: &str| js_sys::Reflect::get(entry, &key.into()).ok();
    let number = |entry: &JsValue, key: &str| get(entry, key).and_then(|v| v.as_f64());
    let text = |entry: &JsValue, key: &str| get(entry, key).and_then(|v| v.as_string());
    let wanted = if publishing { "outbound-rtp" } else { "inbound-rtp" };
    let mut stats = VideoStats::default();
    for entry in js_sys::try_iter(&iterator).ok()??.flatten() {
        let kind = text(&entry, "type").unwrap_or_default();
        if kind == wanted && text(&entry, "kind").as_deref() == Some("video") {
            let frames_key = if publishing { "framesEncoded" } else { "framesDecoded" };
            let bytes_key = if publishing { "bytesSent" } else { "bytesReceived" };
            stats.streams.push((
                text(&entry, "rid").unwrap_or_default(),
                number(&entry, frames_key).unwrap_or(0.0) as u64,
                number(&entry, "frameWidth").unwrap_or(0.0) as u32,
                number(&entry, "frameHeight").unwrap_or(0.0) as u32,
            ));
            stats.bytes += number(&entry, bytes_key).unwrap_or(0.0) as u64;
            stats.lost += number(&entry, "packetsLost").unwrap_or(0.0) as i64;
            stats.received += number(&entry, "packetsReceived").unwrap_or(0.0) as u64;
        } else if publishing && kind == "remote-inbound-rtp" && text(&entry, "kind").as_deref() == Some("video") {
            stats.fraction_lost = number(&entry, "fractionLost").map(|f| f as f32);
        } else if kind == "candidate-pair" && get(&entry, "nominated").and_then(|v| v.as_bool()) == Some(true) {
            stats.rtt_ms = number(&entry, "currentRoundTripTime").map(|s| (s * 1000.0) as f32);
        }
    }
    Some(stats)
}

/// How long a connection may stay disconnected before its media path counts as failed (as
/// on the desktop: 3 s of silence to disconnected, then 4 s more).
const DISCONNECTED_FOR: Duration = Duration::from_secs(4);
/// How often the connection's state is looked at.
const WATCH_TICK: Duration = Duration::from_millis(250);

/// Watches a running connection: reports publish or play quality every
/// [`QUALITY_INTERVAL`], and returns when the session closes (None) or the media path fails
/// (the connection failed or stayed disconnected for [`DISCONNECTED_FOR`]).
async fn watch(
    session: &MediaSession,
    stream_id: &StreamId,
    publishing: bool,
    events: &EventSink,
) -> Option<MediaError> {
    let mut last: Option<(f64, VideoStats)> = None;
    let mut next_report = js_sys::Date::now() + QUALITY_INTERVAL.as_secs_f64() * 1000.0;
    let mut disconnected_since: Option<f64> = None;
    loop {
        sleep(WATCH_TICK).await;
        if session.is_closed() {
            return None;
        }
        let pc = session.pc.borrow().clone()?;
        let at = js_sys::Date::now();
        match pc.connection_state() {
            RtcPeerConnectionState::Failed | RtcPeerConnectionState::Closed => {
                return Some(connection_error("the media connection failed"));
            }
            RtcPeerConnectionState::Disconnected => {
                let since = *disconnected_since.get_or_insert(at);
                if at - since >= DISCONNECTED_FOR.as_secs_f64() * 1000.0 {
                    return Some(connection_error("the media path has been silent too long"));
                }
            }
            _ => disconnected_since = None,
        }
        if at < next_report {
            continue;
        }
        next_report = at + QUALITY_INTERVAL.as_secs_f64() * 1000.0;
        let Some(now) = video_stats(&pc, publishing).await else {
            continue;
        };
        if let Some((then, before)) = last {
            let secs = ((at - then) / 1000.0).max(1e-3) as f32;
            let lost = (now.lost - before.lost).max(0) as f32;
            let received = now.received.saturating_sub(before.received) as f32;
            // The largest stream that moved (when publishing simulcast, the top layer sent).
            let (frames, width, height) = now
                .streams
                .iter()
                .filter_map(|(rid, frames, width, height)| {
                    let (_, then, ..) = before.streams.iter().find(|s| s.0 == *rid)?;
                    let moved = frames.saturating_sub(*then);
                    (moved > 0).then_some((moved, *width, *height))
                })
                .max_by_key(|&(_, _, height)| height)
                .unwrap_or_default();
            let quality = StreamQuality {
                width,
                height,
                fps: frames as f32 / secs,
                kbps: now.bytes.saturating_sub(before.bytes) as f32 * 8.0 / 1000.0 / secs,
                rtt_ms: now.rtt_ms,
                loss_fraction: if lost + received > 0.0 {
                    lost / (lost + received)
                } else {
                    0.0
                },
                frames: now.streams.iter().map(|s| s.1).max().unwrap_or(0),
            };
            let event = if publishing {
                EngineEvent::PublishQualityUpdate {
                    stream_id: stream_id.clone(),
                    quality,
                }
            } else {
                EngineEvent::PlayQualityUpdate {
                    stream_id: stream_id.clone(),
                    quality,
                }
            };
            if session.is_closed() {
                return None;
            }
            let _ = events.send(event);
        }
        last = Some((at, now));
    }
}

/// Runs one media connection: sets it up with `setup`, reports it up, then watches it
/// (quality reports) until the session is closed or its media path fails, and reports the
/// end to the room machine, which decides what comes next.
async fn run_once<F: Future<Output = Result<(), MediaError>>>(
    session: Rc<MediaSession>,
    publishing: bool,
    events: EventSink,
    link: MediaLink,
    setup: F,
) {
    let result = setup.await;
    let error = match result {
        _ if session.is_closed() => None,
        Ok(()) => {
            link.up();
            watch(&session, &link.key.stream_id, publishing, &events).await
        }
        Err(error) => Some(error),
    };
    session.drop_connection();
    link.ended(error);
}

/// The simulcast encodings a browser sends: layers of [`VideoLayer::SENT`] under their RIDs,
/// scaled down and capped in bitrate as the desktop's encoders are. Browsers send fewer layers
/// for smaller pictures (Chromium: three from 960x540, two from 480x270) and drop the last
/// listed, so only the layers that will be sent are listed: the top ones.
fn simulcast_encodings(local: &LocalStream) -> js_sys::Array {
    let (width, height, fps) = local.video_format();
    let layers = match width * height {
        pixels if pixels >= 960 * 540 => &VideoLayer::SENT[..],
        pixels if pixels >= 480 * 270 => &VideoLayer::SENT[1..],
        _ => &VideoLayer::SENT[2..],
    };
    let encodings = js_sys::Array::new();
    for &layer in layers {
        let (Some(rid), scale) = (layer.rid(), layer.scale_down()) else {
            continue;
        };
        let encoding = js_sys::Object::new();
        let set = |key: &str, value: JsValue| {
            let _ = js_sys::Reflect::set(&encoding, &JsValue::from_str(key), &value);
        };
        set("rid", JsValue::from_str(rid));
        set("scaleResolutionDownBy", JsValue::from_f64(f64::from(scale)));
        let bitrate = crate::stream::video_bitrate(width / scale, height / scale, fps);
        set("maxBitrate", JsValue::from_f64(f64::from(bitrate)));
        encodings.push(&encoding);
    }
    encodings
}

/// Turns the browser's simulcast encodings on and off as the server says someone receives
/// their layers (dynacast), looking four times a second while the media connection lasts.
async fn follow_layers_wanted(sender: JsValue, local: LocalStream, session: Rc<MediaSession>) {
    let mut applied = None;
    while !session.is_closed() {
        let wanted = [0, 1, 2].map(|layer| local.layer_wanted(layer));
        if applied != Some(wanted) {
            match set_encodings_active(&sender, wanted).await {
                Ok(()) => applied = Some(wanted),
                Err(err) => tracing::debug!(%err, "the simulcast encodings could not be switched"),
            }
        }
        sleep(Duration::from_millis(250)).await;
    }
}

/// `sender.setParameters` with each encoding `active` as its layer is wanted.
async fn set_encodings_active(sender: &JsValue, wanted: [bool; 3]) -> Result<(), String> {
    let call = |name: &str, args: &js_sys::Array| -> Result<JsValue, String> {
        let method: js_sys::Function = js_sys::Reflect::get(sender, &JsValue::from_str(name))
            .map_err(describe)?
            .dyn_into()
            .map_err(|_| format!("the sender has no {name}"))?;
        method.apply(sender, args).map_err(describe)
    };
    let parameters = call("getParameters", &js_sys::Array::new())?;
    let encodings: js_sys::Array = js_sys::Reflect::get(&parameters, &JsValue::from_str("encodings"))
        .map_err(describe)?
        .dyn_into()
        .map_err(|_| "the sender's parameters have no encodings".to_string())?;
    for encoding in encodings.iter() {
        let rid = js_sys::Reflect::get(&encoding, &JsValue::from_str("rid"))
            .ok()
            .and_then(|rid| rid.as_string())
            .unwrap_or_default();
        if let Some(layer) = VideoLayer::from_rid(&rid).index() {
            js_sys::Reflect::set(
                &encoding,
                &JsValue::from_str("active"),
                &JsValue::from_bool(wanted[layer]),
            )
            .map_err(describe)?;
        }
    }
    let promise: js_sys::Promise = call("setParameters", &js_sys::Array::of1(&parameters))?
        .dyn_into()
        .map_err(|_| "setParameters did not return a promise".to_string())?;
    resolve(promise).await.map(drop)
}

/// Publishes local stream `local` (its camera and microphone) as `stream_id`.
pub(crate) async fn publish(
    signaling: Signaling,
    local: LocalStream,
    events: EventSink,
    link: MediaLink,
    session: Rc<MediaSession>,
) {
    let (stream_id, media_id) = (link.key.stream_id.clone(), link.generation);
    let setup = {
        let session = session.clone();
        async move {
            let camera = local_media(local.key()).await.map_err(MediaError::Capture)?;
            // A new media connection starts with every layer, as the SFU expects of a new
            // publisher; it says again which it wants.
            local.set_layers_wanted(&VideoLayer::SENT);
            let pc = new_pc()?;
            session.attach(&pc)?;
            let mut video_sender = None;
            for track in camera.get_tracks().iter() {
                let Ok(track) = track.dyn_into::<web_sys::MediaStreamTrack>() else {
                    continue;
                };
                let init = RtcRtpTransceiverInit::new();
                init.set_direction(RtcRtpTransceiverDirection::Sendonly);
                init.set_streams(&js_sys::Array::of1(&camera));
                if track.kind() == "video" {
                    init.set_send_encodings(&simulcast_encodings(&local));
                }
                let transceiver = pc.add_transceiver_with_media_stream_track_and_init(&track, &init);
                if track.kind() == "video" {
                    video_sender = js_sys::Reflect::get(&transceiver, &JsValue::from_str("sender")).ok();
                }
            }
            if session.is_closed() {
                return Err(connection_error("stopped"));
            }
            let request = |sdp| {
                Request::StartPublishing(PublishRequest {
                    stream_id: stream_id.clone(),
                    source: local.source(),
                    extra_info: local.extra_info(),
                    mute: local.mute(),
                    sdp_offer: Some(sdp),
                    media_id: Some(media_id),
                })
            };
            negotiate(&pc, &session, &signaling, request).await?;
            if let Some(sender) = video_sender {
                wasm_bindgen_futures::spawn_local(follow_layers_wanted(sender, local.clone(), session.clone()));
            }
            Ok(())
        }
    };
    run_once(session, true, events, link, setup).await;
}

/// Plays `stream_id` into `remote`: pictures into its slot, sound into its buffer.
pub(crate) async fn play(
    signaling: Signaling,
    remote: RemoteStream,
    events: EventSink,
    link: MediaLink,
    session: Rc<MediaSession>,
) {
    let (stream_id, media_id) = (link.key.stream_id.clone(), link.generation);
    let setup = {
        let session = session.clone();
        async move {
            let pc = new_pc()?;
            session.attach(&pc)?;
            for kind in ["video", "audio"] {
                let init = RtcRtpTransceiverInit::new();
                init.set_direction(RtcRtpTransceiverDirection::Recvonly);
                pc.add_transceiver_with_str_and_init(kind, &init);
            }
            let on_track = {
                let session = Rc::downgrade(&session);
                let remote = remote.clone();
                Closure::<dyn FnMut(RtcTrackEvent)>::new(move |event: RtcTrackEvent| {
                    let Some(session) = session.upgrade() else { return };
                    let track = event.track();
                    let Ok(stream) = MediaStream::new() else { return };
                    stream.add_track(&track);
                    if track.kind() == "video" {
                        match VideoTap::new(&stream, remote.video.clone(), 30.0) {
                            Ok(tap) => *session.video.borrow_mut() = Some(tap),
                            Err(err) => tracing::warn!(%err, "can't show the video"),
                        }
                    } else {
                        // The tap's processor may still be loading: it joins when ready.
                        let (session, into) = (Rc::downgrade(&session), remote.audio.clone());
                        wasm_bindgen_futures::spawn_local(async move {
                            match AudioTap::new(&stream, into).await {
                                Ok(tap) => {
                                    if let Some(session) = session.upgrade().filter(|s| !s.is_closed()) {
                                        *session.audio.borrow_mut() = Some(tap);
                                    }
                                }
                                Err(err) => tracing::warn!(%err, "can't take the sound"),
                            }
                        });
                    }
                })
            };
            pc.set_ontrack(Some(on_track.as_ref().unchecked_ref()));
            *session._on_track.borrow_mut() = Some(on_track);
            let request = |sdp| {
                Request::StartPlaying(PlayRequest {
                    stream_id: stream_id.clone(),
                    sdp_offer: Some(sdp),
                    media_id: Some(media_id),
                    video_layer: Some(remote.layer.get()),
                })
            };
            negotiate(&pc, &session, &signaling, request).await.map(drop)
        }
    };
    run_once(session, false, events, link, setup).await;
}

thread_local! {
    static AUDIO: RefCell<Option<AudioContext>> = const { RefCell::new(None) };
}

/// The page's audio context at 48 kHz, made once.
pub(crate) fn audio_context() -> Result<AudioContext, String> {
    AUDIO.with(|audio| {
        if let Some(context) = audio.borrow().as_ref() {
            let _ = context.resume();
            return Ok(context.clone());
        }
        let options = web_sys::AudioContextOptions::new();
        options.set_sample_rate(SAMPLE_RATE as f32);
        let context = AudioContext::new_with_context_options(&options).map_err(describe)?;
        // Browsers start sound only after the person interacts with the page: resume then.
        if let Some(document) = web_sys::window().and_then(|w| w.document()) {
            let resume = {
                let context = context.clone();
                Closure::<dyn FnMut()>::new(move || {
                    let _ = context.resume();
                })
            };
            for event in ["pointerdown", "keydown"] {
                let _ = document.add_event_listener_with_callback(event, resume.as_ref().unchecked_ref());
            }
            // Lives as long as the page, like the context.
            resume.forget();
        }
        *audio.borrow_mut() = Some(context.clone());
        Ok(context)
    })
}
