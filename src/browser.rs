//! The browser client. Settings come from the page's address
//! (`?room=lobby&user=ann&name=Ann&spectate=1&join=1`, `video=pattern` for the test pattern
//! and a tone instead of the camera); the room server is the one that
//! served the page, and guest tokens come from its dev endpoint. `join=1` joins at once.
//! The page's body carries the room's state in `data-holoroom-*` attributes (state, others
//! seen, live feeds, frames shown, frame codes read from remote pictures, where a live panel
//! is on the page, how many are heard speaking, live quality reports out/in, reconnects, chat
//! messages) for whoever drives the page (tests).

use std::sync::Arc;

use bevy::prelude::*;
use holoroom::audio::SpeakingLevel;
use holoroom::net::{ChatLog, EngineBridge, JoinRoom, RoomStateChanged, TokenSource};
use holoroom::room::ViewerCamera;
use holoroom::room::participants::{AppState, LocalParticipant, MediaChoice, Participant, VideoFeed};
use holoroom::video::{FaceViewer, PANEL_SIZE, UploadStats};
use holoroom::{Connection, HoloroomPlugin};
use holoroom_engine::protocol::RoomStateReason;
use holoroom_engine::{AudioSource, Engine, EngineConfig, VideoSource};

/// Where the page came from and what its address asks for.
struct Page {
    ws: String,
    params: web_sys::UrlSearchParams,
}

fn page() -> Option<Page> {
    let location = web_sys::window()?.location();
    let (protocol, host) = (location.protocol().ok()?, location.host().ok()?);
    let ws = if protocol == "https:" { "wss" } else { "ws" };
    Some(Page {
        ws: format!("{ws}://{host}/v1/ws"),
        params: web_sys::UrlSearchParams::new_with_str(&location.search().ok()?).ok()?,
    })
}

pub fn main() {
    let Some(page) = page() else {
        return;
    };
    let param = |name: &str| page.params.get(name).filter(|v| !v.is_empty());
    let random = (js_sys::Math::random() * 65_536.0) as u32;
    let connection = Connection {
        server_url: page.ws.clone(),
        room: param("room").unwrap_or_else(|| "lobby".into()),
        user: param("user").unwrap_or_else(|| format!("web-{random:04x}")),
        name: param("name").unwrap_or_else(|| "Guest".into()),
        spectate: param("spectate").is_some_and(|v| v == "1"),
        embedded: false,
        note: None,
        // What the address does not say, the login card takes from last time.
        remembered: ["room", "user", "name"].iter().all(|p| param(p).is_none()),
        remember: true,
    };
    let join_now = param("join").is_some_and(|v| v == "1");
    let tokens = TokenSource::Guest(page.ws.clone());
    let engine = match Engine::new(EngineConfig::new(page.ws)) {
        Ok(engine) => engine,
        Err(err) => {
            error!("can't start the engine: {err}");
            return;
        }
    };
    let mut app = App::new();
    app.add_plugins(holoroom::window_plugins(Window {
        title: "Holoroom".into(),
        canvas: Some("#holoroom".into()),
        fit_canvas_to_parent: true,
        ..default()
    }))
    // At most about 30 frames a second (video comes at 30 at most; input wakes it sooner): a
    // page shares the machine with its own encoder, and without a GPU every frame is drawn by
    // the CPU.
    .insert_resource(bevy::winit::WinitSettings {
        focused_mode: bevy::winit::UpdateMode::reactive(std::time::Duration::from_millis(33)),
        unfocused_mode: bevy::winit::UpdateMode::reactive(std::time::Duration::from_millis(33)),
    })
    .insert_resource(EngineBridge {
        engine: Arc::new(engine),
        tokens,
    })
    .add_plugins(HoloroomPlugin {
        connection: connection.clone(),
    })
    .add_systems(Update, report_to_page);
    // `video=pattern` sends the test pattern and a tone instead of the camera.
    if param("video").is_some_and(|v| v == "pattern") {
        app.insert_resource(MediaChoice {
            video: VideoSource::TestPattern,
            audio: AudioSource::Tone(440.0),
            microphone: None,
        });
    }
    if join_now {
        app.add_systems(Startup, move |mut joins: MessageWriter<JoinRoom>| {
            joins.write(JoinRoom {
                room: connection.room.clone(),
                user: connection.user.clone(),
                name: connection.name.clone(),
                spectate: connection.spectate,
            });
        });
    }
    app.run();
}

