//! The room itself: the furnished lounge ([`scenery`]), the seated figures ([`presence`]),
//! and the viewer's camera.

pub mod participants;
pub mod presence;
pub mod scenery;
pub mod seating;

use bevy::core_pipeline::tonemapping::Tonemapping;
use bevy::prelude::*;

use crate::RoomSystems;

/// How many empty seats the room shows around the table.
pub const VISIBLE_SEATS: usize = 8;

/// Marks the camera the local viewer looks through.
#[derive(Component, Debug)]
pub struct ViewerCamera;

/// An empty seat's marker on the floor.
#[derive(Component, Debug)]
pub struct SeatMarker(pub usize);

/// Where the overview camera stands before joining (and for spectators).
const OVERVIEW: Vec3 = Vec3::new(0.0, 4.5, 8.5);
/// Where the top-down view looks from.
const ABOVE: Vec3 = Vec3::new(0.0, 10.5, 2.5);

/// How a seated viewer looks at the room; the camera eases to each.
#[derive(Resource, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ViewMode {
    /// From just behind your seat, everyone at the table in view.
    #[default]
    Seat,
    /// The whole room from above.
    Overview,
    /// Close to one participant's screen (which then asks for their best layer by its size).
    Focus(Entity),
}

impl ViewMode {
    pub fn toggle_overview(&mut self) {
        *self = if *self == ViewMode::Overview {
            ViewMode::Seat
        } else {
            ViewMode::Overview
        };
    }

    pub fn is_overview(&self) -> bool {
        *self == ViewMode::Overview
    }

    /// Focuses `participant`, or goes back to the seat when they are focused already.
    pub fn focus(&mut self, participant: Entity) {
        *self = if *self == ViewMode::Focus(participant) {
            ViewMode::Seat
        } else {
            ViewMode::Focus(participant)
        };
    }
}

pub fn plugin(app: &mut App) {
    app.init_resource::<scenery::RoomLook>()
        .init_resource::<ViewMode>()
        .add_systems(
            Startup,
            (scenery::spawn_scenery, spawn_camera).in_set(RoomSystems::Scene),
        )
        .add_plugins((scenery::plugin, presence::plugin))
        .add_systems(
            Update,
            (sit_viewer, free_camera, walk, focus_keys, glide)
                .chain()
                .in_set(RoomSystems::Participants),
        );
}

/// Puts the viewer's camera just behind and above their own seat, looking across the table;
/// back to the overview when they leave.
fn sit_viewer(
    seated: Query<&Transform, (Added<participants::LocalParticipant>, Without<ViewerCamera>)>,
    mut left: RemovedComponents<participants::LocalParticipant>,
    mut camera: Query<&mut Transform, With<ViewerCamera>>,
    mut mode: ResMut<ViewMode>,
) {
    let Ok(mut camera) = camera.single_mut() else {
        return;
    };
    for seat in &seated {
        *camera = view_from(ViewMode::Seat, seat, None);
    }
    if left.read().count() > 0 {
        *mode = ViewMode::Seat;
        *camera = Transform::from_translation(OVERVIEW).looking_at(Vec3::new(0.0, 0.8, 0.0), Vec3::Y);
    }
}

