//! Video on entities: each participant's panel samples three R8 plane images through
//! `shaders/yuv.wgsl`. A feed's planes are written only when a new frame arrived, straight from
//! the decoded frame into the textures in the render world.

use bevy::asset::{RenderAssetUsages, uuid_handle};
use bevy::prelude::*;
use std::sync::Arc;

use bevy::render::extract_resource::{ExtractResource, ExtractResourcePlugin};
use bevy::render::render_asset::RenderAssets;
use bevy::render::render_resource::{
    AsBindGroup, Extent3d, ShaderType, TexelCopyBufferLayout, TextureDimension, TextureFormat,
};
use bevy::render::renderer::RenderQueue;
use bevy::render::texture::GpuImage;
use bevy::render::{Render, RenderApp, RenderSystems};
use bevy::shader::{Shader, ShaderRef};
use holoroom_engine::media::{ColorMatrix, VideoFrame};

use crate::RoomSystems;
use crate::room::ViewerCamera;
use crate::room::participants::{LocalParticipant, MediaMute, Participant, VideoFeed};

/// The YUV shader, compiled into the binary so native and web builds use the same source.
const YUV_SHADER: Handle<Shader> = uuid_handle!("4f5b0d8e-6a4b-4c1e-9a57-3c0e1b7d2a91");

/// Panel size in metres (16:9): narrower than the closest two seats are apart
/// ([`crate::room::seating::MIN_SPACING`]), so turned any way two panels never meet.
pub const PANEL_SIZE: Vec2 = Vec2::new(1.1, 0.619);
/// The frame around a remote panel, each side, in metres.
pub const FRAME_WIDTH: f32 = 0.05;

#[derive(ShaderType, Debug, Clone, Copy, Default)]
pub struct YuvParams {
    /// 0 = BT.601, 1 = BT.709.
    pub matrix: u32,
    /// 1 until the first frame arrives.
    pub empty: u32,
    pub _pad0: u32,
    pub _pad1: u32,
}

/// I420 planes as three R8 textures, converted to linear RGB in the shader.
#[derive(Asset, TypePath, AsBindGroup, Debug, Clone)]
pub struct YuvMaterial {
    #[texture(0)]
    pub y: Handle<Image>,
    #[texture(1)]
    pub u: Handle<Image>,
    #[texture(2)]
    #[sampler(3)]
    pub v: Handle<Image>,
    #[uniform(4)]
    pub params: YuvParams,
}

impl Material for YuvMaterial {
    fn fragment_shader() -> ShaderRef {
        ShaderRef::Handle(YUV_SHADER)
    }
}

/// A participant's panel: the entity that carries the video mesh.
#[derive(Component, Debug)]
pub struct Panel {
    pub material: Handle<YuvMaterial>,
    pub size: (u32, u32),
}

/// Frames written into panel textures, for stats and tests.
#[derive(Resource, Debug, Default)]
pub struct UploadStats {
    pub frames_uploaded: u64,
}

pub fn plugin(app: &mut App) {
    crate::embed_shader(
        app,
        &YUV_SHADER,
        include_str!("../shaders/yuv.wgsl"),
        "shaders/yuv.wgsl",
    );
    app.add_plugins((
        MaterialPlugin::<YuvMaterial>::default(),
        ExtractResourcePlugin::<FrameUploads>::default(),
    ))
    .init_resource::<UploadStats>()
    .init_resource::<SelfViewCorner>()
    .init_resource::<SelfViewDrag>()
    .init_resource::<FrameUploads>()
    .add_systems(
        Update,
        (
            give_panels,
            drop_self_view,
            drag_self_view,
            place_self_view,
            face_viewer,
            upload_frames,
        )
            .chain()
            .in_set(RoomSystems::Video),
    );
    if let Some(render_app) = app.get_sub_app_mut(RenderApp) {
        render_app
            .init_resource::<FrameUploads>()
            .add_systems(Render, write_planes.in_set(RenderSystems::PrepareResources));
    }
}

fn plane(images: &mut Assets<Image>, width: u32, height: u32) -> Handle<Image> {
    images.add(Image::new_fill(
        Extent3d {
            width,
            height,
            depth_or_array_layers: 1,
        },
        TextureDimension::D2,
        &[16],
        TextureFormat::R8Unorm,
        RenderAssetUsages::RENDER_WORLD | RenderAssetUsages::MAIN_WORLD,
    ))
}

/// The self-view panel, parented to the camera, and the participant it shows.
#[derive(Component, Debug)]
pub struct SelfView(pub Entity);

