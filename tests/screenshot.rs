//! The real app window (under Xvfb with Mesa's software Vulkan) joins a room with two pattern
//! bots, takes a screenshot, keeps it as a PNG, and reads a bot's frame code back from the
//! screenshot's pixels: the video really is on the entity.
//!
//! Runs without the test harness so the window's event loop owns the main thread; `make test`
//! runs it under `xvfb-run`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bevy::prelude::*;
use bevy::render::render_resource::TextureFormat;
use bevy::render::view::screenshot::{Screenshot, ScreenshotCaptured, save_to_disk};
use bevy::winit::{UpdateMode, WinitSettings};
use holoroom::net::{EngineBridge, JoinRoom, MintToken, TokenSource};
use holoroom::room::ViewerCamera;
use holoroom::room::participants::{AppState, LocalParticipant, Participant};
use holoroom::video::{FaceViewer, PANEL_SIZE, Panel};
use holoroom::{Connection, HoloroomPlugin};
use holoroom_engine::bot::{Bot, BotConfig};
use holoroom_engine::media::{CodeLayout, FrameCode, read_code_with};
use holoroom_engine::protocol::{RoomId, UserId, UserInfo, VideoGrant};
use holoroom_engine::{Engine, EngineConfig, StreamConfig};
use holoroom_server::{Server, ServerConfig, SigningKey, TokenKeys};

const BOT_VIDEO: (u32, u32) = (640, 360);
const GIVE_UP: Duration = Duration::from_secs(60);

/// Where the screenshot is kept.
fn artifact() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("test-artifacts");
    let _ = std::fs::create_dir_all(&dir);
    dir.join("room-screenshot.png")
}

#[derive(Resource)]
struct Check {
    started: Instant,
    joined: bool,
    ready_frames: u32,
    shots: u32,
    captured: Arc<Mutex<Option<Image>>>,
    /// The camera has stepped up to a bot's panel, as a person would to look closer.
    zoomed: bool,
    /// Where each remote panel's corners were when the screenshot was asked for.
    geometry: Vec<(String, Mat4)>,
    camera: Option<(Camera, GlobalTransform)>,
    found: Arc<Mutex<Option<(String, FrameCode)>>>,
}

fn luma_at(image: &Image, x: f32, y: f32) -> u8 {
    let (w, h) = (image.width() as i64, image.height() as i64);
    let (x, y) = ((x.round() as i64).clamp(0, w - 1), (y.round() as i64).clamp(0, h - 1));
    let Some(data) = &image.data else { return 0 };
    let i = ((y * w + x) * 4) as usize;
    let (r, g, b) = match image.texture_descriptor.format {
        TextureFormat::Bgra8Unorm | TextureFormat::Bgra8UnormSrgb => (data[i + 2], data[i + 1], data[i]),
        _ => (data[i], data[i + 1], data[i + 2]),
    };
    (0.299 * f32::from(r) + 0.587 * f32::from(g) + 0.114 * f32::from(b)) as u8
}

/// Reads a frame code off a panel in the screenshot: each frame pixel is mapped through the
/// panel's transform and the camera to a screen pixel.
fn read_panel(image: &Image, panel: Mat4, camera: &Camera, camera_transform: &GlobalTransform) -> Option<FrameCode> {
    let layout = CodeLayout::for_size(BOT_VIDEO.0, BOT_VIDEO.1)?;
    let (fw, fh) = (BOT_VIDEO.0 as f32, BOT_VIDEO.1 as f32);
    read_code_with(
        |x, y| {
            let local = Vec3::new(
                (x as f32 / fw - 0.5) * PANEL_SIZE.x,
                (0.5 - y as f32 / fh) * PANEL_SIZE.y,
                0.0,
            );
            let world = panel.transform_point3(local);
            match camera.world_to_viewport(camera_transform, world) {
                Ok(p) => luma_at(image, p.x, p.y),
                Err(_) => 0,
            }
        },
        layout,
    )
}

