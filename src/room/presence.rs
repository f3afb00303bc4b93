//! Participants as presences: each remote participant is a seated figure in their own colour
//! whose head is a framed screen with their video; the frame glows while they speak.

use bevy::prelude::*;

use crate::RoomSystems;
use crate::audio::SpeakingLevel;
use crate::net::ActiveSpeakers;
use crate::room::participants::{LocalParticipant, Participant};
use crate::room::scenery::{BakedMaterial, baked_material, shaded};

/// A participant's own colour: their figure, their frame, the disc with their initials when
/// their camera is off. The same on every screen (from the user ID).
pub fn avatar_colour(user_id: &str) -> Color {
    // FNV-1a: stable across builds and platforms.
    let hash = user_id
        .bytes()
        .fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    Color::hsl((hash % 360) as f32, 0.45, 0.5)
}

/// Up to two initials of a display name ("Ada Lovelace" is "AL", "demo-2" is "D").
pub fn initials(name: &str) -> String {
    name.split(|c: char| c.is_whitespace() || c == '-' || c == '_')
        .filter_map(|word| word.chars().find(|c| c.is_alphanumeric()))
        .filter(|c| c.is_alphabetic())
        .take(2)
        .flat_map(char::to_uppercase)
        .collect()
}

/// The figure under a participant's screen.
#[derive(Component, Debug)]
pub struct Figure;

/// The frame around a participant's screen; its colour says whether they speak.
#[derive(Component, Debug)]
pub struct ScreenFrame {
    pub participant: Entity,
    pub speaking: bool,
}

/// How far below the screen's centre the figure's body is, in metres.
const BODY_DROP: f32 = 0.5;
/// How far behind the screen (away from the table) the body is: clear of the screen however
/// it turns to face the viewer.
const BODY_BACK: f32 = 0.3;

pub fn plugin(app: &mut App) {
    app.add_systems(Update, (dress, glow).in_set(RoomSystems::Video));
}

/// Gives each new remote participant a body in their colour, seated under their screen.
fn dress(
    mut commands: Commands,
    new: Query<(Entity, &Participant), (Added<Participant>, Without<LocalParticipant>)>,
    mut meshes: ResMut<Assets<Mesh>>,
    mut materials: ResMut<Assets<BakedMaterial>>,
    mut shapes: Local<Option<(Handle<Mesh>, Handle<Mesh>)>>,
    look: Res<crate::room::scenery::RoomLook>,
) {
    if *look == crate::room::scenery::RoomLook::Bare {
        return;
    }
    // One body and one pair of shoulders for everyone (drawn together), coarse: they are small.
    let (body, shoulders) = shapes
        .get_or_insert_with(|| {
            let mut capsule = |radius: f32, length: f32| {
                let builder = bevy::mesh::Capsule3dMeshBuilder {
                    capsule: Capsule3d::new(radius, length),
                    longitudes: 14,
                    latitudes: 6,
                    ..default()
                };
                meshes.add(shaded(builder.build()))
            };
            (capsule(0.21, 0.32), capsule(0.12, 0.36))
        })
        .clone();
    for (entity, participant) in &new {
        // Unlit, the light baked into the mesh: lit materials cost a software renderer dearly.
        let cloth = materials.add(baked_material(None, avatar_colour(participant.user_id.as_str())));
        commands.spawn((
            Name::new("Figure"),
            Figure,
            Mesh3d(body.clone()),
            MeshMaterial3d(cloth.clone()),
            Transform::from_xyz(0.0, -BODY_DROP, -BODY_BACK),
            ChildOf(entity),
        ));
        // Shoulders: the screen rests on them.
        commands.spawn((
            Name::new("Shoulders"),
            Figure,
            Mesh3d(shoulders.clone()),
            MeshMaterial3d(cloth),
            Transform::from_xyz(0.0, -BODY_DROP + 0.3, -BODY_BACK)
                .with_rotation(Quat::from_rotation_z(std::f32::consts::FRAC_PI_2)),
            ChildOf(entity),
        ));
    }
}

/// Colour of a frame while its participant speaks.
const SPEAKING_GLOW: Color = Color::srgb(0.35, 0.75, 1.0);

/// Frames glow while their participant speaks (by their audio level, or the server's word).
fn glow(
    mut frames: Query<(&mut ScreenFrame, &MeshMaterial3d<BakedMaterial>)>,
    participants: Query<(&Participant, Option<&SpeakingLevel>)>,
    speakers: Option<Res<ActiveSpeakers>>,
    mut materials: ResMut<Assets<BakedMaterial>>,
) {
    for (mut frame, material) in &mut frames {
        let Ok((participant, level)) = participants.get(frame.participant) else {
            continue;
        };
        let speaking = level.is_some_and(SpeakingLevel::speaking)
            || speakers.as_ref().is_some_and(|s| s.0.contains(&participant.user_id));
        if speaking == frame.speaking {
            continue;
        }
        frame.speaking = speaking;
        if let Some(mut material) = materials.get_mut(&material.0) {
            material.tint = if speaking {
                SPEAKING_GLOW
            } else {
                frame_colour(participant.user_id.as_str())
            }
            .into();
        }
    }
}

/// A frame's colour at rest: the participant's colour, darker.
pub fn frame_colour(user_id: &str) -> Color {
    let Hsla { hue, saturation, .. } = avatar_colour(user_id).into();
    Color::hsl(hue, saturation, 0.28)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initials_come_from_the_words_of_a_name() {
        assert_eq!(initials("Ada Lovelace"), "AL");
        assert_eq!(initials("demo-2"), "D");
        assert_eq!(initials("  grace   brewster hopper"), "GB");
        assert_eq!(initials("Émile"), "É");
        assert_eq!(initials("42"), "");
    }

    #[test]
    fn a_participant_has_the_same_colour_everywhere() {
        assert_eq!(avatar_colour("ada"), avatar_colour("ada"));
        assert_ne!(avatar_colour("ada"), avatar_colour("bob"));
    }
}