/// How far in front of the camera the self-view hangs, in metres.
const SELF_VIEW_DEPTH: f32 = 1.3;

/// Which corner of the view the self-view sits in; drag it to another.
#[derive(Resource, Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum SelfViewCorner {
    TopLeft,
    TopRight,
    BottomLeft,
    #[default]
    BottomRight,
}

impl SelfViewCorner {
    /// The corner of the quarter of a `size` window that `point` is in.
    pub fn nearest(point: Vec2, size: Vec2) -> SelfViewCorner {
        match (point.x < size.x / 2.0, point.y < size.y / 2.0) {
            (true, true) => SelfViewCorner::TopLeft,
            (false, true) => SelfViewCorner::TopRight,
            (true, false) => SelfViewCorner::BottomLeft,
            (false, false) => SelfViewCorner::BottomRight,
        }
    }
}

/// Half the view's width and height at the self-view's depth.
fn half_view(fov: f32, aspect: f32) -> Vec2 {
    let half_height = SELF_VIEW_DEPTH * (fov / 2.0).tan();
    Vec2::new(half_height * aspect.max(0.1), half_height)
}

/// The self-view's scale for a view of `fov` and `aspect`: about a fifth of the view's width
/// (less on tall windows).
fn self_view_scale(fov: f32, aspect: f32) -> f32 {
    (0.4 * half_view(fov, aspect).x / PANEL_SIZE.x).min(0.26)
}

/// Where the self-view goes in the camera's space for a view of `fov` (vertical, radians)
/// and `aspect` (width / height), in `corner`: inside the view at any window shape and clear
/// of the call bar.
pub fn self_view_place(fov: f32, aspect: f32, corner: SelfViewCorner) -> Transform {
    let half = half_view(fov, aspect);
    let scale = self_view_scale(fov, aspect);
    let size = PANEL_SIZE * scale;
    let margin = 0.03 * half.x;
    // The call bar takes about the lowest eighth of the window.
    let bar = 0.27 * half.y;
    let x = half.x - margin - size.x / 2.0;
    let (top, bottom) = (half.y - margin - size.y / 2.0, -half.y + bar + size.y / 2.0);
    let (x, y) = match corner {
        SelfViewCorner::TopLeft => (-x, top),
        SelfViewCorner::TopRight => (x, top),
        SelfViewCorner::BottomLeft => (-x, bottom),
        SelfViewCorner::BottomRight => (x, bottom),
    };
    Transform::from_xyz(x, y, -SELF_VIEW_DEPTH).with_scale(Vec3::splat(scale))
}

/// The rectangle (in window coordinates) that a panel with `transform` covers on screen, or
/// None when some of it is behind the camera.
pub fn panel_on_screen(camera: &Camera, at: &GlobalTransform, transform: &GlobalTransform) -> Option<Rect> {
    let half = PANEL_SIZE / 2.0;
    let mut rect: Option<Rect> = None;
    for (x, y) in [(-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0)] {
        let corner = camera
            .world_to_viewport(at, transform.transform_point(Vec3::new(x * half.x, y * half.y, 0.0)))
            .ok()?;
        rect = Some(rect.map_or(Rect::from_corners(corner, corner), |r| r.union_point(corner)));
    }
    rect
}

/// Keeps the self-view in its corner, inside the view: where it appears, as the window
/// changes shape, and when it is dropped.
fn place_self_view(
    camera: Query<Ref<Projection>, With<ViewerCamera>>,
    corner: Res<SelfViewCorner>,
    drag: Res<SelfViewDrag>,
    mut views: Query<(&mut Transform, Ref<SelfView>)>,
) {
    let Ok(projection) = camera.single() else {
        return;
    };
    let Projection::Perspective(perspective) = &*projection else {
        return;
    };
    if drag.grab.is_some() {
        return;
    }
    for (mut view, added) in &mut views {
        if projection.is_changed() || added.is_added() || corner.is_changed() || drag.is_changed() {
            view.set_if_neq(self_view_place(perspective.fov, perspective.aspect_ratio, *corner));
        }
    }
}

/// A drag of the self-view under way: where on it the pointer took hold (from its centre, in
/// window coordinates).
#[derive(Resource, Debug, Default, Clone, Copy, PartialEq)]
pub struct SelfViewDrag {
    pub grab: Option<Vec2>,
}

