//! Render scaling: 4, 16 and 36 participants, each with a 640x360 30 fps feed, in the real app
//! window (run it under `xvfb-run`; without a GPU, Mesa's lavapipe renders).
//!
//! Each room size runs in a child process (a window's event loop can only be made once per
//! process). The child runs the same scene in alternating phases, feeds running and feeds
//! paused: the difference in process CPU per rendered frame, spread over the frames uploaded,
//! is what getting a decoded frame onto its panel costs (the median over the pairs). The parent measures, in the same job, what
//! decoding such a frame costs with raw OpenH264 calls, and prints the upload's cost as a
//! multiple of the decode's (target <= 1.3x), and decode + upload against decode alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bevy::prelude::*;
use bevy::window::{ExitCondition, PresentMode};
use bevy::winit::{UpdateMode, WinitSettings};
use holoroom::room::participants::{Participant, Seat, VideoFeed, seat_transform};
use holoroom::room::scenery::RoomLook;
use holoroom::video::UploadStats;
use holoroom::{Connection, HoloroomPlugin};
use holoroom_engine::codec::{EncoderSettings, H264Decoder, H264Encoder};
use holoroom_engine::media::{FrameSlot, TestPattern, VideoFrame};
use holoroom_engine::protocol::UserId;

const ROOM_SIZES: [usize; 3] = [4, 16, 36];
const SIZE: (u32, u32) = (640, 360);
const FPS: f64 = 30.0;
const WARMUP: Duration = Duration::from_secs(4);
const PHASE: Duration = Duration::from_secs(4);
/// Measured phases come in pairs: feeds running, then paused.
const PHASE_PAIRS: usize = 5;
const CHILD_ENV: &str = "HOLOROOM_RENDER_BENCH_PARTICIPANTS";
/// `bare` for the room as it was before it was furnished (floor, table, seat markers).
const LOOK_ENV: &str = "HOLOROOM_RENDER_BENCH_LOOK";
/// The room size at which the furnished room is compared with the bare one.
const LOOK_PARTICIPANTS: usize = 16;

/// A camera-like picture: a textured scene panning a few pixels a frame (the test pattern is
/// mostly flat colour, far cheaper to decode than a camera's picture).
fn camera_like(n: u64) -> VideoFrame {
    let (w, h) = (SIZE.0 as usize, SIZE.1 as usize);
    let texture = |x: usize, y: usize| -> u8 {
        let (xf, yf) = (x as f32, y as f32);
        let smooth = 110.0 + 50.0 * (xf * 0.021).sin() * (yf * 0.017).cos() + 30.0 * ((xf + yf) * 0.05).sin();
        let grain = ((x.wrapping_mul(73_856_093) ^ y.wrapping_mul(19_349_663)) % 23) as f32;
        (smooth + grain).clamp(16.0, 235.0) as u8
    };
    let shift = (n * 3) as usize;
    let y = (0..h)
        .flat_map(|row| (0..w).map(move |col| texture(col + shift, row)))
        .collect();
    let chroma = |phase: f32| -> Vec<u8> {
        (0..h / 2)
            .flat_map(|row| {
                (0..w / 2).map(move |col| {
                    (128.0 + 20.0 * (((col + shift / 2) as f32) * 0.03 + phase + row as f32 * 0.02).sin()) as u8
                })
            })
            .collect()
    };
    VideoFrame::from_planes(SIZE.0, SIZE.1, (y, w), (chroma(0.0), chroma(1.7), w / 2)).expect("valid size")
}

