//! The real app window (under Xvfb with Mesa's software Vulkan), screen by screen, checked by
//! its pixels and kept as PNGs (`$CARGO_TARGET_DIR/test-artifacts/`, where the README's
//! pictures come from):
//!
//! 1. `login-card.png`: the login card, centred, with its join button.
//! 2. `room-2.png`: you and one other.
//! 3. `room-6.png`: a room of six from your seat (four bots with the test pattern, one whose
//!    microphone and camera are off, you): every video's frame code reads back from the
//!    screen, no two video rectangles overlap, every participant has a name plate, the
//!    camera-off one shows their initials on their colour.
//! 4. `room-focus.png`: one participant focused: their screen fills far more of the view and
//!    its frame code reads back.
//! 5. `room-overview.png`: the room from above with the participants drawer open.
//! 6. `room-chat.png`: back at your seat with the chat drawer open: two bots and you said
//!    something, and each name shows in its colour in the drawer.
//! 7. `room-self-view.png`: your self-view dragged with the mouse to the top left: it drops
//!    into that corner, whole, and your own frame code reads back from it there.
//! 8. `room-12.png`: twelve, back at your seat: the same checks as for six (six of them in
//!    the gallery behind the first ring).
//! 9. `room-strip.png`: join, room, focus and chat side by side.
//!
//! 2, 3 and 6 are judged alike: all of what matters is checked by pixels.
//!
//! Runs without the test harness so the window's event loop owns the main thread; `make test`
//! runs it under `xvfb-run`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bevy::input::ButtonState;
use bevy::input::mouse::MouseButtonInput;
use bevy::prelude::*;
use bevy::render::render_resource::TextureFormat;
use bevy::render::view::screenshot::{Screenshot, ScreenshotCaptured, save_to_disk};
use bevy::window::PrimaryWindow;
use bevy::winit::{UpdateMode, WinitSettings};
use holoroom::net::{ChatLog, EngineBridge, JoinRoom, MintToken, TokenSource};
use holoroom::room::participants::{AppState, LocalParticipant, Participant};
use holoroom::room::presence::avatar_colour;
use holoroom::room::{ViewMode, ViewerCamera};
use holoroom::ui::CallUi;
use holoroom::video::{FaceViewer, PANEL_SIZE, Panel, SelfView, SelfViewCorner};
use holoroom::{Connection, HoloroomPlugin};
use holoroom_engine::bot::{Bot, BotConfig};
use holoroom_engine::media::{CodeLayout, FrameCode, read_code_with};
use holoroom_engine::protocol::{RoomId, StreamMute, UserId, UserInfo, VideoGrant};
use holoroom_engine::{Engine, EngineConfig, StreamConfig};
use holoroom_server::{Server, ServerConfig, SigningKey, TokenKeys};

const WINDOW: (u32, u32) = (1280, 720);
const BOT_VIDEO: (u32, u32) = (640, 360);
/// Bots that publish the test pattern; one more publishes with its microphone and camera off.
/// The first is there from the start (the room of two).
const PATTERN_BOTS: [&str; 4] = ["ada", "grace", "alan", "edsger"];
const CAMERA_OFF: &str = "barbara";
/// Who says what in the chat shot (the first bots, in the order they joined).
const SPEAKERS: [(&str, &str); 2] = [("ada", "Welcome, everyone!"), ("grace", "Hi! Can you all hear me?")];
/// What you say in the chat shot.
const YOUR_LINE: &str = "Hello from the viewer";
/// Six more for the room of twelve (a smaller pattern: they only fill the room).
const MORE_BOTS: [&str; 6] = ["linus", "frances", "ken", "radia", "dennis", "hedy"];
const GIVE_UP: Duration = Duration::from_secs(90);
/// Frames the self-view's drag takes from where it is to the top left.
const DRAG_STEPS: u32 = 12;
/// Frames for the camera to ease into a new view (about a second under software rendering).
const SETTLE_FRAMES: u32 = 45;

fn artifact(name: &str) -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("test-artifacts");
    let _ = std::fs::create_dir_all(&dir);
    dir.join(name)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Login,
    Room2,
    Room,
    Focus,
    Overview,
    Chat,
    Moved,
    Room12,
    Done,
}

