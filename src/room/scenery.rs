//! The room people sit in: a lounge with an oak floor, a rug, plaster walls with tall windows,
//! a ceiling with round lamps, plants, and a table with a chair at each seat.
//!
//! Software rendering pays for every instruction per pixel, so nothing here is lit: light is
//! baked into vertex colours (walls darker at the floor, a pool of light under the lamps,
//! corners in shade; rounded things by their normals, [`shaded`]) over small tiling textures
//! from `assets/textures/`, loaded through the asset server so the desktop and browser builds
//! share them, drawn by a material that does nothing else ([`BakedMaterial`]).

use bevy::asset::uuid_handle;
use bevy::image::{ImageAddressMode, ImageLoaderSettings, ImageSampler, ImageSamplerDescriptor};
use bevy::mesh::VertexAttributeValues;
use bevy::prelude::*;
use bevy::render::render_resource::AsBindGroup;
use bevy::shader::{Shader, ShaderRef};

use super::seating;

/// The baked-light shader, compiled into the binary so native and web builds use the same source.
const BAKED_SHADER: Handle<Shader> = uuid_handle!("2d3c6a1e-8f4b-4e2a-b1c7-5a9e0f3d7c42");

/// A surface whose light is baked into its vertex colours: colour = tint x texture x vertex
/// colour, and nothing else per pixel (`shaders/baked.wgsl`). Bevy's unlit standard material
/// does far more per pixel, which a software renderer feels on every surface of the room.
#[derive(Asset, TypePath, AsBindGroup, Debug, Clone)]
pub struct BakedMaterial {
    #[uniform(0)]
    pub tint: LinearRgba,
    #[texture(1)]
    #[sampler(2)]
    pub texture: Option<Handle<Image>>,
}

impl Material for BakedMaterial {
    fn fragment_shader() -> ShaderRef {
        ShaderRef::Handle(BAKED_SHADER)
    }
}

/// The material for the room, its figures and frames.
pub fn plugin(app: &mut App) {
    crate::embed_shader(
        app,
        &BAKED_SHADER,
        include_str!("../../shaders/baked.wgsl"),
        "shaders/baked.wgsl",
    );
    app.add_plugins(MaterialPlugin::<BakedMaterial>::default());
}

/// Which room is built.
#[derive(Resource, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RoomLook {
    /// The furnished lounge.
    #[default]
    Lounge,
    /// The room as it was before it was furnished, for the render bench's baseline: floor,
    /// table and seat markers, bare screens without frames or figures.
    Bare,
}

/// The room's extent: walls at +-HALF_WIDTH (x) and +-HALF_DEPTH (z), in metres.
pub const HALF_WIDTH: f32 = 9.0;
pub const HALF_DEPTH: f32 = 8.0;
pub const CEILING: f32 = 3.6;
/// Height of a table top, in metres.
pub const TABLE_HEIGHT: f32 = 0.76;
/// Height of a chair's seat.
pub const SEAT_HEIGHT: f32 = 0.46;
/// The gallery's step runs between these radii, its seats in the middle.
const GALLERY_INNER: f32 = seating::GALLERY_RADIUS - 0.6;
const GALLERY_OUTER: f32 = 0.9 + {
    // The last ring on the step.
    seating::GALLERY_RADIUS + (*seating::STEPPED_RINGS.end() - 1) as f32 * seating::RING_STEP
};

/// Part of the furnished room (for tests and the bench to find).
#[derive(Component, Debug)]
pub struct Scenery;

/// A chair at a seat.
#[derive(Component, Debug)]
pub struct Chair(pub usize);

/// A texture that repeats across a surface.
fn tiled(assets: &AssetServer, path: &'static str) -> Handle<Image> {
    assets
        .load_builder()
        .with_settings(|settings: &mut ImageLoaderSettings| {
            settings.sampler = ImageSampler::Descriptor(ImageSamplerDescriptor {
                address_mode_u: ImageAddressMode::Repeat,
                address_mode_v: ImageAddressMode::Repeat,
                ..ImageSamplerDescriptor::linear()
            });
        })
        .load(path)
}

