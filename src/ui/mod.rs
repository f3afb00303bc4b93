//! The egui overlay: the login card (prefilled from last time) with your camera's preview and
//! devices; in call, the call bar (microphone, camera, devices, participants, connection,
//! overview, leave) with its drawers, one line of status, and a name plate under every screen
//! (initials in the participant's colour while there is no picture).

use std::collections::BTreeMap;

mod chat;
pub mod look;
pub mod preview;
mod sentence;
pub mod theme;

pub use sentence::{sentence, worth_retrying};

use bevy::ecs::system::SystemParam;
use bevy::prelude::*;
use bevy_egui::{EguiContexts, EguiPlugin, EguiPrimaryContextPass, egui};
#[cfg(not(target_arch = "wasm32"))]
use holoroom_engine::bot::{Bot, BotConfig};
use holoroom_engine::protocol::StreamId;
#[cfg(not(target_arch = "wasm32"))]
use holoroom_engine::protocol::{RoomId, UserId, UserInfo};
use holoroom_engine::{AudioSource, StreamQuality, VideoSource};

use crate::Connection;
use crate::audio::{AudioSettings, Muted, RoomAudio, SpeakingLevel};
use crate::net::ActiveSpeakers;
use crate::net::OwnStream;
#[cfg(not(target_arch = "wasm32"))]
use crate::net::TokenSource;
use crate::net::{ChatLog, EngineBridge, JoinRoom, LeaveRoom, Me, QualityUpdated};
use crate::quality::ViewQuality;
use crate::room::ViewerCamera;
use crate::room::participants::{
    AppState, LastError, LocalParticipant, MediaChoice, MediaMute, Participant, Reconnecting, VideoFeed,
};
use crate::video::UploadStats;
use look::{Icon, Icons};

/// What the login form holds.
#[derive(Resource, Debug, Clone)]
pub struct LoginForm {
    pub room: String,
    pub user: String,
    pub name: String,
    pub spectate: bool,
}

/// The newest quality report per stream.
#[derive(Resource, Debug, Default)]
pub struct Stats(pub BTreeMap<(StreamId, bool), StreamQuality>);

/// What this device can do, once the check at start has finished.
#[derive(Resource, Debug)]
pub struct Requirements(pub Option<holoroom_engine::SystemRequirements>);

/// The device check under way: it opens devices, so it runs off the frame.
#[derive(Resource, Debug)]
struct RequirementsCheck(crossbeam_channel::Receiver<holoroom_engine::SystemRequirements>);

fn start_requirements_check(mut commands: Commands, bridge: Option<Res<EngineBridge>>) {
    commands.insert_resource(Requirements(None));
    if let Some(bridge) = bridge {
        commands.insert_resource(RequirementsCheck(bridge.engine.check_system_requirements_later()));
    }
}

fn finish_requirements_check(check: Option<Res<RequirementsCheck>>, mut requirements: ResMut<Requirements>) {
    if let Some(done) = check.and_then(|c| c.0.try_recv().ok()) {
        requirements.0 = Some(done);
    }
}

/// The devices this machine has, listed at start and on "Refresh".
#[derive(Resource, Debug, Default)]
pub struct DeviceList {
    pub cameras: Vec<holoroom_engine::devices::CameraInfo>,
    pub microphones: Vec<String>,
    pub speakers: Vec<String>,
}

impl DeviceList {
    pub fn scan() -> DeviceList {
        DeviceList {
            cameras: holoroom_engine::devices::cameras(),
            microphones: holoroom_engine::devices::input_devices(),
            speakers: holoroom_engine::devices::output_devices(),
        }
    }
}

/// Demo participants run in this process (embedded server only).
#[derive(Resource, Default, Debug)]
pub struct DemoBots(pub Vec<DemoBot>);

impl DemoBots {
    /// Each bot logs out on its own time, not the frame's.
    fn leave_all(&mut self) {
        #[cfg(not(target_arch = "wasm32"))]
        for bot in std::mem::take(&mut self.0) {
            bot.leave();
        }
        #[cfg(target_arch = "wasm32")]
        self.0.clear();
    }
}

/// A demo participant: a bot in this process (none in a browser, which has no embedded server).
#[cfg(not(target_arch = "wasm32"))]
pub type DemoBot = Bot;
#[cfg(target_arch = "wasm32")]
pub type DemoBot = ();

/// The part of the screen the room shows through (not under the call bar or a drawer).
#[derive(Resource, Debug, Clone, Copy, Default)]
pub struct RoomRect(pub Option<egui::Rect>);

/// Which of the call bar's drawers and windows are open.
#[derive(Resource, Debug, Default)]
pub struct CallUi {
    pub participants: bool,
    pub chat: bool,
    /// The chat was just opened: its line takes the keyboard.
    pub chat_focus: bool,
    pub connection: bool,
    pub devices: bool,
}

impl CallUi {
    /// Opens or closes the participants drawer (it shares the right side with the chat).
    pub fn toggle_participants(&mut self) {
        self.participants = !self.participants;
        self.chat &= !self.participants;
    }

    /// Opens or closes the chat; opened, its line takes the keyboard.
    pub fn toggle_chat(&mut self) {
        self.chat = !self.chat;
        self.chat_focus = self.chat;
        self.participants &= !self.chat;
    }
}