/// Spectators (and anyone not seated) fly: WASD, Q/E down/up, right mouse drag to look around;
/// the flight speeds up and slows down smoothly. Paused while egui has the pointer or keyboard.
fn free_camera(
    mut velocity: Local<Vec3>,
    time: Res<Time>,
    keys: Res<ButtonInput<KeyCode>>,
    buttons: Res<ButtonInput<MouseButton>>,
    mut motion: MessageReader<bevy::input::mouse::MouseMotion>,
    mut egui: bevy_egui::EguiContexts,
    seated: Query<(), With<participants::LocalParticipant>>,
    mut camera: Query<&mut Transform, With<ViewerCamera>>,
) {
    let drag: Vec2 = motion.read().map(|m| m.delta).sum();
    if !seated.is_empty() {
        return;
    }
    if let Ok(ctx) = egui.ctx_mut()
        && (ctx.egui_wants_pointer_input() || ctx.egui_wants_keyboard_input())
    {
        return;
    }
    let Ok(mut camera) = camera.single_mut() else {
        return;
    };
    if buttons.pressed(MouseButton::Right) {
        let (yaw, pitch, _) = camera.rotation.to_euler(EulerRot::YXZ);
        let yaw = yaw - drag.x * 0.004;
        let pitch = (pitch - drag.y * 0.004).clamp(-1.5, 1.5);
        camera.rotation = Quat::from_euler(EulerRot::YXZ, yaw, pitch, 0.0);
    }
    let mut step = Vec3::ZERO;
    let (forward, right) = (camera.forward().as_vec3(), camera.right().as_vec3());
    for (key, direction) in [
        (KeyCode::KeyW, forward),
        (KeyCode::KeyS, -forward),
        (KeyCode::KeyD, right),
        (KeyCode::KeyA, -right),
        (KeyCode::KeyE, Vec3::Y),
        (KeyCode::KeyQ, -Vec3::Y),
    ] {
        if keys.pressed(key) {
            step += direction;
        }
    }
    // Towards the wanted velocity in about a fifth of a second, at any frame rate.
    let dt = time.delta_secs();
    let wanted = step.normalize_or_zero() * 4.0;
    *velocity = velocity.lerp(wanted, 1.0 - (-12.0 * dt).exp());
    camera.translation += *velocity * dt;
}

/// How far from their seat a participant may walk, in metres.
pub const WALK_RADIUS: f32 = 6.0;

/// Seated participants walk: WASD on the floor relative to where the camera looks, Q/E turn.
/// The camera follows from behind ([`glide`]). Others see the move through the pose the engine sends.
fn walk(
    time: Res<Time>,
    keys: Res<ButtonInput<KeyCode>>,
    mut egui: bevy_egui::EguiContexts,
    mut me: Query<(&participants::Seat, &mut Transform), (With<participants::LocalParticipant>, Without<ViewerCamera>)>,
    camera: Query<&Transform, With<ViewerCamera>>,
) {
    let (Ok((seat, mut me)), Ok(camera)) = (me.single_mut(), camera.single()) else {
        return;
    };
    if let Ok(ctx) = egui.ctx_mut()
        && ctx.egui_wants_keyboard_input()
    {
        return;
    }
    let flat = |v: Vec3| Vec3::new(v.x, 0.0, v.z).normalize_or_zero();
    let (forward, right) = (flat(camera.forward().as_vec3()), flat(camera.right().as_vec3()));
    let mut step = Vec3::ZERO;
    let mut turn = 0.0;
    for (key, direction, yaw) in [
        (KeyCode::KeyW, forward, 0.0),
        (KeyCode::KeyS, -forward, 0.0),
        (KeyCode::KeyD, right, 0.0),
        (KeyCode::KeyA, -right, 0.0),
        (KeyCode::KeyQ, Vec3::ZERO, 1.0),
        (KeyCode::KeyE, Vec3::ZERO, -1.0),
    ] {
        if keys.pressed(key) {
            step += direction;
            turn += yaw;
        }
    }
    let dt = time.delta_secs();
    if step != Vec3::ZERO {
        let home = participants::seat_transform(seat.0).translation;
        let wanted = me.translation + step.normalize_or_zero() * 2.0 * dt;
        let offset = (wanted - home).clamp_length_max(WALK_RADIUS);
        me.translation = home + offset;
    }
    if turn != 0.0 {
        me.rotate_y(turn * 1.5 * dt);
    }
}

/// Where the camera of a seated viewer at `me` looks from in `mode`.
fn view_from(mode: ViewMode, me: &Transform, focused: Option<&GlobalTransform>) -> Transform {
    // Behind and above you, looking across the table the way you face.
    let ahead = (me.rotation * Vec3::Z).with_y(0.0).normalize_or(Vec3::NEG_Z);
    let reach = Vec3::new(me.translation.x, 0.0, me.translation.z).length().max(1.0);
    let seat = Transform::from_translation(me.translation - ahead * 2.2 + Vec3::Y * 1.1)
        .looking_at((me.translation + ahead * reach).with_y(1.4), Vec3::Y);
    match (mode, focused) {
        (ViewMode::Seat, _) | (ViewMode::Focus(_), None) => seat,
        (ViewMode::Overview, _) => Transform::from_translation(ABOVE).looking_at(Vec3::ZERO, Vec3::Y),
        (ViewMode::Focus(_), Some(them)) => {
            // In front of their screen, on the side you sit.
            let screen = them.translation();
            let towards_you = (seat.translation - screen).with_y(0.0).normalize_or(Vec3::Z);
            Transform::from_translation(screen + towards_you * 1.7 + Vec3::Y * 0.1).looking_at(screen, Vec3::Y)
        }
    }
}