impl Stage {
    fn file(self) -> &'static str {
        match self {
            Stage::Login => "login-card.png",
            Stage::Room2 => "room-2.png",
            Stage::Room => "room-6.png",
            Stage::Focus => "room-focus.png",
            Stage::Overview => "room-overview.png",
            Stage::Chat => "room-chat.png",
            Stage::Moved => "room-self-view.png",
            Stage::Room12 => "room-12.png",
            Stage::Done => "",
        }
    }

    /// Remote participants in the room at this stage, and how many of them send pictures.
    fn people(self) -> (usize, usize) {
        match self {
            Stage::Login | Stage::Done => (0, 0),
            Stage::Room2 => (1, 1),
            Stage::Room | Stage::Focus | Stage::Overview | Stage::Chat | Stage::Moved => (5, 4),
            Stage::Room12 => (11, 10),
        }
    }

    /// Whether the strip shows this stage's shot.
    fn in_strip(self) -> bool {
        matches!(self, Stage::Login | Stage::Room | Stage::Focus | Stage::Chat)
    }
}

/// The bots in the room, and how to add more.
#[derive(Resource)]
struct Crowd {
    start: Box<dyn Fn(&str) -> Bot + Send + Sync>,
    bots: Vec<Bot>,
}

impl Crowd {
    fn add(&mut self, ids: &[&str]) {
        let started: Vec<Bot> = ids.iter().map(|id| (self.start)(id)).collect();
        self.bots.extend(started);
    }
}

/// Where things were on screen when a shot was asked for.
#[derive(Clone)]
struct Scene {
    camera: Camera,
    camera_transform: GlobalTransform,
    /// Each remote participant: user ID, their screen's transform, the video's size on it.
    screens: Vec<(String, Mat4, (u32, u32))>,
    /// Your self-view's transform and the size of your video on it.
    own: Option<(Mat4, (u32, u32))>,
}

#[derive(Resource)]
struct Check {
    started: Instant,
    stage: Stage,
    /// Frames since the stage's view was asked for.
    frames: u32,
    /// Shots of the current stage taken (a shot may be retried while video settles).
    tries: u32,
    waiting: bool,
    captured: Arc<Mutex<Option<Image>>>,
    scene: Option<Scene>,
    kept: Vec<(Stage, Image)>,
    /// bot-1's screen width on screen in the room view, for the focus check.
    room_width: f32,
    /// Frames into the self-view's drag, and where it started.
    drag: u32,
    drag_from: Option<Vec2>,
}

fn rgb_at(image: &Image, x: f32, y: f32) -> [u8; 3] {
    let (w, h) = (image.width() as i64, image.height() as i64);
    let (x, y) = ((x.round() as i64).clamp(0, w - 1), (y.round() as i64).clamp(0, h - 1));
    let Some(data) = &image.data else { return [0; 3] };
    let i = ((y * w + x) * 4) as usize;
    match image.texture_descriptor.format {
        TextureFormat::Bgra8Unorm | TextureFormat::Bgra8UnormSrgb => [data[i + 2], data[i + 1], data[i]],
        _ => [data[i], data[i + 1], data[i + 2]],
    }
}

fn luma_at(image: &Image, x: f32, y: f32) -> u8 {
    let [r, g, b] = rgb_at(image, x, y);
    (0.299 * f32::from(r) + 0.587 * f32::from(g) + 0.114 * f32::from(b)) as u8
}

fn close(a: [u8; 3], b: [u8; 3], tolerance: i32) -> bool {
    a.iter()
        .zip(b)
        .all(|(x, y)| (i32::from(*x) - i32::from(y)).abs() <= tolerance)
}

fn srgb8(colour: Color) -> [u8; 3] {
    let c = colour.to_srgba();
    [(c.red * 255.0) as u8, (c.green * 255.0) as u8, (c.blue * 255.0) as u8]
}

/// A point on a screen (panel coordinates in metres from its centre) on the screenshot.
fn on_screen(scene: &Scene, screen: Mat4, local: Vec3) -> Option<Vec2> {
    scene
        .camera
        .world_to_viewport(&scene.camera_transform, screen.transform_point3(local))
        .ok()
}

/// The screen's rectangle on the screenshot (min, max).
fn screen_rect(scene: &Scene, screen: Mat4) -> Option<(Vec2, Vec2)> {
    let (hx, hy) = (PANEL_SIZE.x / 2.0, PANEL_SIZE.y / 2.0);
    let corners =
        [(-hx, -hy), (hx, -hy), (hx, hy), (-hx, hy)].map(|(x, y)| on_screen(scene, screen, Vec3::new(x, y, 0.0)));
    let corners: Vec<Vec2> = corners.into_iter().collect::<Option<_>>()?;
    let min = corners.iter().copied().reduce(Vec2::min)?;
    let max = corners.iter().copied().reduce(Vec2::max)?;
    Some((min, max))
}