pub fn plugin(app: &mut App) {
    app.add_plugins((EguiPlugin::default(), look::plugin))
        .init_resource::<Stats>()
        .init_resource::<DemoBots>()
        .init_resource::<CallUi>()
        .init_resource::<RoomRect>()
        .insert_resource(Requirements(None))
        .insert_resource(DeviceList::scan())
        .add_systems(Startup, (prefill, start_requirements_check))
        .add_systems(
            Update,
            (
                collect_stats,
                (preview::keep_preview, preview::update_preview).chain(),
                finish_requirements_check,
                window_title,
                remember_on_join,
            ),
        )
        .add_systems(
            EguiPrimaryContextPass,
            (theme::apply, login_card, call_bar, name_plates).chain(),
        );
}

/// The form starts from what was used last time (see [`crate::settings`]), else from how the
/// app was started.
fn prefill(
    mut commands: Commands,
    connection: Res<Connection>,
    devices: Res<DeviceList>,
    mut choice: ResMut<MediaChoice>,
    mut audio: ResMut<AudioSettings>,
) {
    let remembered = if connection.remembered {
        crate::settings::Settings::load()
    } else {
        crate::settings::Settings::default()
    };
    let or = |saved: &Option<String>, given: &str| {
        saved
            .clone()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| given.to_owned())
    };
    commands.insert_resource(LoginForm {
        room: or(&remembered.room, &connection.room),
        user: connection.user.clone(),
        name: or(&remembered.name, &connection.name),
        spectate: connection.spectate,
    });
    // Devices by name: indices change as devices come and go.
    if let Some(camera) = remembered
        .camera
        .as_ref()
        .and_then(|name| devices.cameras.iter().find(|c| &c.name == name))
    {
        choice.video = VideoSource::Camera(camera.index);
    }
    if let Some(microphone) = remembered
        .microphone
        .as_ref()
        .filter(|name| devices.microphones.contains(name))
    {
        choice.microphone = Some(microphone.clone());
    }
    if let Some(speaker) = remembered.speaker.filter(|name| devices.speakers.contains(name)) {
        audio.output_device = Some(speaker);
    }
}

/// Remembers the room, the name and the devices for next time, once a join succeeded (however
/// it was started: the card, or an address that joins at once).
fn remember_on_join(
    mut states: MessageReader<crate::net::RoomStateChanged>,
    form: Option<Res<LoginForm>>,
    connection: Res<Connection>,
    devices: Res<DeviceList>,
    choice: Res<MediaChoice>,
    audio: Res<AudioSettings>,
) {
    let joined = states
        .read()
        .any(|s| s.reason == holoroom_engine::protocol::RoomStateReason::Logined);
    if let (true, true, Some(form)) = (joined, connection.remember, form) {
        remember(&form, &devices, &choice, &audio);
    }
}

/// Remembers the form and the devices for next time.
fn remember(form: &LoginForm, devices: &DeviceList, choice: &MediaChoice, audio: &AudioSettings) {
    let camera = match &choice.video {
        VideoSource::Camera(index) => devices
            .cameras
            .iter()
            .find(|c| c.index == *index)
            .map(|c| c.name.clone()),
        _ => None,
    };
    let settings = crate::settings::Settings {
        room: Some(form.room.clone()),
        name: Some(form.name.clone()),
        camera,
        microphone: choice.microphone.clone(),
        speaker: audio.output_device.clone(),
    };
    if let Err(error) = settings.save() {
        warn!("{error}");
    }
}

/// The window's title says which room you are in.
fn window_title(
    me: Option<Res<Me>>,
    state: Res<State<AppState>>,
    mut windows: Query<&mut Window, With<bevy::window::PrimaryWindow>>,
) {
    let title = match (&me, state.get()) {
        (Some(me), AppState::InCall) => format!("{} · Holoroom", me.room_id),
        _ => "Holoroom".to_owned(),
    };
    for mut window in &mut windows {
        if window.title != title {
            window.title.clone_from(&title);
        }
    }
}

fn collect_stats(mut updates: MessageReader<QualityUpdated>, mut stats: ResMut<Stats>) {
    for update in updates.read() {
        stats
            .0
            .insert((update.stream_id.clone(), update.publishing), update.quality);
    }
}