/// The self-view follows the pointer while the left button holds it and drops into the
/// nearest corner when let go.
fn drag_self_view(
    buttons: Res<ButtonInput<MouseButton>>,
    windows: Query<&Window, With<bevy::window::PrimaryWindow>>,
    mut egui: bevy_egui::EguiContexts,
    camera: Query<(&Camera, &Projection, &GlobalTransform), With<ViewerCamera>>,
    mut views: Query<(&mut Transform, &GlobalTransform), With<SelfView>>,
    mut corner: ResMut<SelfViewCorner>,
    mut drag: ResMut<SelfViewDrag>,
) {
    let (Ok(window), Ok((camera, Projection::Perspective(perspective), at)), Ok((mut view, placed))) =
        (windows.single(), camera.single(), views.single_mut())
    else {
        // No self-view (you left the room): nothing is held.
        if drag.grab.is_some() {
            drag.grab = None;
        }
        return;
    };
    let cursor = window.cursor_position();
    let held = buttons.pressed(MouseButton::Left);
    match (drag.grab, cursor) {
        (None, Some(cursor)) => {
            let free = egui.ctx_mut().map_or(true, |ctx| !ctx.egui_wants_pointer_input());
            if free
                && buttons.just_pressed(MouseButton::Left)
                && let Some(rect) = panel_on_screen(camera, at, placed)
                && rect.contains(cursor)
            {
                drag.grab = Some(cursor - rect.center());
            }
        }
        (None, None) => {}
        (Some(grab), Some(cursor)) if held => {
            // Its centre under the pointer (less where it was taken), at its depth.
            let window_size = window.size();
            let centre = cursor - grab;
            let half = half_view(perspective.fov, perspective.aspect_ratio);
            let x = (centre.x / window_size.x * 2.0 - 1.0) * half.x;
            let y = (1.0 - centre.y / window_size.y * 2.0) * half.y;
            view.translation = Vec3::new(x, y, -SELF_VIEW_DEPTH);
        }
        // Held outside the window: it waits where it was last seen.
        (Some(_), None) if held => {}
        (Some(grab), cursor) => {
            // Let go: into the corner of the quarter it was let go in (back to its own corner
            // when that was outside the window).
            if let Some(cursor) = cursor {
                corner.set_if_neq(SelfViewCorner::nearest(cursor - grab, window.size()));
            }
            drag.grab = None;
        }
    }
}

/// The mesh entity that shows a remote participant's video, turned to face the viewer.
#[derive(Component, Debug)]
pub struct FaceViewer;

/// Gives every new participant a panel (a dark placeholder until video arrives). Remote
/// participants' panels stand at their seats facing the viewer; your own is a small self-view
/// in the corner of your view.
fn give_panels(
    mut commands: Commands,
    new: Query<(Entity, &Participant, Has<LocalParticipant>), Added<Participant>>,
    camera: Query<Entity, With<ViewerCamera>>,
    mut meshes: ResMut<Assets<Mesh>>,
    mut materials: ResMut<Assets<YuvMaterial>>,
    mut frames: ResMut<Assets<crate::room::scenery::BakedMaterial>>,
    mut images: ResMut<Assets<Image>>,
    look: Res<crate::room::scenery::RoomLook>,
    mut shapes: Local<Option<(Handle<Mesh>, Handle<Mesh>)>>,
) {
    // One screen and one frame shape for everyone: drawn together.
    let (screen, frame) = shapes
        .get_or_insert_with(|| {
            let size = PANEL_SIZE + Vec2::splat(2.0 * FRAME_WIDTH);
            (
                meshes.add(Rectangle::new(PANEL_SIZE.x, PANEL_SIZE.y)),
                meshes.add(Rectangle::new(size.x, size.y)),
            )
        })
        .clone();
    for (entity, participant, local) in &new {
        let material = materials.add(YuvMaterial {
            y: plane(&mut images, 16, 16),
            u: plane(&mut images, 8, 8),
            v: plane(&mut images, 8, 8),
            params: YuvParams { empty: 1, ..default() },
        });
        let mesh = Mesh3d(screen.clone());
        let view = commands
            .spawn((Name::new("Panel"), mesh, MeshMaterial3d(material.clone())))
            .id();
        match (local, camera.single()) {
            (true, Ok(camera)) => {
                // Self-view: small, in a corner (bottom right above the call bar until dragged
                // to another), always facing the camera
                // (placed for the window's shape by `place_self_view`).
                commands.entity(view).insert((
                    self_view_place(
                        crate::room::WIDE_FOV.to_radians(),
                        16.0 / 9.0,
                        SelfViewCorner::default(),
                    ),
                    SelfView(entity),
                ));
                commands.entity(camera).add_child(view);
            }
            _ => {
                commands.entity(view).insert((Transform::default(), FaceViewer));
                commands.entity(entity).add_child(view);
                if *look != crate::room::scenery::RoomLook::Bare {
                    // A frame behind the screen, in the participant's colour (it glows while they
                    // speak: `room::presence`).
                    let material = frames.add(crate::room::scenery::baked_material(
                        None,
                        crate::room::presence::frame_colour(participant.user_id.as_str()),
                    ));
                    commands.spawn((
                        Name::new("Screen frame"),
                        Mesh3d(frame.clone()),
                        MeshMaterial3d(material),
                        Transform::from_xyz(0.0, 0.0, -0.01),
                        crate::room::presence::ScreenFrame {
                            participant: entity,
                            speaking: false,
                        },
                        ChildOf(view),
                    ));
                }
            }
        }
        commands.entity(entity).insert(Panel { material, size: (0, 0) });
    }
}