/// Bakes light into `mesh`: each vertex's colour from its world position (`at` places the
/// mesh), and its texture coordinates scaled by `repeat`.
fn baked(mut mesh: Mesh, at: &Transform, repeat: Vec2, light: impl Fn(Vec3) -> f32) -> Mesh {
    let colours: Vec<[f32; 4]> = match mesh.attribute(Mesh::ATTRIBUTE_POSITION) {
        Some(VertexAttributeValues::Float32x3(positions)) => positions
            .iter()
            .map(|p| {
                let k = light(at.transform_point(Vec3::from(*p))).clamp(0.0, 1.5);
                [k, k, k, 1.0]
            })
            .collect(),
        _ => Vec::new(),
    };
    mesh.insert_attribute(Mesh::ATTRIBUTE_COLOR, colours);
    if let Some(VertexAttributeValues::Float32x2(uvs)) = mesh.attribute_mut(Mesh::ATTRIBUTE_UV_0) {
        for uv in uvs.iter_mut() {
            *uv = [uv[0] * repeat.x, uv[1] * repeat.y];
        }
    }
    mesh
}

/// How many metres of floor one repeat of its texture covers.
const FLOOR_TILE: f32 = 3.0;

/// Texture coordinates from where each vertex is on the floor (x, z), one repeat per `tile`
/// metres, so a surface's texture lines up with the floor's; its sides take (x + z, y).
fn planar_uvs(mut mesh: Mesh, at: &Transform, tile: f32) -> Mesh {
    let (Some(VertexAttributeValues::Float32x3(positions)), Some(VertexAttributeValues::Float32x3(normals))) = (
        mesh.attribute(Mesh::ATTRIBUTE_POSITION),
        mesh.attribute(Mesh::ATTRIBUTE_NORMAL),
    ) else {
        return mesh;
    };
    let uvs: Vec<[f32; 2]> = positions
        .iter()
        .zip(normals)
        .map(|(p, n)| {
            let world = at.transform_point(Vec3::from(*p));
            if (at.rotation * Vec3::from(*n)).y.abs() > 0.5 {
                [world.x / tile, world.z / tile]
            } else {
                [(world.x + world.z) / tile, world.y / tile]
            }
        })
        .collect();
    mesh.insert_attribute(Mesh::ATTRIBUTE_UV_0, uvs);
    mesh
}

/// Bakes soft light from above into `mesh` by its normals (a key light from the lamps and
/// a fill), for unlit materials.
pub fn shaded(mut mesh: Mesh) -> Mesh {
    let key = Vec3::new(0.3, 1.0, 0.5).normalize();
    let colours: Vec<[f32; 4]> = match mesh.attribute(Mesh::ATTRIBUTE_NORMAL) {
        Some(VertexAttributeValues::Float32x3(normals)) => normals
            .iter()
            .map(|n| {
                let n = Vec3::from(*n);
                let k = 0.45 + 0.45 * n.dot(key).max(0.0) + 0.12 * (n.y * 0.5 + 0.5);
                [k, k, k, 1.0]
            })
            .collect(),
        _ => Vec::new(),
    };
    mesh.insert_attribute(Mesh::ATTRIBUTE_COLOR, colours);
    mesh
}

/// The lamps over the table, where the baked light pools.
const LAMPS: [Vec2; 4] = [
    Vec2::new(-2.2, -2.2),
    Vec2::new(2.2, -2.2),
    Vec2::new(-2.2, 2.2),
    Vec2::new(2.2, 2.2),
];