/// The login screen: a card in the middle with room and name, your camera's preview, devices,
/// and a join button that says what is under way; problems as sentences.
fn login_card(
    mut contexts: EguiContexts,
    state: Res<State<AppState>>,
    connection: Res<Connection>,
    form: Option<ResMut<LoginForm>>,
    last_error: Res<LastError>,
    requirements: Res<Requirements>,
    mut picker: DevicePicker,
    mut preview: Option<ResMut<preview::Preview>>,
    mut joins: MessageWriter<JoinRoom>,
) -> Result {
    let Some(mut form) = form else {
        return Ok(());
    };
    if *state.get() == AppState::InCall {
        return Ok(());
    }
    let connecting = *state.get() == AppState::Connecting;
    // The preview's picture is a Bevy image the overlay shows by its texture id.
    let preview_texture = preview.as_ref().map(|p| {
        p.texture()
            .unwrap_or_else(|| contexts.add_image(bevy_egui::EguiTextureHandle::Strong(p.image().clone())))
    });
    let ctx = contexts.ctx_mut()?;
    let width = (ctx.content_rect().width() - 32.0).clamp(280.0, 420.0);
    egui::Window::new("Join a room")
        .title_bar(false)
        .anchor(egui::Align2::CENTER_CENTER, [0.0, 0.0])
        .resizable(false)
        .collapsible(false)
        .fixed_size([width, 0.0])
        .show(ctx, |ui| {
            ui.vertical_centered(|ui| {
                ui.heading("Holoroom");
                ui.label(egui::RichText::new("Sit down at the table with the people in your room.").weak());
            });
            ui.add_space(8.0);
            egui::Grid::new("login")
                .num_columns(2)
                .spacing([12.0, 8.0])
                .show(ui, |ui| {
                    ui.label("Room");
                    ui.add(egui::TextEdit::singleline(&mut form.room).desired_width(f32::INFINITY));
                    ui.end_row();
                    ui.label("Your name");
                    ui.add(egui::TextEdit::singleline(&mut form.name).desired_width(f32::INFINITY));
                    ui.end_row();
                });
            ui.collapsing("More", |ui| {
                egui::Grid::new("login-more").num_columns(2).show(ui, |ui| {
                    ui.label("User ID");
                    ui.text_edit_singleline(&mut form.user);
                    ui.end_row();
                    ui.label("Room server");
                    ui.monospace(&connection.server_url);
                    ui.end_row();
                });
                ui.checkbox(&mut form.spectate, "Join as a spectator (unseen, free camera)");
                if let Some(note) = &connection.note {
                    ui.label(note);
                }
            });
            if !form.spectate
                && let Some(preview) = preview.as_mut()
                && let Some(texture) = preview_texture
            {
                ui.add_space(4.0);
                ui.vertical_centered(|ui| preview.show(ui, texture));
                ui.horizontal(|ui| {
                    ui.label("Microphone");
                    // About -50 dBFS to full scale across the bar.
                    let fill = ((preview.level.max(1e-6).log10() * 20.0 + 50.0) / 50.0).clamp(0.0, 1.0);
                    ui.add(egui::ProgressBar::new(fill).desired_height(8.0))
                        .on_hover_text("What your microphone hears");
                });
            }
            ui.collapsing("Camera, microphone and speaker", |ui| picker.show(ui));
            // Device problems, each said once and kindly, the detail on hover.
            let preview_note = preview.as_ref().and_then(|p| p.note()).map(str::to_owned);
            if let Some(check) = &requirements.0 {
                let camera = check.camera.as_ref().err().cloned().or_else(|| preview_note.clone());
                for (problem, friendly) in [
                    (check.webrtc.as_ref().err().cloned(), "WebRTC is not available here"),
                    (camera, "No camera found: others will see a test pattern"),
                    (
                        check.microphone.as_ref().err().cloned(),
                        "No microphone: others will hear silence",
                    ),
                ] {
                    if let Some(detail) = problem {
                        notice(ui, friendly, &detail.to_string());
                    }
                }
            } else if let Some(note) = &preview_note {
                notice(ui, "Your camera shows a stand-in", note);
            }
            ui.add_space(8.0);
            ui.vertical_centered_justified(|ui| {
                if connecting {
                    ui.add_enabled_ui(false, |ui| {
                        ui.horizontal(|ui| {
                            ui.spinner();
                            ui.label("Connecting to the room…");
                        });
                    });
                } else {
                    let label = if last_error.0.as_ref().is_some_and(worth_retrying) {
                        "Try again"
                    } else if form.spectate {
                        "Watch"
                    } else {
                        "Join"
                    };
                    let join = ui.add(
                        egui::Button::new(egui::RichText::new(label).size(17.0).strong())
                            .fill(theme::ACCENT)
                            .min_size(egui::vec2(0.0, 36.0)),
                    );
                    if join.clicked() || pressed_once(ui.ctx(), egui::Key::Enter) {
                        joins.write(JoinRoom {
                            room: form.room.clone(),
                            user: form.user.clone(),
                            name: form.name.clone(),
                            spectate: form.spectate,
                        });
                    }
                }
            });
            if let Some(error) = &last_error.0 {
                ui.add_space(4.0);
                ui.colored_label(theme::ERROR, sentence(error));
            }
        });
    Ok(())
}

/// Whether `key` went down this frame (a held key's repeats do not count).
fn pressed_once(ctx: &egui::Context, key: egui::Key) -> bool {
    ctx.input(|i| {
        i.events
            .iter()
            .any(|e| matches!(e, egui::Event::Key { key: k, pressed: true, repeat: false, .. } if *k == key))
    })
}

/// A problem said once, kindly; the technical detail on hover.
fn notice(ui: &mut egui::Ui, friendly: &str, detail: &str) {
    ui.label(egui::RichText::new(format!("⚠ {friendly}")).color(theme::WARNING))
        .on_hover_text(detail);
}