/// Removes the self-view when you leave the room.
fn drop_self_view(
    mut commands: Commands,
    views: Query<(Entity, &SelfView)>,
    participants: Query<(), With<Participant>>,
) {
    for (view, SelfView(owner)) in &views {
        if participants.get(*owner).is_err() {
            commands.entity(view).despawn();
        }
    }
}

/// Turns remote panels (about the vertical axis) so their fronts face the viewer.
fn face_viewer(
    camera: Query<&GlobalTransform, With<ViewerCamera>>,
    participants: Query<&GlobalTransform, With<Participant>>,
    mut panels: Query<(&ChildOf, &mut Transform), With<FaceViewer>>,
) {
    let Ok(camera) = camera.single() else {
        return;
    };
    let eye = camera.translation();
    for (child_of, mut transform) in &mut panels {
        let Ok(parent) = participants.get(child_of.parent()) else {
            continue;
        };
        let to_eye = eye - parent.translation();
        let world = Quat::from_rotation_y(to_eye.x.atan2(to_eye.z));
        let (_, parent_rotation, _) = parent.to_scale_rotation_translation();
        let local = parent_rotation.inverse() * world;
        if transform.rotation.angle_between(local) > 1e-3 {
            transform.rotation = local;
        }
    }
}

/// Frames on their way to panel textures this frame: the three plane images and the decoded
/// frame, shared (never copied) until the render world writes it into the textures.
#[derive(Resource, Debug, Default, Clone)]
pub struct FrameUploads(pub Vec<(PlaneImages, Arc<VideoFrame>)>);

/// The Y, U and V images of a panel.
pub type PlaneImages = [AssetId<Image>; 3];

impl ExtractResource for FrameUploads {
    type Source = FrameUploads;

    fn extract_resource(source: &Self::Source) -> Self {
        source.clone()
    }
}

/// Writes each extracted frame's planes straight into the panel's textures: one copy, from the
/// decoder's buffer (with its strides) to the GPU queue.
fn write_planes(mut uploads: ResMut<FrameUploads>, images: Res<RenderAssets<GpuImage>>, queue: Res<RenderQueue>) {
    for (planes, frame) in uploads.0.drain(..) {
        let (w, h) = (frame.width, frame.height);
        let layout = [
            (planes[0], &frame.y, frame.y_stride, w, h),
            (planes[1], &frame.u, frame.uv_stride, w / 2, h / 2),
            (planes[2], &frame.v, frame.uv_stride, w / 2, h / 2),
        ];
        for (id, data, stride, width, height) in layout {
            let Some(image) = images.get(id) else { continue };
            let size = image.texture_descriptor.size;
            if (size.width, size.height) != (width, height) {
                continue; // the panel is being resized: the next frame fits
            }
            queue.write_texture(
                image.texture.as_image_copy(),
                data,
                TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(stride as u32),
                    rows_per_image: Some(height),
                },
                size,
            );
        }
    }
}