/// Puts the room's state on the page's body: `data-holoroom-state`, `-participants` (others
/// seen), `-frames` (video frames shown).
#[allow(clippy::too_many_arguments)] // a Bevy system: its parameters are what it reads
fn report_to_page(
    state: Res<State<AppState>>,
    uploads: Res<UploadStats>,
    participants: Query<&Participant>,
    feeds: Query<&VideoFeed>,
    camera: Query<(&Camera, &GlobalTransform), With<ViewerCamera>>,
    panels: Query<(&ChildOf, &GlobalTransform), With<FaceViewer>>,
    remote: Query<(&Participant, &VideoFeed), Without<LocalParticipant>>,
    speaking: Query<&SpeakingLevel>,
    (stats, chat): (Res<holoroom::ui::Stats>, Res<ChatLog>),
    mut room_states: MessageReader<RoomStateChanged>,
    mut reconnects: Local<u32>,
    time: Res<Time<Real>>,
    mut last_report: Local<f64>,
) {
    *reconnects += room_states
        .read()
        .filter(|m| m.reason == RoomStateReason::Reconnected)
        .count() as u32;
    // Four times a second is fresh enough for whoever reads the page.
    let now_secs = time.elapsed_secs_f64();
    if now_secs - *last_report < 0.25 {
        return;
    }
    *last_report = now_secs;
    let now = (*state.get(), participants.iter().count(), uploads.frames_uploaded);
    let Some(body) = web_sys::window().and_then(|w| w.document()).and_then(|d| d.body()) else {
        return;
    };
    let live = feeds.iter().filter(|f| f.frames_taken > 0).count();
    // Frame codes read back from the pictures the browser decoded (remote test patterns).
    let codes: Vec<String> = feeds
        .iter()
        .filter_map(|f| Some(f.slot.latest()?.code?.frame_number.to_string()))
        .collect();
    let _ = body.set_attribute("data-holoroom-codes", &codes.join(","));
    // Where the first live remote panel's corners are on the page (top-left, top-right,
    // bottom-left, bottom-right), so its pixels can be checked.
    if let Ok((camera, eye)) = camera.single() {
        let corners = panels.iter().find_map(|(parent, panel)| {
            let (who, _) = remote.get(parent.parent()).ok().filter(|(_, f)| f.frames_taken > 0)?;
            let mut points = Vec::new();
            for (x, y) in [(-0.5, 0.5), (0.5, 0.5), (-0.5, -0.5), (0.5, -0.5)] {
                let local = Vec3::new(x * PANEL_SIZE.x, y * PANEL_SIZE.y, 0.0);
                let at = camera.world_to_viewport(eye, panel.transform_point(local)).ok()?;
                points.push(format!("{:.1},{:.1}", at.x, at.y));
            }
            Some(format!("{}:{}", who.user_id, points.join(",")))
        });
        let _ = body.set_attribute("data-holoroom-panel", &corners.unwrap_or_default());
    }
    let _ = body.set_attribute("data-holoroom-state", &format!("{:?}", now.0));
    let _ = body.set_attribute("data-holoroom-participants", &now.1.to_string());
    let _ = body.set_attribute("data-holoroom-live-feeds", &live.to_string());
    let _ = body.set_attribute("data-holoroom-frames", &now.2.to_string());
    let heard = speaking.iter().filter(|level| level.speaking()).count();
    let _ = body.set_attribute("data-holoroom-reconnects", &reconnects.to_string());
    // Quality reports with moving video, publishing and playing.
    let reports = |publishing: bool| {
        stats
            .0
            .iter()
            .filter(|((_, out), q)| *out == publishing && q.fps > 0.0 && q.kbps > 0.0)
            .count()
    };
    let _ = body.set_attribute(
        "data-holoroom-quality",
        &format!("{}/{}", reports(true), reports(false)),
    );
    let _ = body.set_attribute("data-holoroom-speaking", &heard.to_string());
    let _ = body.set_attribute("data-holoroom-chat", &chat.messages.len().to_string());
}