/// F focuses the participant nearest the middle of your view, a click the one whose screen is
/// under the pointer (F again, Escape, or a click on them again goes back).
fn focus_keys(
    keys: Res<ButtonInput<KeyCode>>,
    buttons: Res<ButtonInput<MouseButton>>,
    windows: Query<&Window, With<bevy::window::PrimaryWindow>>,
    mut egui: bevy_egui::EguiContexts,
    mut mode: ResMut<ViewMode>,
    camera: Query<(&Camera, &GlobalTransform), With<ViewerCamera>>,
    others: Query<
        (Entity, &GlobalTransform),
        (With<participants::Participant>, Without<participants::LocalParticipant>),
    >,
    screens: Query<(&ChildOf, &GlobalTransform), With<crate::video::FaceViewer>>,
    self_view: Query<&GlobalTransform, With<crate::video::SelfView>>,
) {
    let (keyboard_free, pointer_free) = match egui.ctx_mut() {
        Ok(ctx) => (!ctx.egui_wants_keyboard_input(), !ctx.egui_wants_pointer_input()),
        Err(_) => (true, true),
    };
    let Ok((camera, at)) = camera.single() else {
        return;
    };
    if pointer_free
        && buttons.just_pressed(MouseButton::Left)
        && let Some(cursor) = windows.single().ok().and_then(Window::cursor_position)
    {
        // A click on your self-view takes hold of it (`video::drag_self_view`); otherwise the
        // nearest screen whose rectangle on the screen holds the pointer.
        let on_self_view = self_view
            .iter()
            .any(|view| crate::video::panel_on_screen(camera, at, view).is_some_and(|rect| rect.contains(cursor)));
        let hit = screens
            .iter()
            .filter(|_| !on_self_view)
            .filter_map(|(child_of, screen)| {
                let rect = crate::video::panel_on_screen(camera, at, screen)?;
                rect.contains(cursor)
                    .then(|| (child_of.parent(), at.translation().distance(screen.translation())))
            })
            .min_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((entity, _)) = hit {
            mode.focus(entity);
            return;
        }
    }
    if !keyboard_free {
        return;
    }
    if keys.just_pressed(KeyCode::Escape) {
        *mode = ViewMode::Seat;
    }
    if !keys.just_pressed(KeyCode::KeyF) {
        return;
    }
    if matches!(*mode, ViewMode::Focus(_)) {
        *mode = ViewMode::Seat;
        return;
    }
    let nearest = others
        .iter()
        .filter_map(|(entity, place)| {
            let ndc = camera.world_to_ndc(at, place.translation())?;
            (ndc.z > 0.0).then_some((entity, ndc.truncate().length()))
        })
        .min_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((entity, _)) = nearest {
        *mode = ViewMode::Focus(entity);
    }
}

/// The camera's vertical field of view, in degrees, for a window of `aspect` (width / height):
/// from your seat the shot tightens when few are at the table (one across from you fills far
/// more of the view), never so far that their screens leave a narrow window's sides, and
/// widens to take in twelve; views other than the seat's are always the wide one.
pub fn field_of_view(mode: ViewMode, others: usize, aspect: f32) -> f32 {
    // The tight shot, and how far to the side (degrees) its people's screens reach.
    let (tight, across) = match (mode, others) {
        (ViewMode::Seat, 0..=1) => (22.0f32, 8.0f32),
        (ViewMode::Seat, 2..=3) => (28.0, 19.0),
        _ => return WIDE_FOV,
    };
    let fits = 2.0 * (across.to_radians().tan() / aspect.max(0.1)).atan().to_degrees();
    tight.max(fits).min(WIDE_FOV)
}