/// Uploads each feed's fresh frame into its panel's planes.
fn upload_frames(
    mut feeds: Query<(&mut VideoFeed, &mut Panel, Option<&MediaMute>)>,
    mut materials: ResMut<Assets<YuvMaterial>>,
    mut images: ResMut<Assets<Image>>,
    mut stats: ResMut<UploadStats>,
    mut uploads: ResMut<FrameUploads>,
) {
    // Last frame's list was extracted already; only a non-empty list counts as a change.
    uploads.bypass_change_detection().0.clear();
    for (mut feed, mut panel, mute) in &mut feeds {
        let Some(frame) = feed.fresh.take() else {
            continue;
        };
        if mute.is_some_and(|m| m.0.video) {
            // Camera off: the placeholder (the plate draws their initials over it), not the
            // still picture that keeps coming; the next picture after it is on sets up again.
            if panel.size != (0, 0)
                && let Some(mut material) = materials.get_mut(&panel.material)
            {
                material.params.empty = 1;
                panel.size = (0, 0);
            }
            continue;
        }
        let size = (frame.frame.width, frame.frame.height);
        if panel.size != size {
            // New size: new plane images, and the material stops showing the placeholder.
            let Some(mut material) = materials.get_mut(&panel.material) else {
                continue;
            };
            material.y = plane(&mut images, size.0, size.1);
            material.u = plane(&mut images, size.0 / 2, size.1 / 2);
            material.v = plane(&mut images, size.0 / 2, size.1 / 2);
            material.params.empty = 0;
            material.params.matrix = matrix_param(size);
            panel.size = size;
        }
        if let Some(material) = materials.get(&panel.material) {
            let planes = [material.y.id(), material.u.id(), material.v.id()];
            uploads.0.push((planes, frame.frame));
            stats.frames_uploaded += 1;
        }
    }
}

/// The shader's matrix switch for a frame of `size` (0 = BT.601, 1 = BT.709).
pub fn matrix_param(size: (u32, u32)) -> u32 {
    match ColorMatrix::for_size(size.0, size.1) {
        ColorMatrix::Bt601 => 0,
        ColorMatrix::Bt709 => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hd_panels_decode_with_bt709_and_sd_with_bt601() {
        assert_eq!(matrix_param((1280, 720)), 1);
        assert_eq!(matrix_param((1920, 1080)), 1);
        assert_eq!(matrix_param((640, 360)), 0);
        assert_eq!(matrix_param((320, 180)), 0);
    }

    #[test]
    fn the_self_view_stays_whole_inside_the_view_in_every_corner_at_any_window_shape() {
        let corners = [
            SelfViewCorner::TopLeft,
            SelfViewCorner::TopRight,
            SelfViewCorner::BottomLeft,
            SelfViewCorner::BottomRight,
        ];
        for (width, height) in [
            (1920.0, 1080.0),
            (1280.0, 720.0),
            (640.0, 480.0),
            (640.0, 720.0),
            (400.0, 800.0),
        ] {
            let aspect = width / height;
            for (corner, fov) in corners
                .into_iter()
                .flat_map(|c| [22f32, 28.0, 36.0].map(|f| (c, f.to_radians())))
            {
                let place = self_view_place(fov, aspect, corner);
                let depth = -place.translation.z;
                let (half_height, half_width) = (depth * (fov / 2.0).tan(), depth * (fov / 2.0).tan() * aspect);
                let size = PANEL_SIZE * place.scale.x;
                let (left, right) = (place.translation.x - size.x / 2.0, place.translation.x + size.x / 2.0);
                let (bottom, top) = (place.translation.y - size.y / 2.0, place.translation.y + size.y / 2.0);
                let case = format!("{width}x{height} {corner:?} at {:.0} degrees", fov.to_degrees());
                assert!(left > -half_width && right < half_width, "{case}: cut off at a side");
                assert!(top < half_height, "{case}: cut off at the top");
                assert!(bottom > -half_height * 0.85, "{case}: under the call bar");
                assert!(size.x <= 0.42 * half_width, "{case}: small");
                // In its own quarter of the view.
                let left_side = matches!(corner, SelfViewCorner::TopLeft | SelfViewCorner::BottomLeft);
                let top_side = matches!(corner, SelfViewCorner::TopLeft | SelfViewCorner::TopRight);
                assert_eq!(right < 0.0, left_side, "{case}: on its side");
                if top_side {
                    assert!(bottom > 0.0, "{case}: in the top half");
                } else {
                    assert!(top < 0.0, "{case}: in the bottom half");
                }
            }
        }
    }

    #[test]
    fn a_dropped_self_view_goes_to_the_corner_of_its_quarter() {
        let window = Vec2::new(1280.0, 720.0);
        assert_eq!(
            SelfViewCorner::nearest(Vec2::new(100.0, 80.0), window),
            SelfViewCorner::TopLeft
        );
        assert_eq!(
            SelfViewCorner::nearest(Vec2::new(1200.0, 80.0), window),
            SelfViewCorner::TopRight
        );
        assert_eq!(
            SelfViewCorner::nearest(Vec2::new(100.0, 600.0), window),
            SelfViewCorner::BottomLeft
        );
        assert_eq!(
            SelfViewCorner::nearest(Vec2::new(700.0, 400.0), window),
            SelfViewCorner::BottomRight
        );
    }
}
