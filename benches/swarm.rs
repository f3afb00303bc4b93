//! Big rooms: what the view-driven quality saves one viewer. 25 and 49 participants publish a
//! pre-encoded 640x360 simulcast clip (the busy test pattern, which costs what a camera
//! picture does; encoded once, looped, so the publishers cost no encoding) through a real room
//! server; one viewer, seated as the app seats it, plays every stream and decodes it. In the
//! same run the viewer receives every stream at the full layer, then the layers the app's
//! view code asks for (`holoroom::quality`: the smallest layer covering each panel as the
//! viewer's camera shows it, nothing for panels out of view). It prints the viewer's video
//! downlink, decode time and packets lost, and the room server's CPU, for both, and the ratios
//! (targets: 4x less at 25, 6x at 49, with the large panels at the full layer); then layer
//! switch latency in the full room. `--map-only` draws the seated view's layers and stops.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bevy::prelude::*;
use holoroom::quality::{measuring_camera, on_screen_height, wanted_layer};
use holoroom::room::participants::seat_transform;
use holoroom_engine::codec::encode_clip;
use holoroom_engine::protocol::{
    LoginConfig, RoomId, RoomStateReason, StreamId, UserId, UserInfo, VideoGrant, VideoLayer,
};
use holoroom_engine::{AudioSource, Engine, EngineConfig, EngineEvent, RemoteStream, StreamConfig, VideoSource};
use holoroom_server::{Server, ServerConfig, SigningKey, TokenKeys};

const ROOM_SIZES: [usize; 2] = [25, 49];
const CLIP: (u32, u32, f32) = (640, 360, 15.0);
const SETTLE: Duration = Duration::from_secs(4);
const MEASURE: Duration = Duration::from_secs(6);

fn join(server: &Server, user: &str, room: &str) -> Engine {
    let engine = Engine::new(EngineConfig::new(server.ws_url())).expect("engine starts");
    let user_id = UserId::new(user).expect("valid");
    let token = server.keys().mint(VideoGrant::participant(room), &user_id, None, 3600);
    engine.login_room(
        RoomId::new(room).expect("valid"),
        token,
        UserInfo {
            user_id,
            user_name: user.to_uppercase(),
        },
        LoginConfig::default(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(EngineEvent::RoomStateChanged { reason, error, .. }) =
            engine.events().recv_timeout(Duration::from_millis(100))
        {
            match reason {
                RoomStateReason::Logined => return engine,
                RoomStateReason::LoginFailed => panic!("{user} could not log in: {error:?}"),
                _ => {}
            }
        }
    }
    panic!("{user} did not log in");
}

/// Where the viewer looks from.
#[derive(Debug, Clone, Copy)]
enum Pose {
    /// As the app seats you: behind and above your seat, looking across the table.
    Seated,
    /// At your seat's eye height, turned to the neighbours on your right.
    TurnedAside,
}

/// The viewer's camera at seat 0 in `pose`, 1280x720.
fn viewer_camera(pose: Pose) -> (Camera, GlobalTransform) {
    let camera = measuring_camera(1280, 720);
    let seat = seat_transform(0).translation;
    let outward = Vec3::new(seat.x, 0.0, seat.z).normalize_or(Vec3::Z);
    let place = match pose {
        Pose::Seated => {
            let eye = seat + outward * 2.2 + Vec3::Y * 1.1;
            Transform::from_translation(eye).looking_at(Vec3::new(0.0, 1.0, 0.0), Vec3::Y)
        }
        Pose::TurnedAside => {
            let eye = seat + Vec3::Y * 0.3;
            let aside = outward.cross(Vec3::Y);
            Transform::from_translation(eye).looking_at(eye + aside - outward * 0.3, Vec3::Y)
        }
    };
    (camera, GlobalTransform::from(place))
}

/// What the viewer received and decoded over a while, summed over its streams, and what the
/// room server's threads spent.
#[derive(Debug, Clone, Copy)]
struct Load {
    kbps: f64,
    decode_ms_per_s: f64,
    /// Video packets the viewer's receive buffers gave up on, of those that came.
    lost: u64,
    packets: u64,
    /// The server's CPU time per second (1.0 is one core).
    server_cpu: f64,
}

/// The room server's runtime threads.
const SERVER_THREAD: &str = "holoroom-server";

/// CPU time so far of this process's threads named `name` (Linux: /proc/self/task/*/stat).
fn thread_cpu(name: &str) -> Duration {
    let ticks_per_second = 100.0; // USER_HZ on Linux
    let mut ticks = 0u64;
    for task in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // After the command's closing parenthesis: state is field 3, utime 14, stime 15.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        ticks += field(14) + field(15);
    }
    Duration::from_secs_f64(ticks as f64 / ticks_per_second)
}