/// Eases the camera's field of view towards `fov` (radians) by `k` of the way; one already
/// there is left untouched (not even marked changed: the self-view and the video quality
/// follow changes to it).
fn ease_fov(projection: &mut Mut<Projection>, fov: f32, k: f32) {
    let now = match projection.as_ref() {
        Projection::Perspective(perspective) => perspective.fov,
        _ => return,
    };
    if (now - fov).abs() <= 1e-4 {
        return;
    }
    if let Projection::Perspective(perspective) = projection.as_mut() {
        perspective.fov = if (now - fov).abs() < 1e-3 {
            fov
        } else {
            now + (fov - now) * k
        };
    }
}

/// The widest field of view, in degrees.
pub const WIDE_FOV: f32 = 36.0;

/// Eases a seated viewer's camera towards where their view mode puts it, and its field of
/// view towards the one for the people at the table.
fn glide(
    time: Res<Time>,
    mut mode: ResMut<ViewMode>,
    me: Query<&Transform, (With<participants::LocalParticipant>, Without<ViewerCamera>)>,
    others: Query<&GlobalTransform, With<participants::Participant>>,
    mut camera: Query<(&mut Transform, &mut Projection), With<ViewerCamera>>,
) {
    let Ok((mut camera, mut projection)) = camera.single_mut() else {
        return;
    };
    // About 95% of the way in half a second, at any frame rate.
    let k = 1.0 - (-6.0 * time.delta_secs()).exp();
    let Ok(me) = me.single() else {
        // Not seated (before joining, after leaving, watching): the wide view.
        ease_fov(&mut projection, WIDE_FOV.to_radians(), k);
        return;
    };
    let focused = match *mode {
        ViewMode::Focus(entity) => {
            let found = others.get(entity).ok();
            if found.is_none() {
                *mode = ViewMode::Seat; // they left
            }
            found
        }
        _ => None,
    };
    let target = view_from(*mode, me, focused);
    camera.translation = camera.translation.lerp(target.translation, k);
    camera.rotation = camera.rotation.slerp(target.rotation, k);
    let aspect = match projection.as_ref() {
        Projection::Perspective(perspective) => perspective.aspect_ratio,
        _ => 16.0 / 9.0,
    };
    // Everyone but you.
    let fov = field_of_view(*mode, others.iter().count().saturating_sub(1), aspect).to_radians();
    ease_fov(&mut projection, fov, k);
}

fn spawn_camera(mut commands: Commands) {
    // Software rasterizers pay per shaded pixel: no MSAA, no tonemapping pass.
    commands.spawn((
        Name::new("Viewer"),
        ViewerCamera,
        Camera3d::default(),
        // A little narrower than the default 45 degrees: from your seat the table fills the
        // view and faces across it are larger.
        Projection::Perspective(PerspectiveProjection {
            fov: WIDE_FOV.to_radians(),
            ..default()
        }),
        Msaa::Off,
        Tonemapping::None,
        Transform::from_translation(OVERVIEW).looking_at(Vec3::new(0.0, 0.8, 0.0), Vec3::Y),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seat_view_tightens_when_few_are_at_the_table() {
        let seat = |others| field_of_view(ViewMode::Seat, others, 16.0 / 9.0);
        assert!(seat(1) < seat(3) && seat(3) < seat(5), "fewer people, a tighter shot");
        assert_eq!(seat(11), WIDE_FOV, "twelve need the wide view");
        for others in 0..20 {
            assert!(seat(others) <= seat(others + 1));
        }
        assert_eq!(field_of_view(ViewMode::Overview, 1, 16.0 / 9.0), WIDE_FOV);
        // A narrow window keeps the people at the sides in view: the horizontal half-angle
        // still reaches 19 degrees for three (up to what the wide view gives).
        for aspect in [1.0f32, 0.75, 0.5] {
            let fov = field_of_view(ViewMode::Seat, 3, aspect).to_radians();
            let across = ((fov / 2.0).tan() * aspect).atan().to_degrees();
            assert!(
                across >= 19.0 - 1e-3 || fov.to_degrees() >= WIDE_FOV - 1e-3,
                "{aspect}: {across}"
            );
        }
    }
}
