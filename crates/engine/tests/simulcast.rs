//! Simulcast end to end over loopback: the desktop engine publishes three layers, the SFU
//! forwards the one each viewer asks for, and switching or pausing keeps the picture whole.
//! Real WebRTC (webrtc-rs to str0m and back) and real codecs.

use std::time::{Duration, Instant};

use holoroom_engine::media::FrameSlot;
use holoroom_engine::protocol::{RoomId, VideoLayer};
use holoroom_engine::{RemoteStream, StreamConfig};
use holoroom_server::Server;
use tokio::sync::Mutex;

mod common;

use common::{join, play, publish, stream};

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

async fn server() -> Server {
    common::server(b"simulcast-test-secret-0123").await
}

/// The picture size of each layer of a 640x360 stream.
fn size_of(layer: VideoLayer) -> (u32, u32) {
    match layer {
        VideoLayer::Low => (160, 90),
        VideoLayer::Medium => (320, 180),
        _ => (640, 360),
    }
}

/// Follows the frames of a slot: every one must carry a frame code higher than the last
/// (but once after [`Watch::may_repeat_once`]).
struct Watch {
    seen: u64,
    last_code: u32,
    repeat_allowed: bool,
}

impl Watch {
    fn new() -> Watch {
        Watch {
            seen: 0,
            last_code: 0,
            repeat_allowed: false,
        }
    }

    /// The next switch is to a layer the publisher had stopped (dynacast): its RTP clock stood
    /// still meanwhile, so the SFU cannot place its first keyframe in time by the sender
    /// reports and times the switch by arrival, which may show the last moment once more.
    fn may_repeat_once(&mut self) {
        self.repeat_allowed = true;
    }