fn measure(remotes: &[RemoteStream]) -> Load {
    let totals = |remotes: &[RemoteStream]| {
        remotes
            .iter()
            .fold((0u64, Duration::ZERO, 0u64, 0u64), |(bytes, time, lost, packets), r| {
                let video = r.receive.video();
                (
                    bytes + r.receive.video_bytes(),
                    time + r.receive.decode_time(),
                    lost + video.lost,
                    packets + video.packets,
                )
            })
    };
    let (bytes, time, lost, packets) = totals(remotes);
    let cpu = thread_cpu(SERVER_THREAD);
    let start = Instant::now();
    std::thread::sleep(MEASURE);
    let (bytes_after, time_after, lost_after, packets_after) = totals(remotes);
    let secs = start.elapsed().as_secs_f64();
    Load {
        kbps: (bytes_after - bytes) as f64 * 8.0 / 1000.0 / secs,
        decode_ms_per_s: (time_after - time).as_secs_f64() * 1000.0 / secs,
        lost: lost_after - lost,
        packets: packets_after - packets,
        server_cpu: (thread_cpu(SERVER_THREAD) - cpu).as_secs_f64() / secs,
    }
}

impl std::fmt::Display for Load {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0} kbit/s video, decoding {:.0} ms per second, {} of {} packets lost, server CPU {:.0}%",
            self.kbps,
            self.decode_ms_per_s,
            self.lost,
            self.packets,
            self.server_cpu * 100.0
        )
    }
}

/// A runtime for the room server alone, its threads named so that their CPU time can be read.
fn server_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(SERVER_THREAD)
        .enable_all()
        .build()
        .expect("runtime")
}

