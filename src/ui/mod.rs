//! The egui overlay: the login form (prefilled) with device choice, connecting and error states,
//! and in call: end call, microphone and camera switches, devices, participant list (speaking,
//! hear or mute each), stats, demo participants, and a name tag over every panel.

use std::collections::BTreeMap;

pub mod preview;
mod sentence;

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
use crate::net::{EngineBridge, JoinRoom, LeaveRoom, Me, QualityUpdated};
use crate::quality::ViewQuality;
use crate::room::ViewerCamera;
use crate::room::participants::{
    AppState, LastError, LocalParticipant, MediaChoice, Participant, Reconnecting, VideoFeed,
};
use crate::video::UploadStats;

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

pub fn plugin(app: &mut App) {
    app.add_plugins(EguiPlugin::default())
        .init_resource::<Stats>()
        .init_resource::<DemoBots>()
        .insert_resource(Requirements(None))
        .insert_resource(DeviceList::scan())
        .add_systems(Startup, (prefill, start_requirements_check))
        .add_systems(
            Update,
            (
                collect_stats,
                (preview::keep_preview, preview::update_preview).chain(),
                finish_requirements_check,
            ),
        )
        .add_systems(EguiPrimaryContextPass, (login_panel, call_panel, name_tags));
}

fn prefill(mut commands: Commands, connection: Res<Connection>) {
    commands.insert_resource(LoginForm {
        room: connection.room.clone(),
        user: connection.user.clone(),
        name: connection.name.clone(),
        spectate: connection.spectate,
    });
}

fn collect_stats(mut updates: MessageReader<QualityUpdated>, mut stats: ResMut<Stats>) {
    for update in updates.read() {
        stats
            .0
            .insert((update.stream_id.clone(), update.publishing), update.quality);
    }
}

fn login_panel(
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
    egui::Window::new("Holoroom")
        .anchor(egui::Align2::LEFT_TOP, [12.0, 12.0])
        .resizable(false)
        .show(contexts.ctx_mut()?, |ui| {
            egui::Grid::new("login").num_columns(2).show(ui, |ui| {
                ui.label("Room server");
                ui.monospace(&connection.server_url);
                ui.end_row();
                ui.label("Room");
                ui.text_edit_singleline(&mut form.room);
                ui.end_row();
                ui.label("User ID");
                ui.text_edit_singleline(&mut form.user);
                ui.end_row();
                ui.label("Name");
                ui.text_edit_singleline(&mut form.name);
                ui.end_row();
                ui.label("Role");
                ui.checkbox(&mut form.spectate, "Spectator (hidden, free camera)");
                ui.end_row();
            });
            if let Some(note) = &connection.note {
                ui.label(note);
            }
            ui.separator();
            ui.collapsing("Devices", |ui| picker.show(ui));
            if !form.spectate
                && let Some(preview) = preview.as_mut()
                && let Some(texture) = preview_texture
            {
                ui.horizontal(|ui| {
                    preview.show(ui, texture);
                    if let Some(note) = preview.note() {
                        ui.label(note);
                    }
                });
            }
            ui.collapsing("Device check", |ui| {
                let Some(check) = &requirements.0 else {
                    ui.horizontal(|ui| {
                        ui.spinner();
                        ui.label("Checking devices…");
                    });
                    return;
                };
                for (what, result) in [
                    ("WebRTC", &check.webrtc),
                    ("Camera", &check.camera),
                    ("Microphone", &check.microphone),
                    ("Screen sharing", &check.screen_capture),
                ] {
                    match result {
                        Ok(()) => ui.label(format!("{what}: ready")),
                        Err(why) => ui.label(format!("{what}: {why}")),
                    };
                }
                ui.label(format!(
                    "Codecs: {} / {}",
                    check.video_codecs.join(", "),
                    check.audio_codecs.join(", ")
                ));
            });
            if connecting {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label("Joining…");
                });
            } else {
                let label = if last_error.0.as_ref().is_some_and(worth_retrying) {
                    "Retry"
                } else {
                    "Join"
                };
                if ui.button(label).clicked() {
                    joins.write(JoinRoom {
                        room: form.room.clone(),
                        user: form.user.clone(),
                        name: form.name.clone(),
                        spectate: form.spectate,
                    });
                }
            }
            if let Some(error) = &last_error.0 {
                ui.colored_label(egui::Color32::from_rgb(240, 120, 100), sentence(error));
            }
        });
    Ok(())
}