#[allow(clippy::type_complexity, clippy::too_many_arguments)]
fn drive(
    mut commands: Commands,
    mut check: ResMut<Check>,
    state: Res<State<AppState>>,
    mut joins: MessageWriter<JoinRoom>,
    mut exit: MessageWriter<AppExit>,
    remote: Query<(&Participant, &Panel), Without<LocalParticipant>>,
    panels: Query<(&ChildOf, &GlobalTransform), With<FaceViewer>>,
    participants: Query<&Participant>,
    camera: Query<(&Camera, &GlobalTransform), With<ViewerCamera>>,
    mut camera_place: Query<&mut Transform, With<ViewerCamera>>,
    places: Query<(&Participant, &GlobalTransform), Without<LocalParticipant>>,
) {
    if check.started.elapsed() > GIVE_UP {
        eprintln!("screenshot: gave up after {GIVE_UP:?}");
        exit.write(AppExit::error());
        return;
    }
    if !check.joined {
        joins.write(JoinRoom {
            room: "demo".into(),
            user: "viewer".into(),
            name: "Viewer".into(),
            spectate: false,
        });
        check.joined = true;
        return;
    }
    if let Some(found) = check.found.lock().map(|f| f.clone()).unwrap_or(None) {
        println!(
            "screenshot: read frame {} of {} from the screen; PNG kept at {}",
            found.1.frame_number,
            found.0,
            artifact().display()
        );
        println!("1 passed, 0 failed");
        exit.write(AppExit::Success);
        return;
    }
    let image = check.captured.lock().ok().and_then(|mut c| c.take());
    if let Some(image) = image {
        let (cam, cam_transform) = check.camera.clone().expect("camera kept with the shot");
        for (who, panel) in &check.geometry {
            if let Some(code) = read_panel(&image, *panel, &cam, &cam_transform) {
                if let Ok(mut found) = check.found.lock() {
                    *found = Some((who.clone(), code));
                }
                return;
            }
        }
        eprintln!("screenshot {}: no frame code readable yet", check.shots);
        check.ready_frames = 0;
    }
    let live = remote.iter().filter(|(_, panel)| panel.size == BOT_VIDEO).count();
    if *state.get() != AppState::InCall || live < 2 {
        return;
    }
    // Step up to bot-1's panel so its frame code is large enough to read on screen.
    if !check.zoomed {
        let target = places.iter().find(|(p, _)| p.user_id.as_str() == "bot-1");
        if let (Some((_, place)), Ok(mut eye)) = (target, camera_place.single_mut()) {
            let centre = place.translation();
            let back = (eye.translation - centre).with_y(0.0).normalize_or(Vec3::Z);
            // Look a little to the panel's left so it stands clear of the overlay on the left.
            let left = back.cross(Vec3::Y).normalize_or(Vec3::X);
            let at = centre + left * 1.0;
            *eye = Transform::from_translation(centre + back * 2.6 + Vec3::Y * 0.15).looking_at(at, Vec3::Y);
            check.zoomed = true;
            check.ready_frames = 0;
        }
        return;
    }
    // Let a few frames render with video on both panels, then take the shot.
    check.ready_frames += 1;
    if check.ready_frames != 8 || check.shots >= 5 {
        return;
    }
    let Ok((cam, cam_transform)) = camera.single() else {
        return;
    };
    check.camera = Some((cam.clone(), *cam_transform));
    check.geometry = panels
        .iter()
        .filter_map(|(child_of, transform)| {
            let who = participants.get(child_of.parent()).ok()?;
            Some((who.user_id.to_string(), transform.to_matrix()))
        })
        .collect();
    check.shots += 1;
    let captured = check.captured.clone();
    commands
        .spawn(Screenshot::primary_window())
        .observe(save_to_disk(artifact()))
        .observe(move |shot: On<ScreenshotCaptured>| {
            if let Ok(mut slot) = captured.lock() {
                *slot = Some(shot.image.clone());
            }
        });
}

fn main() -> AppExit {
    if std::env::var_os("DISPLAY").is_none() && std::env::var_os("WAYLAND_DISPLAY").is_none() {
        eprintln!("screenshot: no display; run under xvfb-run (as `make test` does)");
        return AppExit::error();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let server = runtime.block_on(async {
        let config = ServerConfig::new(TokenKeys::new(SigningKey::new(
            "k1",
            b"screenshot-secret-012345".to_vec(),
        )));
        Server::bind("127.0.0.1:0", config).await.expect("server binds")
    });
    let keys = server.keys().clone();
    let mint: MintToken = Arc::new(move |room: &str, user: &str, name: &str, _spectator: bool| {
        Some(keys.mint(
            VideoGrant::participant(room),
            &UserId::new(user).ok()?,
            Some(name.into()),
            3600,
        ))
    });
    let bots: Vec<Bot> = ["bot-1", "bot-2"]
        .iter()
        .map(|id| {
            let user_id = UserId::new(*id).expect("valid");
            Bot::start(BotConfig {
                server_url: server.ws_url(),
                room_id: RoomId::new("demo").expect("valid"),
                token: mint("demo", id, id, false).expect("token").into(),
                user: UserInfo {
                    user_id,
                    user_name: id.to_uppercase(),
                },
                publish: Some(StreamConfig::test_pattern(BOT_VIDEO.0, BOT_VIDEO.1, 15.0)),
            })
            .expect("bot starts")
        })
        .collect();
    let engine = Engine::new(EngineConfig::new(server.ws_url())).expect("engine");

    let result = App::new()
        .add_plugins(DefaultPlugins.set(WindowPlugin {
            primary_window: Some(Window {
                title: "Holoroom screenshot test".into(),
                resolution: (960, 540).into(),
                ..default()
            }),
            ..default()
        }))
        .insert_resource(WinitSettings {
            focused_mode: UpdateMode::Continuous,
            unfocused_mode: UpdateMode::Continuous,
        })
        .insert_resource(EngineBridge {
            engine: Arc::new(engine),
            tokens: TokenSource::Mint(mint),
        })
        .add_plugins(HoloroomPlugin {
            connection: Connection {
                server_url: server.ws_url(),
                room: "demo".into(),
                user: "viewer".into(),
                name: "Viewer".into(),
                spectate: false,
                embedded: false,
                note: None,
            },
        })
        .insert_resource(Check {
            started: Instant::now(),
            joined: false,
            zoomed: false,
            ready_frames: 0,
            shots: 0,
            captured: Arc::default(),
            geometry: Vec::new(),
            camera: None,
            found: Arc::default(),
        })
        .add_systems(Update, drive)
        .run();
    drop(bots);
    drop(runtime);
    result
}