/// The call bar at the bottom (microphone, camera, devices, participants, connection,
/// overview, leave; each with a tooltip and a key), the drawers it opens, and one line of
/// status.
fn call_bar(
    mut contexts: EguiContexts,
    state: Res<State<AppState>>,
    connection: Res<Connection>,
    me: Option<Res<Me>>,
    bridge: Option<Res<EngineBridge>>,
    participants: Query<(
        Entity,
        &Participant,
        Option<&VideoFeed>,
        Option<&SpeakingLevel>,
        Option<&ViewQuality>,
        Option<&crate::audio::Volume>,
        Has<Muted>,
        Has<LocalParticipant>,
        Option<&MediaMute>,
    )>,
    (stats, speakers, icons): (Res<Stats>, Option<Res<ActiveSpeakers>>, Res<Icons>),
    uploads: Res<UploadStats>,
    (last_error, reconnecting): (Res<LastError>, Res<Reconnecting>),
    (own, room_audio): (Option<Res<OwnStream>>, Option<Res<RoomAudio>>),
    (mut open, mut room_rect, mut chat): (ResMut<CallUi>, ResMut<RoomRect>, ResMut<ChatLog>),
    mut view: ResMut<crate::room::ViewMode>,
    mut picker: DevicePicker,
    mut bots: ResMut<DemoBots>,
    mut leave: MessageWriter<LeaveRoom>,
    mut commands: Commands,
) -> Result {
    if *state.get() != AppState::InCall {
        room_rect.0 = None;
        return Ok(());
    }
    let ctx = contexts.ctx_mut()?;
    // Panels take their room from this, and what is left is the room's.
    let mut root = egui::Ui::new(
        ctx.clone(),
        "call".into(),
        egui::UiBuilder::new()
            .layer_id(egui::LayerId::background())
            .max_rect(ctx.viewport_rect()),
    );
    let typing = ctx.egui_wants_keyboard_input();
    let key = |k: egui::Key| !typing && pressed_once(ctx, k);
    let microphone_on = own.as_ref().is_some_and(|o| !o.local.is_audio_muted());
    let camera_on = own.as_ref().is_some_and(|o| !o.local.is_video_muted());
    let mut toggle_microphone = key(egui::Key::M);
    let mut toggle_camera = key(egui::Key::V);
    if key(egui::Key::P) {
        open.toggle_participants();
    }
    if key(egui::Key::C) {
        open.toggle_chat();
    }
    if key(egui::Key::I) {
        open.connection = !open.connection;
    }
    // Views are for the seated; spectators fly.
    let seated = me.as_ref().is_some_and(|m| !m.spectator);
    if seated && key(egui::Key::O) {
        view.toggle_overview();
    }
    let count = participants.iter().count();
    let mut leaving = false;

    egui::Panel::bottom("call-bar")
        .resizable(false)
        .frame(egui::Frame::side_top_panel(&ctx.global_style()).inner_margin(egui::Margin::symmetric(12, 8)))
        .show(&mut root, |ui| {
            ui.horizontal(|ui| {
                if let Some(me) = &me {
                    ui.label(egui::RichText::new(me.room_id.as_str()).strong())
                        .on_hover_text(format!("You are {} in room {}", me.user.user_name, me.room_id));
                    ui.label(egui::RichText::new(format!("· {count} here")).weak());
                    if me.spectator {
                        ui.label(egui::RichText::new("· watching").weak());
                    }
                }
                if reconnecting.0 {
                    ui.spinner();
                    ui.colored_label(theme::WARNING, "Reconnecting…");
                }
                let notes: Vec<&str> = own
                    .as_ref()
                    .and_then(|o| o.local.note())
                    .into_iter()
                    .chain(room_audio.as_ref().and_then(|a| a.note()))
                    .collect();
                if let Some(first) = notes.first() {
                    let friendly = if notes.iter().any(|n| n.to_lowercase().contains("camera")) {
                        "No camera: others see a test pattern. Choose a camera"
                    } else {
                        first.split_once(". ").map_or(*first, |(s, _)| s)
                    };
                    if ui
                        .link(egui::RichText::new(format!("⚠ {friendly}")).color(theme::WARNING))
                        .on_hover_text(notes.join("\n"))
                        .clicked()
                    {
                        open.devices = true;
                    }
                }
                if let Some(error) = &last_error.0 {
                    ui.colored_label(theme::WARNING, sentence(error));
                }
            });
            ui.add_space(4.0);
            ui.horizontal(|ui| {
                // Centred: every button has a fixed width.
                let spacing = ui.spacing().item_spacing.x;
                let buttons = if own.is_some() { 3.0 } else { 0.0 } + if seated { 4.0 } else { 3.0 };
                let demo = if connection.embedded && cfg!(not(target_arch = "wasm32")) {
                    DEMO_WIDTH + spacing
                } else {
                    0.0
                };
                let width = buttons * (ICON_WIDTH + spacing) + demo + 12.0 + LEAVE_WIDTH;
                ui.add_space(((ui.available_width() - width) / 2.0).max(0.0));
                if own.is_some() {
                    toggle_microphone |= switch_button(
                        ui,
                        &icons,
                        microphone_on,
                        [Icon::Microphone, Icon::MicrophoneOff],
                        ["Mute your microphone (M)", "Unmute your microphone (M)"],
                    );
                    toggle_camera |= switch_button(
                        ui,
                        &icons,
                        camera_on,
                        [Icon::Camera, Icon::CameraOff],
                        ["Turn your camera off (V)", "Turn your camera on (V)"],
                    );
                    if drawer_button(
                        ui,
                        &icons,
                        Icon::Devices,
                        open.devices,
                        "Camera, microphone and speaker",
                    ) {
                        open.devices = !open.devices;
                    }
                }
                if drawer_button(
                    ui,
                    &icons,
                    Icon::Participants,
                    open.participants,
                    "Participants: hear each, set volumes (P)",
                ) {
                    open.toggle_participants();
                }
                let unread = if open.chat { 0 } else { chat.unread };
                let tip = match unread {
                    0 => "Chat with everyone (C)".to_owned(),
                    1 => "Chat: 1 new message (C)".to_owned(),
                    n => format!("Chat: {n} new messages (C)"),
                };
                let clicked = drawer_button(ui, &icons, Icon::Chat, open.chat, &tip);
                if unread > 0 {
                    // A badge on the button's corner with the count.
                    let corner = ui.min_rect().right_top() + egui::vec2(-6.0, 6.0);
                    ui.painter().circle_filled(corner, 8.0, theme::OFF);
                    ui.painter().text(
                        corner,
                        egui::Align2::CENTER_CENTER,
                        unread.min(99).to_string(),
                        egui::FontId::proportional(11.0),
                        egui::Color32::WHITE,
                    );
                }
                if clicked {
                    open.toggle_chat();
                }
                if drawer_button(
                    ui,
                    &icons,
                    Icon::Connection,
                    open.connection,
                    "Connection and quality (I)",
                ) {
                    open.connection = !open.connection;
                }
                if seated
                    && drawer_button(
                        ui,
                        &icons,
                        Icon::Overview,
                        view.is_overview(),
                        "Overview from above (O); F focuses who you look at",
                    )
                {
                    view.toggle_overview();
                }
                // Demo participants run in this process, beside an embedded server (not in a browser).
                #[cfg(target_arch = "wasm32")]
                let _ = (&connection, &bridge);
                #[cfg(not(target_arch = "wasm32"))]
                if connection.embedded
                    && let (Some(me), Some(bridge)) = (&me, &bridge)
                    && ui
                        .add(egui::Button::new("＋ Demo").min_size(egui::vec2(DEMO_WIDTH, 34.0)))
                        .on_hover_text("Add two demo participants (bots showing a test pattern)")
                        .clicked()
                {
                    add_demo_bots(&mut bots, &connection, bridge, &me.room_id);
                }
                ui.add_space(12.0);
                if ui
                    .add(
                        match icons.image(Icon::Leave, 18.0, egui::Color32::WHITE) {
                            Some(image) => egui::Button::image_and_text(
                                image,
                                egui::RichText::new("Leave").strong().color(egui::Color32::WHITE),
                            ),
                            None => {
                                egui::Button::new(egui::RichText::new("Leave").strong().color(egui::Color32::WHITE))
                            }
                        }
                        .fill(theme::ERROR)
                        .min_size(egui::vec2(LEAVE_WIDTH, 34.0)),
                    )
                    .on_hover_text("Leave the room")
                    .clicked()
                {
                    leaving = true;
                }
            });
        });

    // Through the engine: the room is told too, so others show you muted, not silent or black.
    if let (Some(own), Some(bridge)) = (&own, &bridge) {
        if toggle_microphone {
            bridge.engine.mute_stream_audio(&own.local, microphone_on);
        }
        if toggle_camera {
            bridge.engine.mute_stream_video(&own.local, camera_on);
        }
    }
    if leaving {
        leave.write(LeaveRoom);
        bots.leave_all();
    }

    if open.chat {
        let engine = bridge.as_ref().map(|b| b.engine.as_ref());
        let focus = std::mem::take(&mut open.chat_focus);
        chat::drawer(&mut root, &mut chat, focus, me.as_deref(), engine);
    }
    if open.participants {
        egui::Panel::right("participants")
            .resizable(false)
            .default_size(270.0)
            .show(&mut root, |ui| {
                ui.heading(format!("Participants ({count})"));
                ui.separator();
                for (entity, participant, feed, level, quality, volume, muted, local, mute) in &participants {
                    let speaking = level.is_some_and(SpeakingLevel::speaking)
                        || speakers.as_ref().is_some_and(|s| s.0.contains(&participant.user_id));
                    ui.horizontal(|ui| {
                        let (dot, _) = ui.allocate_exact_size(egui::vec2(10.0, 10.0), egui::Sense::hover());
                        let colour = crate::room::presence::avatar_colour(participant.user_id.as_str());
                        ui.painter().circle_filled(dot.center(), 5.0, theme::colour32(colour));
                        // What they switched off themselves (yours is on the call bar).
                        let mute = mute.map(|m| m.0).unwrap_or_default();
                        let marks = match (mute.audio, mute.video) {
                            (true, true) => " 🔇 camera off",
                            (true, false) => " 🔇",
                            (false, true) => " · camera off",
                            (false, false) => "",
                        };
                        let name = egui::RichText::new(format!(
                            "{}{}{marks}",
                            participant.name,
                            if local { " (you)" } else { "" }
                        ));
                        let label = ui.label(if speaking { name.strong().color(SPEAKING) } else { name });
                        let frames = feed.map_or(0, |f| f.frames_taken);
                        let arriving = feed
                            .and_then(|f| f.slot.latest())
                            .map(|f| format!(", receiving {}x{}", f.frame.width, f.frame.height))
                            .unwrap_or_default();
                        let layer = quality
                            .map(|q| format!("\nVideo layer asked for: {} ({}){arriving}", q.layer.name(), q.reason))
                            .unwrap_or_default();
                        label.on_hover_text(format!("{frames} frames shown{layer}"));
                        if seated
                            && !local
                            && ui
                                .button("Focus")
                                .on_hover_text("Look at them (F, or a click on their screen)")
                                .clicked()
                        {
                            view.focus(entity);
                        }
                    });
                    if !local {
                        ui.horizontal(|ui| {
                            ui.add_space(18.0);
                            let mut hear = !muted;
                            if ui.checkbox(&mut hear, "Hear").changed() {
                                if hear {
                                    commands.entity(entity).remove::<Muted>();
                                } else {
                                    commands.entity(entity).insert(Muted);
                                }
                            }
                            let mut level = volume.map_or(1.0, |v| v.0);
                            if ui
                                .add_enabled(hear, egui::Slider::new(&mut level, 0.0..=2.0).show_value(false))
                                .on_hover_text("Volume (for you only)")
                                .changed()
                            {
                                commands.entity(entity).insert(crate::audio::Volume(level));
                            }
                        });
                    }
                    ui.add_space(4.0);
                }
            });
    }

    room_rect.0 = Some(root.available_rect_before_wrap());

    if open.devices {
        let mut still_open = true;
        egui::Window::new("Devices")
            .open(&mut still_open)
            .anchor(egui::Align2::CENTER_BOTTOM, [0.0, -80.0])
            .resizable(false)
            .collapsible(false)
            .show(ctx, |ui| picker.show(ui));
        open.devices = still_open;
    }

    if open.connection {
        let mut still_open = true;
        egui::Window::new("Connection")
            .open(&mut still_open)
            .anchor(egui::Align2::LEFT_TOP, [12.0, 12.0])
            .resizable(false)
            .collapsible(false)
            .show(ctx, |ui| {
                ui.label(format!("{} frames shown", uploads.frames_uploaded));
                if stats.0.is_empty() {
                    ui.label("No media yet.");
                }
                egui::Grid::new("stats").striped(true).show(ui, |ui| {
                    for label in ["", "stream", "size", "fps", "kbps", "rtt", "loss"] {
                        ui.label(egui::RichText::new(label).weak());
                    }
                    ui.end_row();
                    for ((stream, publishing), q) in &stats.0 {
                        ui.label(if *publishing { "out" } else { "in" });
                        ui.monospace(stream.as_str());
                        ui.monospace(format!("{}x{}", q.width, q.height));
                        ui.monospace(format!("{:.0}", q.fps));
                        ui.monospace(format!("{:.0}", q.kbps));
                        ui.monospace(q.rtt_ms.map_or("-".into(), |r| format!("{r:.0} ms")));
                        ui.monospace(format!("{:.1}%", q.loss_fraction * 100.0));
                        ui.end_row();
                    }
                });
            });
        open.connection = still_open;
    }
    Ok(())
}

