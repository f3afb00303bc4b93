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

pub fn plugin(app: &mut App) {
    app.add_systems(Startup, spawn_room.in_set(RoomSystems::Scene));
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
        Transform::from_xyz(0.0, 4.5, 8.5).looking_at(Vec3::new(0.0, 0.8, 0.0), Vec3::Y),
    ));
}