/// One second of video, encoded and decoded the way a played stream is: camera-like, or the
/// test pattern.
fn decoded_clip(pattern_source: bool) -> (Vec<Vec<u8>>, Vec<VideoFrame>) {
    let mut pattern = TestPattern::new(SIZE.0, SIZE.1).expect("pattern size");
    let mut encoder = H264Encoder::new(EncoderSettings::for_size(SIZE.0, SIZE.1, FPS as f32)).expect("encoder");
    let mut decoder = H264Decoder::new().expect("decoder");
    let mut units = Vec::new();
    let mut frames = Vec::new();
    for i in 0..FPS as u64 {
        let source = if pattern_source {
            pattern.next_frame(i * 33_333)
        } else {
            camera_like(i)
        };
        let Some(unit) = encoder.encode(&source).expect("encodes") else {
            continue;
        };
        if let Some(frame) = decoder.decode(&unit.data).expect("decodes") {
            frames.push(frame);
        }
        units.push(unit.data);
    }
    (units, frames)
}

/// CPU time this process has used, from /proc (10 ms resolution).
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // The first field after the name is the state (field 3).
    let ticks = field(11) + field(12);
    Duration::from_millis(ticks * 10)
}

use holoroom_testkit::percentile;

#[derive(Debug, Default, Clone)]
struct Phase {
    frame_ms: Vec<f64>,
    cpu: Duration,
    uploads: u64,
    delivered: u64,
}

impl Phase {
    fn cpu_per_frame_ms(&self) -> f64 {
        self.cpu.as_secs_f64() * 1000.0 / self.frame_ms.len().max(1) as f64
    }
}

#[derive(Resource)]
struct Run {
    feeding: Arc<AtomicBool>,
    delivered: Arc<AtomicU64>,
    started: Instant,
    /// 0 warm-up, then odd stages feed frames and even ones pause.
    stage: u8,
    stage_started: Instant,
    cpu_at: Duration,
    uploads_at: u64,
    delivered_at: u64,
    current: Phase,
    phases: Vec<Phase>,
}