/// Light on the floor at (x, z): a pool under the lamps, shade towards walls and corners.
fn floor_light(p: Vec3) -> f32 {
    let pool = LAMPS
        .iter()
        .map(|l| (-(Vec2::new(p.x, p.z) - *l).length_squared() / 18.0).exp())
        .sum::<f32>()
        .min(1.0);
    let edge = (p.x.abs() / HALF_WIDTH).max(p.z.abs() / HALF_DEPTH);
    0.62 + 0.38 * pool - 0.22 * edge.powi(3)
}

/// Light on a wall at height y: darker near the floor, brighter up where the lamps wash it.
fn wall_light(p: Vec3) -> f32 {
    let corner = (p.x.abs() / HALF_WIDTH).min(p.z.abs() / HALF_DEPTH);
    0.7 + 0.3 * (p.y / CEILING).sqrt() - 0.18 * corner.powi(6)
}

/// A plane as large as the room (floor or ceiling), fine enough for its baked light.
fn room_plane(subdivisions: u32) -> Mesh {
    Plane3d::default()
        .mesh()
        .size(2.0 * HALF_WIDTH, 2.0 * HALF_DEPTH)
        .subdivisions(subdivisions)
        .build()
}

/// A baked surface of `colour`, textured or not.
pub fn baked_material(texture: Option<Handle<Image>>, colour: Color) -> BakedMaterial {
    BakedMaterial {
        tint: colour.into(),
        texture,
    }
}

/// The bare room's flat surfaces.
fn unlit(colour: Color) -> StandardMaterial {
    StandardMaterial {
        base_color: colour,
        unlit: true,
        ..default()
    }
}

