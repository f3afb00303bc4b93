//! Spatial audio: every remote participant's voice (the sound of the stream their entity
//! plays, [`PlayedAudio`]) comes from where their entity is. Once a
//! frame the voices are placed (panning by side, attenuation by distance) relative to the
//! listener, your own seat, or the camera when you fly; the sound card pulls the mix on its own
//! thread. No sound card: the room is still mixed (so speaking indicators work) and says so.

use bevy::prelude::*;
use holoroom_engine::devices::AudioOutput;
use holoroom_engine::media::{Mixer, Placement, spatial_gains};

use crate::RoomSystems;
use crate::room::ViewerCamera;
use crate::room::participants::{LocalParticipant, PlayedAudio};

/// A level above which a participant counts as speaking (RMS, about -34 dBFS).
pub const SPEAKING_LEVEL: f32 = 0.02;

/// How loud a participant is right now (smoothed RMS, 0..1), for the speaking indicator.
#[derive(Component, Debug, Default, Clone, Copy, PartialEq)]
pub struct SpeakingLevel(pub f32);

impl SpeakingLevel {
    pub fn speaking(&self) -> bool {
        self.0 > SPEAKING_LEVEL
    }
}

/// This listener does not want to hear the participant (nobody else is affected).
#[derive(Component, Debug, Default, Clone, Copy)]
pub struct Muted;

/// How loud this listener wants the participant, 0..=2 (1 when absent; nobody else is affected).
#[derive(Component, Debug, Clone, Copy, PartialEq)]
pub struct Volume(pub f32);

/// Which sound card plays the room; `None` is the system's default.
#[derive(Resource, Debug, Default, Clone, PartialEq)]
pub struct AudioSettings {
    pub output_device: Option<String>,
}

/// The room's mix and where it plays.
#[derive(Resource, Debug)]
pub struct RoomAudio {
    mixer: Mixer,
    /// The output playing the mix, once it has opened.
    pub output: Option<AudioOutput>,
    /// The settings the output was (or is being) opened with.
    pub opened_with: AudioSettings,
    /// An output opening off the frame.
    opening: Option<crossbeam_channel::Receiver<AudioOutput>>,
}

impl RoomAudio {
    pub fn mixer(&self) -> &Mixer {
        &self.mixer
    }

    /// Why nothing is heard, if nothing is.
    pub fn note(&self) -> Option<&str> {
        self.output.as_ref().and_then(AudioOutput::note)
    }
}

pub fn plugin(app: &mut App) {
    app.init_resource::<AudioSettings>().add_systems(
        Update,
        (open_output, forget_voices, place_voices)
            .chain()
            .in_set(RoomSystems::Feeds),
    );
}

/// Opens the output at start, and again whenever the chosen device changes, off the frame
/// (a sound card can take seconds to open); the mix goes on meanwhile and the new output
/// takes over once it plays.
fn open_output(mut commands: Commands, settings: Res<AudioSettings>, audio: Option<ResMut<RoomAudio>>) {
    let Some(mut audio) = audio else {
        let mixer = Mixer::default();
        commands.insert_resource(RoomAudio {
            opening: Some(AudioOutput::open_later(
                mixer.clone(),
                settings.output_device.as_deref(),
            )),
            mixer,
            output: None,
            opened_with: settings.clone(),
        });
        return;
    };
    if audio.opened_with != *settings {
        audio.opening = Some(AudioOutput::open_later(
            audio.mixer.clone(),
            settings.output_device.as_deref(),
        ));
        audio.opened_with = settings.clone();
    }
    if let Some(opened) = audio.opening.as_ref().and_then(|rx| rx.try_recv().ok()) {
        audio.output = Some(opened);
        audio.opening = None;
    }
}

/// Where the listener is and which way their right ear points.
fn listener(local: Option<&Transform>, camera: Option<&Transform>) -> ([f32; 3], [f32; 3]) {
    match (local, camera) {
        // A participant's panel faces +Z (towards the table), so their right is -X.
        (Some(me), _) => (me.translation.to_array(), (me.rotation * Vec3::NEG_X).to_array()),
        // A camera looks along -Z, so its right is +X.
        (None, Some(eye)) => (eye.translation.to_array(), (eye.rotation * Vec3::X).to_array()),
        (None, None) => ([0.0; 3], [1.0, 0.0, 0.0]),
    }
}

/// A participant whose stream stopped is no longer heard, nor shown speaking.
fn forget_voices(mut commands: Commands, mut stopped: RemovedComponents<PlayedAudio>) {
    for entity in stopped.read() {
        if let Ok(mut entity) = commands.get_entity(entity) {
            entity.remove::<SpeakingLevel>();
        }
    }
}

/// Keeps the mixer's voices in step with the entities and places each one: one update of the
/// mixer per frame (one lock), into placements kept from frame to frame (no allocation while
/// the room stays as it is).
fn place_voices(
    mut commands: Commands,
    audio: Option<Res<RoomAudio>>,
    local: Query<&Transform, With<LocalParticipant>>,
    camera: Query<&Transform, (With<ViewerCamera>, Without<LocalParticipant>)>,
    mut voices: Query<(
        Entity,
        &PlayedAudio,
        &Transform,
        Has<Muted>,
        Option<&Volume>,
        Option<&mut SpeakingLevel>,
    )>,
    mut placements: Local<Vec<Placement>>,
) {
    let Some(audio) = audio else {
        return;
    };
    let (ear, right) = listener(local.single().ok(), camera.single().ok());
    let count = voices.iter().count();
    placements.resize_with(count, Placement::default);
    for (placement, (_, voice, transform, muted, volume, _)) in placements.iter_mut().zip(&voices) {
        let key = voice.stream_id.as_str();
        if placement.key != key {
            placement.key.clear();
            placement.key.push_str(key);
        }
        // A stream removed and added again within a frame brings a new buffer.
        if !placement.buffer.same_as(&voice.buffer) {
            placement.buffer = voice.buffer.clone();
        }
        let gains = spatial_gains(ear, right, transform.translation.to_array());
        let volume = volume.map_or(1.0, |v| v.0.clamp(0.0, 2.0));
        placement.gains = holoroom_engine::media::Gains {
            left: gains.left * volume,
            right: gains.right * volume,
        };
        placement.muted = muted;
    }
    audio.mixer().sync(&mut placements);
    for (placement, (entity, _, _, _, _, level)) in placements.iter().zip(&mut voices) {
        let now = SpeakingLevel(placement.level);
        match level {
            Some(mut level) => {
                level.set_if_neq(now);
            }
            None => {
                commands.entity(entity).insert(now);
            }
        }
    }
}