fn child(participants: usize) {
    let (_, clip) = decoded_clip(false);
    let clip = Arc::new(clip);
    let feeding = Arc::new(AtomicBool::new(true));
    let delivered = Arc::new(AtomicU64::new(0));
    let slots: Vec<FrameSlot> = (0..participants).map(|_| FrameSlot::new()).collect();
    {
        let (slots, clip, feeding, delivered) = (slots.clone(), clip.clone(), feeding.clone(), delivered.clone());
        std::thread::spawn(move || {
            let period = Duration::from_secs_f64(1.0 / FPS);
            let mut next = Instant::now();
            for n in 0usize.. {
                if feeding.load(Ordering::Relaxed) {
                    for (i, slot) in slots.iter().enumerate() {
                        slot.put(clip[(n + i) % clip.len()].clone(), None);
                    }
                    delivered.fetch_add(slots.len() as u64, Ordering::Relaxed);
                }
                next += period;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        });
    }
    let now = Instant::now();
    let look = match std::env::var(LOOK_ENV).as_deref() {
        Ok("bare") => RoomLook::Bare,
        _ => RoomLook::Lounge,
    };
    App::new()
        .insert_resource(look)
        .add_plugins(DefaultPlugins.set(WindowPlugin {
            primary_window: Some(Window {
                title: "Holoroom render bench".into(),
                resolution: (640, 360).into(),
                present_mode: PresentMode::AutoNoVsync,
                ..default()
            }),
            exit_condition: ExitCondition::OnPrimaryClosed,
            ..default()
        }))
        .insert_resource(WinitSettings {
            focused_mode: UpdateMode::Continuous,
            unfocused_mode: UpdateMode::Continuous,
        })
        .add_plugins(HoloroomPlugin {
            connection: Connection {
                server_url: String::new(),
                room: "bench".into(),
                user: "viewer".into(),
                name: "Viewer".into(),
                spectate: true,
                embedded: false,
                note: None,
                remembered: false,
                remember: false,
            },
        })
        .insert_resource(Run {
            feeding,
            delivered,
            started: now,
            stage: 0,
            stage_started: now,
            cpu_at: Duration::ZERO,
            uploads_at: 0,
            delivered_at: 0,
            current: Phase::default(),
            phases: Vec::new(),
        })
        .add_systems(Startup, move |mut commands: Commands| {
            for (i, slot) in slots.iter().enumerate() {
                let Ok(user_id) = UserId::new(format!("p{i}")) else {
                    continue;
                };
                commands.spawn((
                    Participant {
                        user_id,
                        name: format!("P{i}"),
                    },
                    Seat(i),
                    seat_transform(i),
                    VideoFeed::new(None, slot.clone()),
                ));
            }
        })
        .add_systems(Last, measure)
        .run();
}

fn measure(time: Res<Time<Real>>, stats: Res<UploadStats>, mut run: ResMut<Run>, mut exit: MessageWriter<AppExit>) {
    let now = Instant::now();
    if run.stage > 0 {
        run.current.frame_ms.push(time.delta_secs_f64() * 1000.0);
    }
    let stage_for = if run.stage == 0 { WARMUP } else { PHASE };
    if now.duration_since(run.stage_started) < stage_for {
        return;
    }
    let (cpu, uploads, delivered) = (
        process_cpu(),
        stats.frames_uploaded,
        run.delivered.load(Ordering::Relaxed),
    );
    if run.stage > 0 {
        let mut phase = std::mem::take(&mut run.current);
        phase.cpu = cpu.saturating_sub(run.cpu_at);
        phase.uploads = uploads - run.uploads_at;
        phase.delivered = delivered - run.delivered_at;
        run.phases.push(phase);
    }
    run.stage += 1;
    run.stage_started = now;
    (run.cpu_at, run.uploads_at, run.delivered_at) = (cpu, uploads, delivered);
    // Feeds alternate on and off phase by phase, so slow drifts of the machine hit both alike.
    run.feeding.store(run.stage % 2 == 1, Ordering::Relaxed);
    if run.stage as usize <= 2 * PHASE_PAIRS {
        return;
    }
    let on: Vec<&Phase> = run.phases.iter().step_by(2).collect();
    let off: Vec<&Phase> = run.phases.iter().skip(1).step_by(2).collect();
    // Each pair: the extra CPU per rendered frame while frames arrive, spread over the uploads.
    let mut per_upload: Vec<f64> = on
        .iter()
        .zip(&off)
        .map(|(on, off)| {
            let extra = on.cpu_per_frame_ms() - off.cpu_per_frame_ms();
            extra * on.frame_ms.len() as f64 / on.uploads.max(1) as f64
        })
        .collect();
    per_upload.sort_by(f64::total_cmp);
    let upload_ms = percentile(&per_upload, 0.5).max(0.0);
    let mut sorted: Vec<f64> = on.iter().flat_map(|p| p.frame_ms.iter().copied()).collect();
    sorted.sort_by(f64::total_cmp);
    eprintln!("upload ms per frame, pair by pair: {per_upload:.3?}");
    // The whole frame's CPU (rendering included), the median over every phase.
    let mut cpu_frame: Vec<f64> = run.phases.iter().map(Phase::cpu_per_frame_ms).collect();
    cpu_frame.sort_by(f64::total_cmp);
    println!(
        "RESULT p50_ms={:.1} p99_ms={:.1} shown={} received={} upload_ms={:.3} cpu_frame_ms={:.2} seconds={:.0}",
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.99),
        on.iter().map(|p| p.uploads).sum::<u64>(),
        on.iter().map(|p| p.delivered).sum::<u64>(),
        upload_ms,
        percentile(&cpu_frame, 0.5),
        run.started.elapsed().as_secs_f64()
    );
    exit.write(AppExit::Success);
}

/// Raw OpenH264 decode cost of a clip, ms per frame.
fn decode_ms(pattern_source: bool) -> f64 {
    let (units, _) = decoded_clip(pattern_source);
    let mut decoder = H264Decoder::new().expect("decoder");
    let started = Instant::now();
    let mut frames = 0u32;
    for _ in 0..10 {
        for unit in &units {
            if decoder.decode(unit).expect("decodes").is_some() {
                frames += 1;
            }
        }
    }
    started.elapsed().as_secs_f64() * 1000.0 / f64::from(frames.max(1))
}