fn call_panel(
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
        Has<Muted>,
        Has<LocalParticipant>,
    )>,
    (stats, speakers): (Res<Stats>, Option<Res<ActiveSpeakers>>),
    uploads: Res<UploadStats>,
    last_error: Res<LastError>,
    reconnecting: Res<Reconnecting>,
    own: Option<Res<OwnStream>>,
    room_audio: Option<Res<RoomAudio>>,
    mut picker: DevicePicker,
    mut bots: ResMut<DemoBots>,
    mut leave: MessageWriter<LeaveRoom>,
    mut commands: Commands,
) -> Result {
    if *state.get() != AppState::InCall {
        return Ok(());
    }
    egui::Window::new("In call")
        .anchor(egui::Align2::LEFT_TOP, [12.0, 12.0])
        .resizable(false)
        .show(contexts.ctx_mut()?, |ui| {
            if let Some(me) = &me {
                ui.label(format!(
                    "{} in room {}{}",
                    me.user.user_name,
                    me.room_id,
                    if me.spectator { " (spectator)" } else { "" }
                ));
            }
            if reconnecting.0 {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.colored_label(egui::Color32::from_rgb(240, 180, 100), "Reconnecting…");
                });
            }
            if ui.button("End call").clicked() {
                leave.write(LeaveRoom);
                bots.leave_all();
            }
            // Demo participants run in this process, beside an embedded server (not in a browser).
            #[cfg(target_arch = "wasm32")]
            let _ = (&connection, &bridge);
            #[cfg(not(target_arch = "wasm32"))]
            if connection.embedded
                && let (Some(me), Some(bridge)) = (&me, &bridge)
                && ui.button("Add demo participants").clicked()
            {
                add_demo_bots(&mut bots, &connection, bridge, &me.room_id);
            }
            if let Some(own) = &own {
                ui.horizontal(|ui| {
                    let mut microphone = !own.local.is_audio_muted();
                    if ui.checkbox(&mut microphone, "Microphone").changed() {
                        own.local.set_audio_muted(!microphone);
                    }
                    let mut camera = !own.local.is_video_muted();
                    if ui.checkbox(&mut camera, "Camera").changed() {
                        own.local.set_video_muted(!camera);
                    }
                });
                ui.collapsing("Devices", |ui| picker.show(ui));
            }
            if let Some(note) = room_audio.as_ref().and_then(|a| a.note()) {
                ui.label(note);
            }
            ui.separator();
            ui.label(format!(
                "Participants ({}), {} frames shown",
                participants.iter().count(),
                uploads.frames_uploaded
            ));
            for (entity, participant, feed, level, quality, muted, local) in &participants {
                let frames = feed.map_or(0, |f| f.frames_taken);
                ui.horizontal(|ui| {
                    let speaking = level.is_some_and(SpeakingLevel::speaking)
                        || speakers.as_ref().is_some_and(|s| s.0.contains(&participant.user_id));
                    let name =
                        egui::RichText::new(format!("{}{}", participant.name, if local { " (you)" } else { "" }));
                    ui.label(if speaking { name.strong().color(SPEAKING) } else { name });
                    ui.label(format!("{frames} frames"));
                    if let Some(quality) = quality {
                        // The layer the view asked for and why, and what arrives (the network
                        // may hold it lower).
                        // The layer in the panel's row (kept short: the window must not cover the
                        // room); why and what arrives on hover.
                        let arriving = feed
                            .and_then(|f| f.slot.latest())
                            .map(|f| format!("; receiving {}x{}", f.frame.width, f.frame.height))
                            .unwrap_or_default();
                        ui.label(quality.layer.name()).on_hover_text(format!(
                            "Video layer asked for: {} ({}){arriving}. The smallest that covers the panel on your screen; none while it is out of view.",
                            quality.layer.name(),
                            quality.reason
                        ));
                    }
                    if !local {
                        let mut hear = !muted;
                        if ui.checkbox(&mut hear, "hear").changed() {
                            if hear {
                                commands.entity(entity).remove::<Muted>();
                            } else {
                                commands.entity(entity).insert(Muted);
                            }
                        }
                    }
                });
            }
            if !stats.0.is_empty() {
                ui.separator();
                ui.label("Stats");
                for ((stream, publishing), q) in &stats.0 {
                    ui.monospace(format!(
                        "{} {stream}: {}x{} {:.0} fps {:.0} kbps rtt {} loss {:.1}%",
                        if *publishing { "out" } else { "in " },
                        q.width,
                        q.height,
                        q.fps,
                        q.kbps,
                        q.rtt_ms.map_or("-".into(), |r| format!("{r:.0} ms")),
                        q.loss_fraction * 100.0
                    ));
                }
            }
            if let Some(error) = &last_error.0 {
                ui.separator();
                ui.colored_label(egui::Color32::from_rgb(240, 180, 100), sentence(error));
            }
        });
    Ok(())
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
        };
        match Bot::start(config) {
            Ok(bot) => bots.0.push(bot),
            Err(err) => warn!("can't start a demo participant: {err}"),
        }
    }
}

/// A name tag over each remote panel: green while video arrives, blue while they speak, amber
/// with "reconnecting video" while their media is being set up again.
fn name_tags(
    mut contexts: EguiContexts,
    state: Res<State<AppState>>,
    camera: Query<(&Camera, &GlobalTransform), With<ViewerCamera>>,
    participants: Query<
        (
            &Participant,
            &GlobalTransform,
            Option<&VideoFeed>,
            Option<&SpeakingLevel>,
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
    for (participant, transform, feed, level) in &participants {
        let above = transform.translation() + Vec3::Y * 0.6;
        let Ok(position) = camera.world_to_viewport(camera_transform, above) else {
            continue;
        };
        egui::Area::new(egui::Id::new(("tag", participant.user_id.as_str())))
            .fixed_pos(egui::pos2(position.x, position.y))
            .pivot(egui::Align2::CENTER_BOTTOM)
            .interactable(false)
            .show(ctx, |ui| {
                let live = feed.is_some_and(|f| f.frames_taken > 0);
                let reconnecting = feed.is_some_and(|f| f.reconnecting);
                let background = if reconnecting {
                    egui::Color32::from_rgba_unmultiplied(170, 110, 20, 220)
                } else if level.is_some_and(SpeakingLevel::speaking) {
                    egui::Color32::from_rgba_unmultiplied(30, 90, 160, 220)
                } else if live {
                    egui::Color32::from_rgba_unmultiplied(30, 120, 60, 200)
                } else {
                    egui::Color32::from_black_alpha(160)
                };
                let text = if reconnecting {
                    format!(" {} · reconnecting video ", participant.name)
                } else {
                    format!(" {} ", participant.name)
                };
                ui.label(
                    egui::RichText::new(text)
                        .color(egui::Color32::WHITE)
                        .background_color(background),
                );
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