    /// Waits up to `limit` for a frame of `size`; returns how long it took.
    async fn until_size(&mut self, video: &FrameSlot, size: (u32, u32), limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(frame) = video.newer_than(self.seen) {
                self.seen = frame.sequence;
                let code = frame.code.unwrap_or_else(|| {
                    panic!(
                        "a {}x{} frame without a readable code",
                        frame.frame.width, frame.frame.height
                    )
                });
                let repeat = code.frame_number == self.last_code && std::mem::take(&mut self.repeat_allowed);
                assert!(
                    code.frame_number > self.last_code || repeat,
                    "frame codes go up across switches: {} after {}",
                    code.frame_number,
                    self.last_code
                );
                self.last_code = code.frame_number;
                if (frame.frame.width, frame.frame.height) == size {
                    return Some(start.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_layer_decodes_at_its_size_and_switching_keeps_the_picture_going() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut call = alice_to_bob().await;
    let (server, bob, remote, watch) = (&call.server, &call.bob, &call.remote, &mut call.watch);
    // All three layers arrive at first (layers nobody wants stop a while later).
    assert_eq!(
        server
            .layers_sent(&RoomId::new("r").expect("valid"), &stream("alice-cam"))
            .await
            .expect("layers"),
        VideoLayer::SENT,
        "the desktop sends all three layers"
    );
    // The SFU tells frames of one moment apart across layers by the publisher's sender
    // reports, which come within about a second: switching starts after that.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let dropped_before = remote.receive.video().frames_dropped;
    // Every layer, then up and down twenty times.
    let mut plan = vec![VideoLayer::Low, VideoLayer::Medium, VideoLayer::High];
    plan.extend([VideoLayer::Low, VideoLayer::High].repeat(10));
    let mut took = Vec::new();
    for layer in plan {
        bob.set_video_layer(stream("alice-cam"), layer);
        let time = watch
            .until_size(&remote.video, size_of(layer), Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("a {layer:?} picture after switching to it"));
        took.push(time);
        // A few frames of the layer before the next switch.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    took.sort();
    println!(
        "layer switch to first frame: median {:?}, worst {:?} of {}",
        took[took.len() / 2],
        took[took.len() - 1],
        took.len()
    );
    let stats = remote.receive.video();
    assert_eq!(
        stats.frames_dropped, dropped_before,
        "no frame failed to decode across the switches: {stats:?}"
    );
    let counters = server.media_counters().await.expect("counters");
    assert!(counters.layer_switches >= 23, "{counters:?}");
}

/// Alice publishing the 640x360 pattern and Bob playing it, seen at full size.
struct Pair {
    server: Server,
    _alice: holoroom_engine::Engine,
    bob: holoroom_engine::Engine,
    _camera: holoroom_engine::LocalStream,
    remote: RemoteStream,
    watch: Watch,
}

async fn alice_to_bob() -> Pair {
    let server = server().await;
    let alice = join(&server, "alice").await;
    let bob = join(&server, "bob").await;
    let camera = publish(&alice, "alice-cam", StreamConfig::test_pattern(640, 360, 15.0)).await;
    let (remote, _) = play(&bob, "alice-cam").await;
    let mut watch = Watch::new();
    watch
        .until_size(&remote.video, size_of(VideoLayer::High), Duration::from_secs(10))
        .await
        .expect("a picture at full size");
    Pair {
        server,
        _alice: alice,
        bob,
        _camera: camera,
        remote,
        watch,
    }
}

/// Video packets that reached the player so far.
fn packets(remote: &RemoteStream) -> u64 {
    remote.receive.video().packets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_stream_sends_no_video_and_resumes_with_a_picture_while_sound_goes_on() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut call = alice_to_bob().await;
    let (bob, remote, watch) = (&call.bob, &call.remote, &mut call.watch);

    bob.set_video_layer(stream("alice-cam"), VideoLayer::Off);
    // What was on its way when the pause arrived may still land.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (video_before, frames_before) = (packets(remote), remote.video.count());
    let _ = remote.audio.take(remote.audio.len());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(packets(remote), video_before, "no video packets while paused");
    assert_eq!(remote.video.count(), frames_before, "no frames while paused");
    assert!(
        remote.audio.len() >= 24_000,
        "the sound goes on while the video is paused: {} samples in 1 s",
        remote.audio.len()
    );

    let resumed = Instant::now();
    bob.set_video_layer(stream("alice-cam"), VideoLayer::High);
    let took = watch
        .until_size(&remote.video, size_of(VideoLayer::High), Duration::from_secs(5))
        .await
        .expect("a picture after resuming");
    println!("resume to first frame: {took:?} ({:?} since asked)", resumed.elapsed());
}

/// The next active-speakers event: the users in order, loudest first.
async fn speakers(engine: &holoroom_engine::Engine) -> Vec<String> {
    common::wait_for(engine, "active speakers", |e| match e {
        holoroom_engine::EngineEvent::ActiveSpeakers { speakers, .. } => {
            Some(speakers.iter().map(|s| s.user_id.to_string()).collect())
        }
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loudest_tone_leads_the_active_speakers_and_the_order_follows_the_tones() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let server = server().await;
    let listener = join(&server, "listener").await;
    let mut streams = Vec::new();
    for (user, volume) in [("quiet", 0.05), ("middle", 0.3), ("loud", 1.0)] {
        let engine = join(&server, user).await;
        let local = publish(
            &engine,
            &format!("{user}-cam"),
            StreamConfig::test_pattern(320, 180, 5.0),
        )
        .await;
        local.set_audio_volume(volume);
        streams.push((engine, local));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut order = Vec::new();
    while order != ["loud", "middle", "quiet"] {
        assert!(
            Instant::now() < deadline,
            "the speakers by loudness; last heard {order:?}"
        );
        order = speakers(&listener).await;
    }
    // The quiet one gets loud and the loud one quiet: the order turns around.
    streams[0].1.set_audio_volume(1.0);
    streams[2].1.set_audio_volume(0.05);
    let deadline = Instant::now() + Duration::from_secs(10);
    while order != ["quiet", "middle", "loud"] {
        assert!(
            Instant::now() < deadline,
            "the order follows the tones; last heard {order:?}"
        );
        order = speakers(&listener).await;
    }
    // Muted, a speaker drops out of the list.
    streams[0].1.set_audio_muted(true);
    let deadline = Instant::now() + Duration::from_secs(10);
    while order != ["middle", "loud"] {
        assert!(
            Instant::now() < deadline,
            "a muted speaker leaves the list; last heard {order:?}"
        );
        order = speakers(&listener).await;
    }
}

/// Frames of `slot` seen since `seen` (sequence numbers) while watching for `window`: how many
/// were decoded, how many the publisher sent (by frame code), and the last size.
async fn watch_frames(slot: &FrameSlot, window: Duration) -> (u64, u64, (u32, u32)) {
    let start = slot.latest().expect("a frame");
    let mut last = start.clone();
    let until = Instant::now() + window;
    while Instant::now() < until {
        if let Some(frame) = slot.newer_than(last.sequence) {
            last = frame;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let code = |f: &holoroom_engine::media::SlotFrame| f.code.map_or(0, |c| c.frame_number);
    let sent = u64::from(code(&last).saturating_sub(code(&start)));
    (
        last.sequence - start.sequence,
        sent,
        (last.frame.width, last.frame.height),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_downlink_gets_lower_layers_at_full_frame_rate_and_climbs_back() {
    use holoroom_testkit::Impairment;

    let _serial = ONE_AT_A_TIME.lock().await;
    let (server, relay) = common::server_behind_relay(b"simulcast-test-secret-0123").await;

    let viewer = join(&server, "viewer").await;
    let mut publishers = Vec::new();
    for i in 0..4 {
        let engine = join(&server, &format!("p{i}")).await;
        // The busy pattern: its layers cost what a camera's would.
        let local = publish(
            &engine,
            &format!("p{i}-cam"),
            StreamConfig::busy_pattern(640, 360, 15.0),
        )
        .await;
        publishers.push((engine, local));
    }
    let mut remotes = Vec::new();
    for i in 0..4 {
        let (remote, _) = play(&viewer, &format!("p{i}-cam")).await;
        remotes.push(remote);
    }
    for remote in &remotes {
        Watch::new()
            .until_size(&remote.video, size_of(VideoLayer::High), Duration::from_secs(15))
            .await
            .expect("every stream at full size on a clean path");
    }
    // What the four need, measured at the relay: with video at full size, and sound alone
    // (video paused). The cap leaves the sound and half of the video.
    let rate = |seconds| {
        let relay = &relay;
        async move {
            let before = relay.stats().downstream.forwarded_bytes;
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            (relay.stats().downstream.forwarded_bytes - before) as f64 * 8.0 / seconds as f64
        }
    };
    let full_bps = rate(2).await;
    for i in 0..4 {
        viewer.set_video_layer(stream(&format!("p{i}-cam")), VideoLayer::Off);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sound_bps = rate(2).await;
    for i in 0..4 {
        viewer.set_video_layer(stream(&format!("p{i}-cam")), VideoLayer::High);
    }
    let cap = (sound_bps + (full_bps - sound_bps) / 2.0) as u64;
    println!("full {full_bps:.0} bit/s, sound {sound_bps:.0} bit/s: capped at {cap}");
    for remote in &remotes {
        Watch::new()
            .until_size(&remote.video, size_of(VideoLayer::High), Duration::from_secs(5))
            .await
            .expect("full size again");
    }
    relay.set_downstream(Impairment::clean().with_rate(cap));

    // Give the estimates time to find the cap, then watch every stream at once.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let lost_before = relay.stats().downstream;
    let watches: Vec<_> = remotes
        .iter()
        .map(|remote| {
            let slot = remote.video.clone();
            tokio::spawn(async move { watch_frames(&slot, Duration::from_secs(3)).await })
        })
        .collect();
    let mut lower = 0;
    for (i, watch) in watches.into_iter().enumerate() {
        let (decoded, sent, size) = watch.await.expect("watched");
        println!("capped at {cap} bit/s: p{i} decoded {decoded} of {sent} frames, at {size:?}");
        assert!(
            decoded as f64 >= 0.9 * sent as f64 && sent >= 30,
            "p{i} keeps its frame rate under the cap: {decoded} of {sent}"
        );
        if size.1 < 360 {
            lower += 1;
        }
    }
    let during = relay.stats().downstream;
    let dropped = (during.queue_dropped - lost_before.queue_dropped) as f64;
    let through = (during.received - lost_before.received) as f64;
    println!("capped: {dropped} of {through} packets dropped at the cap");
    assert!(
        dropped / through.max(1.0) < 0.02,
        "loss under 2%: {dropped} of {through}"
    );
    assert!(lower >= 2, "streams go down a layer to fit: {lower} of 4 lower");

    // The cap is lifted: every stream climbs back to the full picture.
    relay.set_downstream(Impairment::clean());
    let lifted = Instant::now();
    for (i, remote) in remotes.iter().enumerate() {
        let left = Duration::from_secs(10).saturating_sub(lifted.elapsed());
        Watch::new()
            .until_size(&remote.video, size_of(VideoLayer::High), left)
            .await
            .unwrap_or_else(|| panic!("p{i} back at full size within 10 s of the cap lifting"));
    }
    println!("all four at full size {:?} after the cap lifted", lifted.elapsed());
}

/// Waits until the SFU hears exactly `layers` of `stream_id`.
async fn until_layers_sent(server: &Server, stream_id: &str, layers: &[VideoLayer], limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let sent = server
            .layers_sent(&RoomId::new("r").expect("valid"), &stream(stream_id))
            .await
            .expect("layers");
        if sent == layers {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "the publisher sends {sent:?}, not {layers:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_nobody_receives_is_not_sent_and_comes_back_when_wanted() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut call = alice_to_bob().await;
    let (server, bob, remote, watch) = (&call.server, &call.bob, &call.remote, &mut call.watch);
    // Bob watches the full picture only: the smaller layers stop.
    let took = until_layers_sent(server, "alice-cam", &[VideoLayer::High], Duration::from_secs(6)).await;
    println!("unwanted layers stopped after {took:?}");
    // Bob's panel gets small: the quarter layer comes back, and the full one stops.
    watch.may_repeat_once();
    bob.set_video_layer(stream("alice-cam"), VideoLayer::Low);
    let took = watch
        .until_size(&remote.video, size_of(VideoLayer::Low), Duration::from_secs(5))
        .await
        .expect("a quarter-size picture");
    println!("a stopped layer back as a picture after {took:?}");
    until_layers_sent(server, "alice-cam", &[VideoLayer::Low], Duration::from_secs(6)).await;
    // Paused: no video is sent at all; the sound goes on.
    bob.set_video_layer(stream("alice-cam"), VideoLayer::Off);
    until_layers_sent(server, "alice-cam", &[], Duration::from_secs(6)).await;
    bob.set_video_layer(stream("alice-cam"), VideoLayer::High);
    watch
        .until_size(&remote.video, size_of(VideoLayer::High), Duration::from_secs(5))
        .await
        .expect("the full picture again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_uplink_sends_the_layer_it_carries_and_climbs_back() {
    use holoroom_testkit::Impairment;

    let _serial = ONE_AT_A_TIME.lock().await;
    let (server, relay) = common::server_behind_relay(b"simulcast-test-secret-0123").await;
    let alice = join(&server, "alice").await;
    let bob = join(&server, "bob").await;
    let _camera = publish(&alice, "alice-cam", StreamConfig::busy_pattern(640, 360, 15.0)).await;
    let (remote, _) = play(&bob, "alice-cam").await;
    Watch::new()
        .until_size(&remote.video, size_of(VideoLayer::High), Duration::from_secs(10))
        .await
        .expect("the full picture");
    // Bob watches the full picture only: once the others stop, the uplink carries that.
    until_layers_sent(&server, "alice-cam", &[VideoLayer::High], Duration::from_secs(6)).await;
    let before = relay.stats().upstream.forwarded_bytes;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let full_bps = (relay.stats().upstream.forwarded_bytes - before) as f64 * 8.0 / 2.0;
    // Room for the sound and the half-size layer, not for the full picture.
    let cap = (full_bps * 0.5) as u64;
    relay.set_upstream(Impairment::clean().with_rate(cap));
    let capped = Instant::now();
    let smaller = loop {
        let height = remote.video.latest().map_or(0, |f| f.frame.height);
        if height > 0 && height < 360 {
            break height;
        }
        // The full picture's backlog (and the resends of what the full queue dropped) drains
        // first: pictures resume at a lower layer.
        assert!(
            capped.elapsed() < Duration::from_secs(20),
            "a lower layer once the uplink is short"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!(
        "uplink capped at {cap} bit/s ({full_bps:.0} needed): {smaller} lines after {:?}",
        capped.elapsed()
    );
    // The layer settles.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let dropped_before = relay.stats().upstream;
    let (decoded, sent, size) = watch_frames(&remote.video, Duration::from_secs(3)).await;
    let during = relay.stats().upstream;
    let dropped = (during.queue_dropped - dropped_before.queue_dropped) as f64;
    let through = (during.received - dropped_before.received) as f64;
    println!("capped uplink: decoded {decoded} of {sent} at {size:?}; {dropped} of {through} packets dropped");
    assert!(decoded as f64 >= 0.9 * sent as f64 && sent >= 30, "{decoded} of {sent}");
    assert!(
        dropped / through.max(1.0) < 0.02,
        "loss under 2%: {dropped} of {through}"
    );
    relay.set_upstream(Impairment::clean());
    let lifted = Instant::now();
    // Climbs that failed under the cap made the next ones wait longer (2 s, then 4 s a step).
    Watch::new()
        .until_size(&remote.video, size_of(VideoLayer::High), Duration::from_secs(20))
        .await
        .expect("the full picture within 20 s of the uplink's cap lifting");
    println!("full size again {:?} after the cap lifted", lifted.elapsed());
}