pub fn spawn_scenery(
    mut commands: Commands,
    look: Res<RoomLook>,
    assets: Res<AssetServer>,
    mut meshes: ResMut<Assets<Mesh>>,
    mut standard: ResMut<Assets<StandardMaterial>>,
    mut materials: ResMut<Assets<BakedMaterial>>,
) {
    if *look == RoomLook::Bare {
        spawn_bare(&mut commands, &mut meshes, &mut standard);
        return;
    }
    let oak = tiled(&assets, "textures/floor_oak.png");
    let oak_step = oak.clone();
    let plaster = tiled(&assets, "textures/wall_plaster.png");
    let rug = tiled(&assets, "textures/rug_weave.png");
    let fabric = tiled(&assets, "textures/chair_fabric.png");

    // Floor, with light baked in.
    let at = Transform::default();
    let floor = room_plane(24);
    commands.spawn((
        Name::new("Floor"),
        Scenery,
        Mesh3d(meshes.add(baked(floor, &at, Vec2::new(6.0, 5.3), floor_light))),
        MeshMaterial3d(materials.add(baked_material(Some(oak), Color::WHITE))),
        at,
    ));

    // A round rug under the table.
    let at = Transform::from_xyz(0.0, 0.005, 0.0).with_rotation(Quat::from_rotation_x(-std::f32::consts::FRAC_PI_2));
    let rug_mesh = Circle::new(GALLERY_INNER - 0.1).mesh().resolution(64).build();
    commands.spawn((
        Name::new("Rug"),
        Scenery,
        Mesh3d(meshes.add(baked(rug_mesh, &at, Vec2::splat(10.0), |p| {
            0.75 + 0.3 * floor_light(p) - 0.1 * (p.length() / 4.0).powi(4)
        }))),
        MeshMaterial3d(materials.add(baked_material(Some(rug), Color::WHITE))),
        at,
    ));

    // Walls, facing in.
    let plaster_material = materials.add(baked_material(Some(plaster), Color::WHITE));
    let skirting = materials.add(baked_material(None, Color::srgb(0.28, 0.2, 0.15)));
    for (name, centre, facing, width) in [
        ("Back wall", Vec3::new(0.0, 0.0, -HALF_DEPTH), Vec3::Z, 2.0 * HALF_WIDTH),
        (
            "Front wall",
            Vec3::new(0.0, 0.0, HALF_DEPTH),
            -Vec3::Z,
            2.0 * HALF_WIDTH,
        ),
        ("Left wall", Vec3::new(-HALF_WIDTH, 0.0, 0.0), Vec3::X, 2.0 * HALF_DEPTH),
        (
            "Right wall",
            Vec3::new(HALF_WIDTH, 0.0, 0.0),
            -Vec3::X,
            2.0 * HALF_DEPTH,
        ),
    ] {
        let at = Transform::from_translation(centre + Vec3::Y * CEILING / 2.0).looking_to(-facing, Vec3::Y);
        let wall = Rectangle::new(width, CEILING).mesh().build();
        commands.spawn((
            Name::new(name),
            Scenery,
            Mesh3d(meshes.add(baked(wall, &at, Vec2::new(width / 2.5, CEILING / 2.5), wall_light))),
            MeshMaterial3d(plaster_material.clone()),
            at,
        ));
        commands.spawn((
            Name::new("Skirting"),
            Scenery,
            Mesh3d(meshes.add(Cuboid::new(width, 0.12, 0.03))),
            MeshMaterial3d(skirting.clone()),
            Transform::from_translation(centre + facing * 0.015 + Vec3::Y * 0.06).looking_to(-facing, Vec3::Y),
        ));
    }

    // Tall windows on the side walls: a bright sky, dark frames.
    let frame = materials.add(baked_material(None, Color::srgb(0.2, 0.2, 0.22)));
    for side in [-1.0f32, 1.0] {
        for z in [-4.5f32, 0.0, 4.5] {
            let facing = Vec3::X * -side;
            let centre = Vec3::new(side * HALF_WIDTH, 1.75, z) + facing * 0.01;
            let at = Transform::from_translation(centre).looking_to(-facing, Vec3::Y);
            let pane = Rectangle::new(2.0, 2.3).mesh().build();
            let pane = baked(pane, &at, Vec2::ONE, |p| 0.8 + 0.25 * ((p.y - 0.6) / 2.3));
            let tint = Color::srgb(0.72, 0.86, 0.98);
            commands.spawn((
                Name::new("Window"),
                Scenery,
                Mesh3d(meshes.add(pane)),
                MeshMaterial3d(materials.add(baked_material(None, tint))),
                at,
            ));
            for (offset, size) in [
                (Vec3::ZERO, Vec3::new(0.06, 2.3, 0.04)),
                (Vec3::Y * 0.35, Vec3::new(2.0, 0.05, 0.04)),
                (Vec3::Y * 1.17, Vec3::new(2.1, 0.08, 0.05)),
                (-Vec3::Y * 1.17, Vec3::new(2.1, 0.08, 0.05)),
                (Vec3::X * 1.02, Vec3::new(0.08, 2.4, 0.05)),
                (-Vec3::X * 1.02, Vec3::new(0.08, 2.4, 0.05)),
            ] {
                commands.spawn((
                    Name::new("Window frame"),
                    Scenery,
                    Mesh3d(meshes.add(Cuboid::from_size(size))),
                    MeshMaterial3d(frame.clone()),
                    at * Transform::from_translation(offset),
                ));
            }
        }
    }

    // Ceiling with round lamps.
    let at = Transform::from_xyz(0.0, CEILING, 0.0).with_rotation(Quat::from_rotation_x(std::f32::consts::PI));
    let ceiling = room_plane(12);
    commands.spawn((
        Name::new("Ceiling"),
        Scenery,
        Mesh3d(meshes.add(baked(ceiling, &at, Vec2::ONE, |p| 0.55 + 0.35 * floor_light(p)))),
        MeshMaterial3d(materials.add(baked_material(None, Color::srgb(0.93, 0.92, 0.9)))),
        at,
    ));
    // Discs facing down: seen from the room, not from the overview above the ceiling.
    let lamp = meshes.add(Circle::new(0.35));
    let glow = materials.add(baked_material(None, Color::srgb(1.0, 0.97, 0.88)));
    for at in LAMPS {
        commands.spawn((
            Name::new("Lamp"),
            Scenery,
            Mesh3d(lamp.clone()),
            MeshMaterial3d(glow.clone()),
            Transform::from_xyz(at.x, CEILING - 0.01, at.y)
                .with_rotation(Quat::from_rotation_x(std::f32::consts::FRAC_PI_2)),
        ));
    }

    // Plants in the corners.
    let pot = meshes.add(Cylinder::new(0.28, 0.6));
    let leaves = meshes.add(shaded(Sphere::new(0.55).mesh().build()));
    let clay = materials.add(baked_material(None, Color::srgb(0.62, 0.36, 0.26)));
    let green = materials.add(baked_material(None, Color::srgb(0.3, 0.62, 0.34)));
    for (x, z) in [(-1.0, -1.0), (1.0, -1.0), (-1.0, 1.0), (1.0, 1.0)] {
        let base = Vec3::new(x * (HALF_WIDTH - 0.8), 0.0, z * (HALF_DEPTH - 0.8));
        commands.spawn((
            Name::new("Plant pot"),
            Scenery,
            Mesh3d(pot.clone()),
            MeshMaterial3d(clay.clone()),
            Transform::from_translation(base + Vec3::Y * 0.3),
        ));
        commands.spawn((
            Name::new("Plant"),
            Scenery,
            Mesh3d(leaves.clone()),
            MeshMaterial3d(green.clone()),
            Transform::from_translation(base + Vec3::Y * 1.05).with_scale(Vec3::new(1.0, 1.3, 1.0)),
        ));
    }

    // The gallery: a step around the table whose people are seen over the first ring's.
    let at = Transform::from_xyz(0.0, seating::GALLERY_RISE / 2.0, 0.0)
        .with_rotation(Quat::from_rotation_x(-std::f32::consts::FRAC_PI_2));
    let step = Extrusion::new(Annulus::new(GALLERY_INNER, GALLERY_OUTER), seating::GALLERY_RISE)
        .mesh()
        .resolution(96)
        .build();
    // Its planks run on from the floor's.
    let step = planar_uvs(step, &at, FLOOR_TILE);
    commands.spawn((
        Name::new("Gallery"),
        Scenery,
        Mesh3d(meshes.add(baked(step, &at, Vec2::ONE, |p| {
            if p.y > seating::GALLERY_RISE - 0.01 {
                0.92 * floor_light(p)
            } else {
                // Its face, turned from the lamps.
                0.5 + 0.15 * (p.y / seating::GALLERY_RISE)
            }
        }))),
        MeshMaterial3d(materials.add(baked_material(Some(oak_step), Color::srgb(0.86, 0.8, 0.74)))),
        at,
    ));

    spawn_table(&mut commands, &mut meshes, &mut materials, &assets);
    let chair = chair_parts(&mut meshes, &mut materials, fabric);
    for index in seating::seats_with_chairs() {
        let seat = seating::seat(index);
        let parent = commands
            .spawn((
                Name::new(format!("Chair {index}")),
                Scenery,
                Chair(index),
                Transform::from_xyz(seat.x, seat.floor, seat.z).with_rotation(Quat::from_rotation_y(seat.yaw)),
                Visibility::default(),
            ))
            .id();
        for (mesh, material, at) in &chair {
            commands.spawn((
                Mesh3d(mesh.clone()),
                MeshMaterial3d(material.clone()),
                *at,
                ChildOf(parent),
            ));
        }
    }
}