/// Reads a frame code off a screen: each frame pixel is mapped through the screen's transform
/// and the camera to a screenshot pixel.
fn read_screen(image: &Image, scene: &Scene, screen: Mat4, size: (u32, u32)) -> Option<FrameCode> {
    let layout = CodeLayout::for_size(size.0, size.1)?;
    let (fw, fh) = (size.0 as f32, size.1 as f32);
    read_code_with(
        |x, y| {
            let local = Vec3::new(
                (x as f32 / fw - 0.5) * PANEL_SIZE.x,
                (0.5 - y as f32 / fh) * PANEL_SIZE.y,
                0.0,
            );
            on_screen(scene, screen, local).map_or(0, |p| luma_at(image, p.x, p.y))
        },
        layout,
    )
}

/// Name plate colours (speaking, video arriving, no video).
const PLATES: [[u8; 3]; 3] = [[30, 110, 190], [25, 95, 55], [40, 44, 52]];

/// Whether a name plate is drawn just under a screen.
fn has_plate(image: &Image, scene: &Scene, screen: Mat4) -> bool {
    let Some(bottom) = on_screen(scene, screen, Vec3::new(0.0, -PANEL_SIZE.y / 2.0, 0.0)) else {
        return false;
    };
    // A run of 6 pixels of exactly one plate colour (between the letters, at the ends) on a line
    // just under the screen.
    (2..40).any(|dy| {
        let y = bottom.y + dy as f32;
        PLATES.iter().any(|plate| {
            (-60..60).any(|dx| (0..6).all(|i| close(rgb_at(image, bottom.x + (dx + i) as f32, y), *plate, 6)))
        })
    })
}

/// What the room shot must show; a list of what is missing (empty when all is there).
fn judge_room(image: &Image, scene: &Scene, check: &mut Check) -> Vec<String> {
    let mut missing = Vec::new();
    let rects: Vec<(String, (Vec2, Vec2))> = scene
        .screens
        .iter()
        .filter_map(|(who, screen, _)| Some((who.clone(), screen_rect(scene, *screen)?)))
        .collect();
    for (i, (a, ra)) in rects.iter().enumerate() {
        for (b, rb) in &rects[i + 1..] {
            let overlap = ra.0.x < rb.1.x && rb.0.x < ra.1.x && ra.0.y < rb.1.y && rb.0.y < ra.1.y;
            assert!(
                !overlap,
                "the screens of {a} ({ra:?}) and {b} ({rb:?}) overlap on screen"
            );
        }
    }
    for (who, screen, size) in &scene.screens {
        if !has_plate(image, scene, *screen) {
            missing.push(format!("{who}'s name plate"));
        }
        if who == CAMERA_OFF {
            // The disc (radius 0.7 of half the screen's height on screen), above and below
            // its letters.
            let centre = on_screen(scene, *screen, Vec3::ZERO).unwrap_or_default();
            let radius = screen_rect(scene, *screen).map_or(0.0, |(min, max)| 0.35 * (max.y - min.y));
            let colour = srgb8(avatar_colour(who));
            for dy in [-0.75 * radius, 0.75 * radius] {
                let pixel = rgb_at(image, centre.x, centre.y + dy);
                if !close(pixel, colour, 24) {
                    missing.push(format!("{who}'s initials on {colour:?} (saw {pixel:?})"));
                }
            }
        } else if read_screen(image, scene, *screen, *size).is_none() {
            missing.push(format!("{who}'s frame code"));
        }
        if who == PATTERN_BOTS[0]
            && let Some((min, max)) = screen_rect(scene, *screen)
        {
            check.room_width = max.x - min.x;
        }
    }
    missing
}

