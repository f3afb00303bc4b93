//! The room itself: floor, table, empty seats, lights and the viewer's camera.

pub mod participants;
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

pub fn plugin(app: &mut App) {
    app.add_systems(Startup, spawn_room.in_set(RoomSystems::Scene))
        .add_systems(
            Update,
            (sit_viewer, free_camera, walk)
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
) {
    let Ok(mut camera) = camera.single_mut() else {
        return;
    };
    for seat in &seated {
        let outward = Vec3::new(seat.translation.x, 0.0, seat.translation.z).normalize_or(Vec3::Z);
        camera.translation = seat.translation + outward * 2.2 + Vec3::Y * 1.1;
        camera.look_at(Vec3::new(0.0, 1.0, 0.0), Vec3::Y);
    }
    if left.read().count() > 0 {
        *camera = Transform::from_translation(OVERVIEW).looking_at(Vec3::new(0.0, 0.8, 0.0), Vec3::Y);
    }
}

/// Spectators (and anyone not seated) fly: WASD, Q/E down/up, right mouse drag to look around.
/// Paused while egui has the pointer or keyboard.
fn free_camera(
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
    camera.translation += step.normalize_or_zero() * 4.0 * time.delta_secs();
}

/// How far from their seat a participant may walk, in metres.
pub const WALK_RADIUS: f32 = 6.0;

/// Seated participants walk: WASD on the floor relative to where the camera looks, Q/E turn.
/// The camera follows from behind. Others see the move through the pose the engine sends.
fn walk(
    time: Res<Time>,
    keys: Res<ButtonInput<KeyCode>>,
    mut egui: bevy_egui::EguiContexts,
    mut me: Query<(&participants::Seat, &mut Transform), (With<participants::LocalParticipant>, Without<ViewerCamera>)>,
    mut camera: Query<&mut Transform, With<ViewerCamera>>,
) {
    let (Ok((seat, mut me)), Ok(mut camera)) = (me.single_mut(), camera.single_mut()) else {
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
        let moved = home + offset - me.translation;
        me.translation += moved;
        camera.translation += moved;
    }
    if turn != 0.0 {
        let rotation = Quat::from_rotation_y(turn * 1.5 * dt);
        let around = me.translation;
        camera.rotate_around(around, rotation);
        me.rotate_y(turn * 1.5 * dt);
    }
}

fn spawn_room(
    mut commands: Commands,
    mut meshes: ResMut<Assets<Mesh>>,
    mut materials: ResMut<Assets<StandardMaterial>>,
) {
    let floor = materials.add(StandardMaterial {
        base_color: Color::srgb(0.22, 0.24, 0.28),
        unlit: true,
        ..default()
    });
    commands.spawn((
        Name::new("Floor"),
        Mesh3d(meshes.add(Plane3d::default().mesh().size(30.0, 30.0))),
        MeshMaterial3d(floor),
        Transform::default(),
    ));

    let wood = materials.add(StandardMaterial {
        base_color: Color::srgb(0.45, 0.32, 0.22),
        perceptual_roughness: 0.8,
        ..default()
    });
    commands.spawn((
        Name::new("Table"),
        Mesh3d(meshes.add(Cylinder::new(seating::TABLE_RADIUS, 0.08))),
        MeshMaterial3d(wood),
        Transform::from_xyz(0.0, 0.75, 0.0),
    ));

    let seat_mesh = meshes.add(Circle::new(0.35));
    let seat_material = materials.add(StandardMaterial {
        base_color: Color::srgb(0.35, 0.55, 0.75),
        unlit: true,
        ..default()
    });
    for index in 0..VISIBLE_SEATS {
        let seat = seating::seat(index);
        commands.spawn((
            Name::new(format!("Seat {index}")),
            SeatMarker(index),
            Mesh3d(seat_mesh.clone()),
            MeshMaterial3d(seat_material.clone()),
            Transform::from_xyz(seat.x, 0.01, seat.z)
                .with_rotation(Quat::from_rotation_x(-std::f32::consts::FRAC_PI_2)),
        ));
    }

    commands.spawn((
        Name::new("Sun"),
        DirectionalLight {
            illuminance: 6_000.0,
            ..default()
        },
        Transform::from_xyz(4.0, 8.0, 3.0).looking_at(Vec3::ZERO, Vec3::Y),
    ));

    // Software rasterizers pay per shaded pixel: no MSAA, no tonemapping pass.
    commands.spawn((
        Name::new("Viewer"),
        ViewerCamera,
        Camera3d::default(),
        Msaa::Off,
        Tonemapping::None,
        Transform::from_translation(OVERVIEW).looking_at(Vec3::new(0.0, 0.8, 0.0), Vec3::Y),
    ));
}