fn spawn_table(
    commands: &mut Commands,
    meshes: &mut Assets<Mesh>,
    materials: &mut Assets<BakedMaterial>,
    assets: &AssetServer,
) {
    let at = Transform::from_xyz(0.0, TABLE_HEIGHT, 0.0);
    let top = Cylinder::new(seating::TABLE_RADIUS, 0.06).mesh().resolution(64).build();
    let top = baked(top, &at, Vec2::new(1.5, 1.5), |p| {
        // The edge catches less light than the middle.
        if p.y > TABLE_HEIGHT {
            1.0 - 0.12 * (p.length() / seating::TABLE_RADIUS).powi(2)
        } else {
            0.55
        }
    });
    commands.spawn((
        Name::new("Table"),
        Scenery,
        Mesh3d(meshes.add(top)),
        MeshMaterial3d(materials.add(baked_material(
            Some(tiled(assets, "textures/table_walnut.png")),
            Color::WHITE,
        ))),
        at,
    ));
    let dark = materials.add(baked_material(None, Color::srgb(0.16, 0.15, 0.16)));
    commands.spawn((
        Name::new("Table stand"),
        Scenery,
        Mesh3d(meshes.add(Cylinder::new(0.22, TABLE_HEIGHT))),
        MeshMaterial3d(dark.clone()),
        Transform::from_xyz(0.0, TABLE_HEIGHT / 2.0, 0.0),
    ));
    commands.spawn((
        Name::new("Table foot"),
        Scenery,
        Mesh3d(meshes.add(Cylinder::new(0.75, 0.04))),
        MeshMaterial3d(dark),
        Transform::from_xyz(0.0, 0.02, 0.0),
    ));
}