#[allow(clippy::type_complexity, clippy::too_many_arguments)]
fn drive(
    mut commands: Commands,
    mut check: ResMut<Check>,
    state: Res<State<AppState>>,
    mut joins: MessageWriter<JoinRoom>,
    mut exit: MessageWriter<AppExit>,
    remote: Query<(Entity, &Participant, Option<&Panel>), Without<LocalParticipant>>,
    screens: Query<(&ChildOf, &GlobalTransform), With<FaceViewer>>,
    camera: Query<(&Camera, &GlobalTransform), With<ViewerCamera>>,
    (mut view, mut call_ui, mut crowd): (ResMut<ViewMode>, ResMut<CallUi>, ResMut<Crowd>),
    (chat, bridge): (Res<ChatLog>, Res<EngineBridge>),
    (mut windows, mut mouse): (
        Query<(Entity, &mut Window), With<PrimaryWindow>>,
        MessageWriter<MouseButtonInput>,
    ),
    own: Query<(&GlobalTransform, &SelfView)>,
    (own_panel, mut corner): (Query<&Panel, With<LocalParticipant>>, ResMut<SelfViewCorner>),
) {
    if check.started.elapsed() > GIVE_UP {
        eprintln!("screenshot: gave up after {GIVE_UP:?} at {:?}", check.stage);
        exit.write(AppExit::error());
        return;
    }
    check.frames += 1;

    // A shot came back: judge it.
    let image = check.captured.lock().ok().and_then(|mut c| c.take());
    if let Some(image) = image {
        check.waiting = false;
        let scene = check.scene.clone().expect("scene kept with the shot");
        let missing = match check.stage {
            Stage::Login => {
                // The card is in the middle: its join button's colour is there.
                let accent = srgb8(Color::srgb_u8(46, 118, 214));
                let (w, h) = (image.width() as f32, image.height() as f32);
                let found = (0..60).any(|i| {
                    let y = h * (0.3 + 0.6 * i as f32 / 60.0);
                    close(rgb_at(&image, w / 2.0, y), accent, 30)
                });
                if found {
                    Vec::new()
                } else {
                    vec!["the join button in the middle".to_owned()]
                }
            }
            Stage::Room2 | Stage::Room | Stage::Room12 => judge_room(&image, &scene, &mut check),
            Stage::Focus => {
                let (who, screen, size) = &scene.screens[0];
                let mut missing = Vec::new();
                if read_screen(&image, &scene, *screen, *size).is_none() {
                    missing.push(format!("{who}'s frame code when focused"));
                }
                let width = screen_rect(&scene, *screen).map_or(0.0, |(min, max)| max.x - min.x);
                if width < 2.5 * check.room_width {
                    missing.push(format!("{who}'s screen {width} px wide (was {})", check.room_width));
                }
                missing
            }
            Stage::Overview => {
                // The drawer: an even patch of panel at the right edge.
                let (w, h) = (image.width() as f32, image.height() as f32);
                let base = rgb_at(&image, w - 20.0, h * 0.6);
                let even = (0..10).all(|i| close(rgb_at(&image, w - 20.0 - i as f32, h * 0.6 + i as f32), base, 3));
                if even {
                    Vec::new()
                } else {
                    vec!["the participants drawer".to_owned()]
                }
            }
            Stage::Chat => {
                // Each speaker's name in their colour, in the drawer on the right.
                let (w, h) = (image.width(), image.height());
                SPEAKERS
                    .iter()
                    .filter(|(who, _)| {
                        let colour = srgb8(avatar_colour(who));
                        let shown = (0..h)
                            .flat_map(|y| (w - 300..w).map(move |x| (x, y)))
                            .filter(|&(x, y)| close(rgb_at(&image, x as f32, y as f32), colour, 10))
                            .count();
                        shown < 12
                    })
                    .map(|(who, _)| format!("{who}'s name in the chat"))
                    .collect()
            }
            Stage::Moved => {
                let mut missing = Vec::new();
                match scene.own {
                    Some((at, size)) => {
                        let quarter = screen_rect(&scene, at).is_some_and(|(min, max)| {
                            min.x >= 0.0
                                && min.y >= 0.0
                                && max.x < WINDOW.0 as f32 / 2.0
                                && max.y < WINDOW.1 as f32 / 2.0
                        });
                        if !quarter {
                            missing.push("your self-view whole in the top left quarter".to_owned());
                        }
                        if read_screen(&image, &scene, at, size).is_none() {
                            missing.push("your frame code on your self-view".to_owned());
                        }
                    }
                    None => missing.push("your self-view".to_owned()),
                }
                missing
            }
            Stage::Done => Vec::new(),
        };
        if !missing.is_empty() {
            eprintln!(
                "screenshot {:?} try {}: missing {}",
                check.stage,
                check.tries,
                missing.join(", ")
            );
            check.frames = SETTLE_FRAMES / 2;
            return;
        }
        println!(
            "screenshot {:?}: ok, kept at {}",
            check.stage,
            artifact(check.stage.file()).display()
        );
        let stage = check.stage;
        check.kept.push((stage, image));
        check.tries = 0;
        check.frames = 0;
        check.stage = match check.stage {
            Stage::Login => {
                joins.write(JoinRoom {
                    room: "demo".into(),
                    user: "viewer".into(),
                    name: "Viewer".into(),
                    spectate: false,
                });
                Stage::Room2
            }
            Stage::Room2 => {
                crowd.add(&[PATTERN_BOTS[1], PATTERN_BOTS[2], PATTERN_BOTS[3], CAMERA_OFF]);
                Stage::Room
            }
            Stage::Room => {
                if let Some((entity, ..)) = remote.iter().find(|(_, p, _)| p.user_id.as_str() == PATTERN_BOTS[0]) {
                    view.focus(entity);
                }
                Stage::Focus
            }
            Stage::Focus => {
                view.toggle_overview();
                call_ui.participants = true;
                Stage::Overview
            }
            Stage::Overview => {
                view.toggle_overview();
                call_ui.participants = false;
                call_ui.chat = true;
                for (n, (_, text)) in SPEAKERS.iter().enumerate() {
                    if let Some(bot) = crowd.bots.get(n) {
                        bot.say(*text);
                    }
                }
                bridge.engine.send_room_message(YOUR_LINE);
                Stage::Chat
            }
            Stage::Chat => {
                call_ui.chat = false;
                check.drag = 0;
                Stage::Moved
            }
            Stage::Moved => {
                // Back where it was, clear of the gallery.
                *corner = SelfViewCorner::BottomRight;
                crowd.add(&MORE_BOTS);
                Stage::Room12
            }
            Stage::Room12 | Stage::Done => {
                let strip: Vec<&Image> = check
                    .kept
                    .iter()
                    .filter(|(s, _)| s.in_strip())
                    .map(|(_, i)| i)
                    .collect();
                write_strip(&strip);
                println!("1 passed, 0 failed");
                exit.write(AppExit::Success);
                Stage::Done
            }
        };
        return;
    }
    if check.waiting || check.stage == Stage::Done {
        return;
    }

    // Is the stage's view ready?
    let ready = match check.stage {
        Stage::Login => *state.get() == AppState::Login,
        _ => {
            let live = remote
                .iter()
                .filter(|(_, _, panel)| panel.is_some_and(|p| p.size.0 > 0))
                .count();
            let (people, pictures) = check.stage.people();
            // The chat shot waits for the bots' messages and yours.
            let said = check.stage != Stage::Chat
                || SPEAKERS
                    .iter()
                    .map(|(_, text)| *text)
                    .chain([YOUR_LINE])
                    .all(|text| chat.messages.iter().filter(|m| m.text == text).count() == 1);
            *state.get() == AppState::InCall && live == pictures && remote.iter().count() == people && said
        }
    };
    // The drag, a step a frame: take hold of the self-view's middle, move to the top left,
    // let go.
    if ready && check.stage == Stage::Moved && check.drag < DRAG_STEPS + 2 {
        let (Ok((window_entity, mut window)), Ok((cam, cam_transform)), Ok((view, _))) =
            (windows.single_mut(), camera.single(), own.single())
        else {
            return;
        };
        let Some(rect) = holoroom::video::panel_on_screen(cam, cam_transform, view) else {
            return;
        };
        let press = |state| MouseButtonInput {
            button: MouseButton::Left,
            state,
            window: window_entity,
        };
        let start = *check.drag_from.get_or_insert(rect.center());
        let target = Vec2::new(WINDOW.0 as f32 * 0.2, WINDOW.1 as f32 * 0.2);
        let step = check.drag;
        let cursor = start.lerp(target, (step as f32 / DRAG_STEPS as f32).min(1.0));
        window.set_cursor_position(Some(cursor));
        if step == 0 {
            mouse.write(press(ButtonState::Pressed));
        } else if step == DRAG_STEPS + 1 {
            mouse.write(press(ButtonState::Released));
        }
        check.drag += 1;
        check.frames = 0;
        return;
    }
    if !ready {
        check.frames = 0;
        return;
    }
    if check.frames < SETTLE_FRAMES {
        return;
    }
    if check.tries >= 6 {
        eprintln!(
            "screenshot {:?}: still missing after {} shots",
            check.stage, check.tries
        );
        exit.write(AppExit::error());
        return;
    }
    let Ok((cam, cam_transform)) = camera.single() else {
        return;
    };
    // The focused participant first.
    let mut found: Vec<(String, Mat4, (u32, u32))> = screens
        .iter()
        .filter_map(|(child_of, transform)| {
            let (_, who, panel) = remote.get(child_of.parent()).ok()?;
            Some((
                who.user_id.to_string(),
                transform.to_matrix(),
                panel.map_or((0, 0), |p| p.size),
            ))
        })
        .collect();
    found.sort_by_key(|(who, ..)| who != PATTERN_BOTS[0]);
    check.scene = Some(Scene {
        camera: cam.clone(),
        camera_transform: *cam_transform,
        screens: found,
        own: own
            .single()
            .ok()
            .map(|(view, _)| (view.to_matrix(), own_panel.single().map_or((0, 0), |p| p.size))),
    });
    check.tries += 1;
    check.waiting = true;
    let captured = check.captured.clone();
    commands
        .spawn(Screenshot::primary_window())
        .observe(save_to_disk(artifact(check.stage.file())))
        .observe(move |shot: On<ScreenshotCaptured>| {
            if let Ok(mut slot) = captured.lock() {
                *slot = Some(shot.image.clone());
            }
        });
}