/// Widths of the call bar's buttons.
const ICON_WIDTH: f32 = 44.0;
const DEMO_WIDTH: f32 = 84.0;
const LEAVE_WIDTH: f32 = 96.0;

/// An icon button of the call bar, filled with `fill` when it says something (a switch that is
/// off: [`theme::OFF`]; a drawer or view that is open: [`theme::ACCENT`]).
/// A switch of yours (microphone, camera): its `[on, off]` icon and tip, filled while off.
fn switch_button(ui: &mut egui::Ui, icons: &Icons, on: bool, icon: [Icon; 2], tip: [&str; 2]) -> bool {
    let which = usize::from(!on);
    bar_button(ui, icons, icon[which], (!on).then_some(theme::OFF), tip[which])
}

/// A button that opens something (a drawer, a window, a view), filled while it is open.
fn drawer_button(ui: &mut egui::Ui, icons: &Icons, icon: Icon, open: bool, tip: &str) -> bool {
    bar_button(ui, icons, icon, open.then_some(theme::ACCENT), tip)
}

fn bar_button(ui: &mut egui::Ui, icons: &Icons, icon: Icon, fill: Option<egui::Color32>, tip: &str) -> bool {
    // White on a filled (switched or off) button, the text's colour on a plain one.
    let colour = if fill.is_some() {
        egui::Color32::WHITE
    } else {
        ui.visuals().text_color()
    };
    let button = match icons.image(icon, 22.0, colour) {
        Some(image) => egui::Button::image(image),
        None => egui::Button::new(egui::RichText::new(icon.fallback()).size(20.0)),
    }
    .min_size(egui::vec2(ICON_WIDTH, 34.0));
    let button = match fill {
        Some(fill) => button.fill(fill),
        None => button,
    };
    ui.add(button).on_hover_text(tip).clicked()
}