fn run(runtime: &tokio::runtime::Runtime, publishers: usize, poses: &[Pose]) {
    let server = runtime.block_on(async {
        let config = ServerConfig::new(TokenKeys::new(SigningKey::new(
            "k1",
            b"swarm-bench-secret-0123".to_vec(),
        )));
        Server::bind("127.0.0.1:0", config).await.expect("server binds")
    });
    let clip = encode_clip(CLIP.0, CLIP.1, CLIP.2, 30).expect("clip encodes");
    let room = "swarm";
    let mut crowd = Vec::new();
    for i in 0..publishers {
        let engine = join(&server, &format!("p{i}"), room);
        let local = engine
            .create_stream(StreamConfig {
                video: VideoSource::Encoded(clip.clone()),
                audio: AudioSource::Silence,
                ..StreamConfig::test_pattern(CLIP.0, CLIP.1, CLIP.2)
            })
            .expect("clip stream");
        engine.start_publishing_stream(StreamId::new(format!("p{i}-cam")).expect("valid"), &local);
        crowd.push((engine, local));
    }
    let viewer = join(&server, "viewer", room);
    // Stream i's publisher sits in seat i + 1 (the viewer has seat 0).
    let streams: Vec<StreamId> = (0..publishers)
        .map(|i| StreamId::new(format!("p{i}-cam")).expect("valid"))
        .collect();
    let remotes: Vec<RemoteStream> = streams
        .iter()
        .map(|id| viewer.start_playing_stream(id.clone()))
        .collect();
    std::thread::sleep(SETTLE * 2);
    let full = measure(&remotes);

    println!("{publishers} publishers, one viewer");
    println!("  every stream at the full layer: {full}");
    for &pose in poses {
        let (camera, at) = viewer_camera(pose);
        let mut asked = BTreeMap::new();
        for (i, id) in streams.iter().enumerate() {
            let place = seat_transform(i + 1).translation;
            let on_screen = on_screen_height(&camera, &at, place);
            let (layer, _) = wanted_layer(on_screen, CLIP.1, false, VideoLayer::High);
            viewer.set_video_layer(id.clone(), layer);
            *asked.entry(layer.name()).or_insert(0) += 1;
        }
        std::thread::sleep(SETTLE);
        let view = measure(&remotes);
        let mut arrived = BTreeMap::new();
        for remote in &remotes {
            let height = remote.video.latest().map_or(0, |f| f.frame.height);
            *arrived.entry(height).or_insert(0) += 1;
        }
        println!("  {pose:?}: the view asks for {asked:?}; latest picture heights {arrived:?}");
        println!(
            "    {view}: {:.1}x less downlink, {:.1}x less decoding than full",
            full.kbps / view.kbps.max(1e-3),
            full.decode_ms_per_s / view.decode_ms_per_s.max(1e-3)
        );
    }
    // Layer switches in the full room: one stream between a quarter and the full picture,
    // from the request to the first decoded frame of the new size.
    let (id, remote) = (&streams[0], &remotes[0]);
    let mut took = Vec::new();
    for n in 0..20 {
        let (layer, height) = if n % 2 == 0 {
            (VideoLayer::Low, CLIP.1 / 4)
        } else {
            (VideoLayer::High, CLIP.1)
        };
        let asked = Instant::now();
        viewer.set_video_layer(id.clone(), layer);
        let mut seen = remote.video.latest().map_or(0, |f| f.sequence);
        let time = loop {
            if let Some(frame) = remote.video.wait_newer_than(seen, Duration::from_millis(100)) {
                seen = frame.sequence;
                if frame.frame.height.abs_diff(height) <= 1 {
                    break Some(asked.elapsed());
                }
            }
            if asked.elapsed() > Duration::from_secs(5) {
                break None;
            }
        };
        took.push(time.unwrap_or(Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(300));
    }
    took.sort();
    println!(
        "  layer switch, request to first frame of the new size (20 switches): p50 {:.0} ms, p95 {:.0} ms (target p95 <= 300 ms)",
        took[took.len() / 2].as_secs_f64() * 1000.0,
        took[took.len() * 95 / 100].as_secs_f64() * 1000.0
    );
    drop(remotes);
    drop(viewer);
    drop(crowd);
    runtime.block_on(async { drop(server) });
}

/// Draws the room from above: the table, every seat coloured by the layer the viewer's camera
/// (seat 0, `pose`) asks for, and the viewer with the edges of its view. Written as a PNG.
fn draw_view_map(seats: usize, pose: Pose, path: &std::path::Path) -> std::io::Result<()> {
    const SIZE: usize = 520;
    const SCALE: f32 = 24.0; // pixels per metre
    let mut rgb = vec![245u8; SIZE * SIZE * 3];
    let to_px = |x: f32, z: f32| (SIZE as f32 / 2.0 + x * SCALE, SIZE as f32 / 2.0 + z * SCALE);
    let dot = |rgb: &mut [u8], (cx, cy): (f32, f32), radius: f32, colour: [u8; 3]| {
        for y in (cy - radius).max(0.0) as usize..((cy + radius) as usize).min(SIZE - 1) {
            for x in (cx - radius).max(0.0) as usize..((cx + radius) as usize).min(SIZE - 1) {
                if (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2) <= radius * radius {
                    rgb[(y * SIZE + x) * 3..(y * SIZE + x) * 3 + 3].copy_from_slice(&colour);
                }
            }
        }
    };
    dot(
        &mut rgb,
        to_px(0.0, 0.0),
        holoroom::room::seating::TABLE_RADIUS * SCALE,
        [150, 120, 90],
    );
    let (camera, at) = viewer_camera(pose);
    // The edges of the view: rays along the screen's left and right edges, on the floor.
    let eye = at.translation();
    let forward = at.forward().as_vec3();
    let half_fov = ((PerspectiveProjection::default().fov / 2.0).tan() * 16.0 / 9.0).atan();
    for side in [-1.0f32, 1.0] {
        let flat = Vec3::new(forward.x, 0.0, forward.z).normalize_or(Vec3::Z);
        let edge = Quat::from_rotation_y(side * half_fov) * flat;
        for step in 0..400 {
            let p = eye + edge * (step as f32 * 0.05);
            dot(&mut rgb, to_px(p.x, p.z), 1.2, [70, 110, 200]);
        }
    }
    for seat in 1..=seats {
        let place = seat_transform(seat).translation;
        let (layer, _) = wanted_layer(on_screen_height(&camera, &at, place), CLIP.1, false, VideoLayer::High);
        let colour = match layer {
            VideoLayer::High => [40, 160, 70],
            VideoLayer::Medium => [230, 190, 40],
            VideoLayer::Low => [240, 120, 40],
            VideoLayer::Off => [170, 170, 170],
        };
        dot(&mut rgb, to_px(place.x, place.z), 9.0, [60, 60, 60]);
        dot(&mut rgb, to_px(place.x, place.z), 7.5, colour);
    }
    let seat = seat_transform(0).translation;
    dot(&mut rgb, to_px(seat.x, seat.z), 9.0, [40, 80, 200]);
    dot(&mut rgb, to_px(eye.x, eye.z), 5.0, [40, 80, 200]);
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut encoder = png::Encoder::new(file, SIZE as u32, SIZE as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(std::io::Error::other)?;
    writer.write_image_data(&rgb).map_err(std::io::Error::other)?;
    Ok(())
}

fn main() {
    let dir = std::path::PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()))
        .join("test-artifacts");
    let map = dir.join("view-quality.png");
    match std::fs::create_dir_all(&dir).and_then(|()| draw_view_map(25, Pose::Seated, &map)) {
        Ok(()) => println!("the seated view's layers for 25 seats, from above: {}", map.display()),
        Err(err) => println!("the view map could not be written: {err}"),
    }
    if std::env::args().any(|a| a == "--map-only") {
        return;
    }
    let runtime = server_runtime();
    let sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    for publishers in if sizes.is_empty() { ROOM_SIZES.to_vec() } else { sizes } {
        run(&runtime, publishers, &[Pose::Seated, Pose::TurnedAside]);
    }
}