/// The kept shots at half size, side by side.
fn write_strip(shots: &[&Image]) {
    let (w, h) = (WINDOW.0 as usize / 2, WINDOW.1 as usize / 2);
    let mut strip = vec![0u8; w * shots.len() * h * 3];
    for (n, shot) in shots.iter().enumerate() {
        for y in 0..h {
            for x in 0..w {
                let pixel = rgb_at(shot, (x * 2) as f32, (y * 2) as f32);
                let at = (y * w * shots.len() + n * w + x) * 3;
                strip[at..at + 3].copy_from_slice(&pixel);
            }
        }
    }
    let path = artifact("room-strip.png");
    let Ok(file) = std::fs::File::create(&path) else { return };
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), (w * shots.len()) as u32, h as u32);
    encoder.set_color(png::ColorType::Rgb);
    if let Ok(mut writer) = encoder.write_header() {
        let _ = writer.write_image_data(&strip);
    }
    println!("screenshot strip kept at {}", path.display());
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
    let capitalised = |id: &str| {
        let mut name = id.to_owned();
        name[..1].make_ascii_uppercase();
        name
    };
    let server_url = server.ws_url();
    let bot_mint = mint.clone();
    let start = move |id: &str| {
        let more = MORE_BOTS.contains(&id);
        let (w, h, fps) = if more {
            (320, 180, 10.0)
        } else {
            (BOT_VIDEO.0, BOT_VIDEO.1, 15.0)
        };
        let bot = Bot::start(BotConfig {
            server_url: server_url.clone(),
            room_id: RoomId::new("demo").expect("valid"),
            token: bot_mint("demo", id, &capitalised(id), false).expect("token").into(),
            user: UserInfo {
                user_id: UserId::new(id).expect("valid"),
                user_name: capitalised(id),
            },
            publish: Some(StreamConfig::test_pattern(w, h, fps)),
            // Only the app watches: two cores draw the room and decode eleven streams.
            plays: false,
        })
        .expect("bot starts");
        // Microphone and camera off, as from the call bar: the room is told, and the viewer
        // shows initials, not the black picture that still arrives.
        if id == CAMERA_OFF {
            bot.mute(StreamMute {
                audio: true,
                video: true,
            });
        }
        bot
    };
    let mut crowd = Crowd {
        start: Box::new(start),
        bots: Vec::new(),
    };
    crowd.add(&[PATTERN_BOTS[0]]);
    let engine = Engine::new(EngineConfig::new(server.ws_url())).expect("engine");

    let result = App::new()
        .add_plugins(DefaultPlugins.set(WindowPlugin {
            primary_window: Some(Window {
                title: "Holoroom screenshot test".into(),
                resolution: WINDOW.into(),
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
                remembered: false,
                remember: false,
            },
        })
        .insert_resource(Check {
            started: Instant::now(),
            stage: Stage::Login,
            frames: 0,
            tries: 0,
            waiting: false,
            captured: Arc::default(),
            scene: None,
            kept: Vec::new(),
            room_width: 0.0,
            drag: 0,
            drag_from: None,
        })
        .insert_resource(crowd)
        .add_systems(Update, drive)
        .run();
    drop(runtime);
    result
}