/// The sizes initials are drawn at, smallest first.
const INITIALS_SIZES: [f32; 4] = [14.0, 22.0, 36.0, 56.0];

/// A disc of `fill` with `initials` on it. The letters' size follows the disc's in a few
/// steps: every size a font is drawn at takes room in egui's font atlas (with its common
/// characters), and a size that changed every frame (the disc follows the camera as it eases)
/// filled it until egui rebuilt it, and letters elsewhere went missing while it did.
fn draw_initials(painter: &egui::Painter, centre: egui::Pos2, radius: f32, initials: &str, fill: egui::Color32) {
    painter.circle_filled(centre, radius, fill);
    let size = INITIALS_SIZES
        .into_iter()
        .rev()
        .find(|size| *size <= radius * 0.8)
        .unwrap_or(INITIALS_SIZES[0]);
    painter.text(
        centre,
        egui::Align2::CENTER_CENTER,
        initials,
        egui::FontId::proportional(size),
        egui::Color32::WHITE,
    );
}

/// Colour of a speaking participant's name.
const SPEAKING: egui::Color32 = egui::Color32::from_rgb(120, 200, 255);

/// Camera, microphone and speaker choice. A change takes effect at once: the output reopens,
/// your stream is replaced.
#[derive(SystemParam)]
struct DevicePicker<'w> {
    devices: ResMut<'w, DeviceList>,
    choice: ResMut<'w, MediaChoice>,
    audio: ResMut<'w, AudioSettings>,
}