/// A child's RESULT fields by name.
type Fields = Box<dyn Fn(&str) -> f64>;

fn main() {
    if let Some(n) = std::env::var(CHILD_ENV).ok().and_then(|v| v.parse().ok()) {
        child(n);
        return;
    }
    if std::env::var_os("DISPLAY").is_none() && std::env::var_os("WAYLAND_DISPLAY").is_none() {
        println!("render bench: no display; run it under xvfb-run (make bench does)");
        return;
    }
    let exe = std::env::current_exe().expect("own path");
    let decode = decode_ms(false);
    let pattern_decode = decode_ms(true);
    println!(
        "render scaling at {}x{} {FPS} fps per participant (camera-like video); raw decode {decode:.3} ms/frame \
         (the test pattern: {pattern_decode:.3} ms/frame)",
        SIZE.0, SIZE.1
    );
    // One child per room size (and look): its RESULT line's fields by name.
    let run = |n: usize, look: &str| -> Option<Fields> {
        let output = std::process::Command::new(&exe)
            .env(CHILD_ENV, n.to_string())
            .env(LOOK_ENV, look)
            .stderr(std::process::Stdio::null())
            .output()
            .expect("child runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let Some(line) = stdout.lines().find_map(|l| l.strip_prefix("RESULT ")) else {
            println!("{n:>2} participants ({look} room): no result ({})", output.status);
            return None;
        };
        let line = line.to_owned();
        Some(Box::new(move |name: &str| -> f64 {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
                .unwrap_or(f64::NAN)
        }))
    };
    for n in ROOM_SIZES {
        let Some(field) = run(n, "lounge") else {
            continue;
        };
        let upload = field("upload_ms");
        println!(
            "{n:>2} participants: frame time p50 {:.0} ms p99 {:.0} ms; frames shown {}/{} received ({:.0}%); \
             upload {upload:.3} ms/frame = {:.2}x the decode (target <= 1.3x); decode + upload = {:.2}x the \
             decode alone; against the pattern's decode {:.2}x / {:.2}x",
            field("p50_ms"),
            field("p99_ms"),
            field("shown"),
            field("received"),
            100.0 * field("shown") / field("received"),
            upload / decode,
            (decode + upload) / decode,
            upload / pattern_decode,
            (pattern_decode + upload) / pattern_decode
        );
    }
    // What the furnished room costs against the bare one, same machine, same job: the two
    // alternate, twice each, so a drift of the machine hits both alike; medians of the runs.
    let (mut furnished, mut bare) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        for (look, into) in [("lounge", &mut furnished), ("bare", &mut bare)] {
            if let Some(field) = run(LOOK_PARTICIPANTS, look) {
                into.push((field("p50_ms"), field("cpu_frame_ms")));
            }
        }
    }
    let median = |runs: &[(f64, f64)], pick: fn(&(f64, f64)) -> f64| {
        let mut values: Vec<f64> = runs.iter().map(pick).collect();
        values.sort_by(f64::total_cmp);
        percentile(&values, 0.5)
    };
    if !furnished.is_empty() && !bare.is_empty() {
        let (lounge_p50, bare_p50) = (median(&furnished, |r| r.0), median(&bare, |r| r.0));
        let (lounge_cpu, bare_cpu) = (median(&furnished, |r| r.1), median(&bare, |r| r.1));
        println!(
            "{LOOK_PARTICIPANTS} participants, the furnished room (figures, frames, lounge) against the bare one \
             (runs {furnished:.1?} against {bare:.1?}): frame time p50 {lounge_p50:.0} ms against {bare_p50:.0} ms = \
             {:.2}x; CPU per frame {lounge_cpu:.1} ms against {bare_cpu:.1} ms = {:.2}x (target <= 1.3x)",
            lounge_p50 / bare_p50,
            lounge_cpu / bare_cpu,
        );
    }
}