/// A chair's parts relative to its seat's centre on the floor, its front (+Z) to the table.
fn chair_parts(
    meshes: &mut Assets<Mesh>,
    materials: &mut Assets<BakedMaterial>,
    fabric: Handle<Image>,
) -> Vec<(Handle<Mesh>, Handle<BakedMaterial>, Transform)> {
    let cloth = materials.add(baked_material(Some(fabric.clone()), Color::WHITE));
    let shade = materials.add(baked_material(Some(fabric), Color::srgb(0.72, 0.72, 0.75)));
    let metal = materials.add(baked_material(None, Color::srgb(0.18, 0.18, 0.2)));
    vec![
        (
            meshes.add(Cuboid::new(0.56, 0.1, 0.52)),
            cloth.clone(),
            Transform::from_xyz(0.0, SEAT_HEIGHT, 0.0),
        ),
        (
            meshes.add(Cuboid::new(0.56, 0.62, 0.09)),
            shade,
            Transform::from_xyz(0.0, SEAT_HEIGHT + 0.34, -0.27).with_rotation(Quat::from_rotation_x(-0.12)),
        ),
        (
            meshes.add(Cylinder::new(0.04, SEAT_HEIGHT)),
            metal.clone(),
            Transform::from_xyz(0.0, SEAT_HEIGHT / 2.0, 0.0),
        ),
        (
            meshes.add(Cylinder::new(0.3, 0.03)),
            metal,
            Transform::from_xyz(0.0, 0.015, 0.0),
        ),
    ]
}

/// The room as it was before it was furnished: for the render bench's baseline.
fn spawn_bare(commands: &mut Commands, meshes: &mut Assets<Mesh>, materials: &mut Assets<StandardMaterial>) {
    commands.spawn((
        Name::new("Floor"),
        Mesh3d(meshes.add(Plane3d::default().mesh().size(30.0, 30.0))),
        MeshMaterial3d(materials.add(unlit(Color::srgb(0.22, 0.24, 0.28)))),
        Transform::default(),
    ));
    commands.spawn((
        Name::new("Table"),
        Mesh3d(meshes.add(Cylinder::new(seating::TABLE_RADIUS, 0.08))),
        MeshMaterial3d(materials.add(StandardMaterial {
            base_color: Color::srgb(0.45, 0.32, 0.22),
            perceptual_roughness: 0.8,
            ..default()
        })),
        Transform::from_xyz(0.0, 0.75, 0.0),
    ));
    let seat_mesh = meshes.add(Circle::new(0.35));
    let seat_material = materials.add(unlit(Color::srgb(0.35, 0.55, 0.75)));
    for index in 0..super::VISIBLE_SEATS {
        let seat = seating::seat(index);
        commands.spawn((
            Name::new(format!("Seat {index}")),
            super::SeatMarker(index),
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
}