impl DevicePicker<'_> {
    /// Shows the choices. Resources are written only when the person changes something: a
    /// write marks them changed, and a changed choice replaces your stream.
    fn show(&mut self, ui: &mut egui::Ui) {
        device_picker(ui, &mut self.devices, &mut self.choice, &mut self.audio);
    }
}

fn device_picker(
    ui: &mut egui::Ui,
    devices: &mut ResMut<DeviceList>,
    choice: &mut ResMut<MediaChoice>,
    audio: &mut ResMut<AudioSettings>,
) {
    let camera_name = |video: &VideoSource| match video {
        VideoSource::Camera(index) => devices
            .cameras
            .iter()
            .find(|c| c.index == *index)
            .map_or(format!("Camera {index} (not found)"), |c| c.name.clone()),
        _ => "Test pattern".to_owned(),
    };
    let mut video = choice.video.clone();
    egui::ComboBox::from_label("Camera")
        .selected_text(camera_name(&video))
        .show_ui(ui, |ui| {
            ui.selectable_value(&mut video, VideoSource::TestPattern, "Test pattern");
            for camera in &devices.cameras {
                ui.selectable_value(&mut video, VideoSource::Camera(camera.index), camera.name.clone());
            }
        });
    if video != choice.video {
        choice.video = video;
    }

    let microphone_name = |audio: AudioSource, name: &Option<String>| match (audio, name) {
        (AudioSource::Microphone, Some(name)) => name.clone(),
        (AudioSource::Microphone, None) => "Default microphone".to_owned(),
        (AudioSource::Tone(_), _) => "Test tone".to_owned(),
        _ => "Silence".to_owned(),
    };
    let mut picked = (choice.audio, choice.microphone.clone());
    egui::ComboBox::from_label("Microphone")
        .selected_text(microphone_name(picked.0, &picked.1))
        .show_ui(ui, |ui| {
            ui.selectable_value(&mut picked, (AudioSource::Microphone, None), "Default microphone");
            for name in &devices.microphones {
                ui.selectable_value(&mut picked, (AudioSource::Microphone, Some(name.clone())), name.clone());
            }
            ui.selectable_value(&mut picked, (AudioSource::Tone(440.0), None), "Test tone");
            ui.selectable_value(&mut picked, (AudioSource::Silence, None), "Silence");
        });
    if picked != (choice.audio, choice.microphone.clone()) {
        (choice.audio, choice.microphone) = picked;
    }

    let mut speaker = audio.output_device.clone();
    egui::ComboBox::from_label("Speaker")
        .selected_text(speaker.clone().unwrap_or_else(|| "System default".to_owned()))
        .show_ui(ui, |ui| {
            ui.selectable_value(&mut speaker, None, "System default");
            for name in &devices.speakers {
                ui.selectable_value(&mut speaker, Some(name.clone()), name.clone());
            }
        });
    if speaker != audio.output_device {
        audio.output_device = speaker;
    }
    if ui.button("Refresh devices").clicked() {
        **devices = DeviceList::scan();
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn add_demo_bots(bots: &mut DemoBots, connection: &Connection, bridge: &EngineBridge, room: &RoomId) {
    // A fixed token is the person's own; bots need a source that can give them theirs.
    if matches!(bridge.tokens, TokenSource::Fixed(_)) {
        return;
    }
    for _ in 0..2 {
        let n = bots.0.len() + 1;
        let Ok(user_id) = UserId::new(format!("demo-{n}")) else {
            continue;
        };
        let name = format!("Demo {n}");
        let config = BotConfig {
            server_url: connection.server_url.clone(),
            room_id: room.clone(),
            user: UserInfo {
                user_id,
                user_name: name,
            },
            token: bridge.tokens.for_join(false),
            publish: Some(holoroom_engine::StreamConfig::test_pattern(640, 360, 30.0)),
            plays: true,
        };
        match Bot::start(config) {
            Ok(bot) => bots.0.push(bot),
            Err(err) => warn!("can't start a demo participant: {err}"),
        }
    }
}

/// A name plate under each remote screen (green while video arrives, blue while they speak,
/// amber while their media is set up again), and their initials on a disc in their colour while
/// there is no picture (camera off or not yet arrived).
fn name_plates(
    mut contexts: EguiContexts,
    state: Res<State<AppState>>,
    room_rect: Res<RoomRect>,
    camera: Query<(&Camera, &GlobalTransform), With<ViewerCamera>>,
    participants: Query<
        (
            &Participant,
            &GlobalTransform,
            Option<&VideoFeed>,
            Option<&SpeakingLevel>,
            Has<Muted>,
            Option<&MediaMute>,
        ),
        Without<LocalParticipant>,
    >,
) -> Result {
    if *state.get() != AppState::InCall {
        return Ok(());
    }
    let Ok((camera, camera_transform)) = camera.single() else {
        return Ok(());
    };
    let ctx = contexts.ctx_mut()?;
    // Plates stay in the room's part of the screen, never over the bar or a drawer.
    let room = room_rect.0.unwrap_or_else(|| ctx.viewport_rect());
    for (participant, transform, feed, level, muted, mute) in &participants {
        let mute = mute.map(|m| m.0).unwrap_or_default();
        let centre = transform.translation();
        let below = centre - Vec3::Y * (crate::video::PANEL_SIZE.y / 2.0 + crate::video::FRAME_WIDTH);
        let (Ok(at), Ok(middle)) = (
            camera.world_to_viewport(camera_transform, below),
            camera.world_to_viewport(camera_transform, centre),
        ) else {
            continue;
        };
        if !room.contains(egui::pos2(middle.x, middle.y)) {
            continue;
        }
        let live = feed.is_some_and(|f| f.frames_taken > 0) && !mute.video;
        let reconnecting = feed.is_some_and(|f| f.reconnecting);
        if !live {
            // Initials where the picture would be, sized to the screen's height on screen.
            let top = camera
                .world_to_viewport(camera_transform, centre + Vec3::Y * crate::video::PANEL_SIZE.y / 2.0)
                .map_or(40.0, |top| (middle.y - top.y).abs());
            let radius = (top * 0.7).clamp(8.0, 120.0);
            let fill = theme::colour32(crate::room::presence::avatar_colour(participant.user_id.as_str()));
            let painter = ctx.layer_painter(egui::LayerId::background());
            let initials = crate::room::presence::initials(&participant.name);
            draw_initials(&painter, egui::pos2(middle.x, middle.y), radius, &initials, fill);
        }
        egui::Area::new(egui::Id::new(("plate", participant.user_id.as_str())))
            .fixed_pos(egui::pos2(at.x, at.y + 2.0))
            .pivot(egui::Align2::CENTER_TOP)
            .order(egui::Order::Background)
            .interactable(false)
            .constrain_to(room)
            .show(ctx, |ui| {
                let background = if reconnecting {
                    egui::Color32::from_rgb(170, 110, 20)
                } else if level.is_some_and(SpeakingLevel::speaking) {
                    egui::Color32::from_rgb(30, 110, 190)
                } else if live {
                    egui::Color32::from_rgb(25, 95, 55)
                } else {
                    egui::Color32::from_rgb(40, 44, 52)
                };
                let mut text = format!(" {} ", participant.name);
                if mute.audio {
                    text = format!(" 🔇{text}");
                }
                if muted {
                    text.push_str("· muted for you ");
                }
                if reconnecting {
                    text.push_str("· reconnecting video ");
                }
                egui::Frame::new()
                    .fill(background)
                    .corner_radius(6)
                    .inner_margin(egui::Margin::symmetric(4, 2))
                    .show(ui, |ui| {
                        ui.label(egui::RichText::new(text).color(egui::Color32::WHITE));
                    });
            });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the stream choice was marked changed in each frame.
    #[derive(Resource, Default)]
    struct ChoiceChanges(Vec<bool>);

    fn draw_picker(mut picker: DevicePicker) {
        let ctx = egui::Context::default();
        let mut output = ctx.run_ui(egui::RawInput::default(), |ui| picker.show(ui));
        // Nothing renders here: the font atlas the frame made is let go.
        output.textures_delta.clear();
    }

    fn note_changes(choice: Res<MediaChoice>, mut changes: ResMut<ChoiceChanges>) {
        changes.0.push(choice.is_changed());
    }

    #[test]
    fn initials_that_grow_and_shrink_with_the_view_never_refill_the_font_atlas() {
        let ctx = egui::Context::default();
        let (mut rebuilds, mut filled) = (0, 0.0);
        // The disc eases from far to near and back, a little every frame, for twenty seconds,
        // with the browser's largest texture (WebGL2).
        for frame in 0..1200 {
            let t = frame as f32 / 600.0;
            let radius = 8.0 + 112.0 * (t * std::f32::consts::TAU).sin().abs();
            let input = egui::RawInput {
                max_texture_side: Some(2048),
                ..default()
            };
            let mut output = ctx.run_ui(input, |ui| {
                let painter = ui.ctx().layer_painter(egui::LayerId::background());
                // Two people with their cameras off, at different distances.
                draw_initials(&painter, egui::pos2(200.0, 200.0), radius, "GB", egui::Color32::RED);
                draw_initials(
                    &painter,
                    egui::pos2(400.0, 200.0),
                    radius * 0.77,
                    "AL",
                    egui::Color32::RED,
                );
                ui.label("11 kbps rtt 35 ms");
            });
            output.textures_delta.clear();
            // egui starts the atlas afresh once it is 80% full: it empties.
            let now = ctx.fonts(|fonts| fonts.font_atlas_fill_ratio());
            if now < filled {
                rebuilds += 1;
            }
            filled = now;
        }
        assert_eq!(rebuilds, 0, "the font atlas was rebuilt {rebuilds} times");
    }

    #[test]
    fn an_open_device_picker_changes_nothing_until_something_is_picked() {
        let mut app = App::new();
        app.init_resource::<DeviceList>()
            .init_resource::<MediaChoice>()
            .init_resource::<AudioSettings>()
            .init_resource::<ChoiceChanges>()
            .add_systems(Update, (draw_picker, note_changes).chain());
        for _ in 0..5 {
            app.update();
        }
        let changes = &app.world().resource::<ChoiceChanges>().0;
        // The first frame sees the resource added; after that, drawing the picker every frame
        // must not mark the choice changed (each change replaces your stream).
        assert_eq!(changes[1..], [false; 4], "{changes:?}");
    }
}
