//! Video quality chosen by the 3D view. A few times a second each remote participant's panel
//! is measured on the screen, and the engine is asked for the smallest layer of their stream
//! that covers the height the panel is shown at (layers are the full picture, half and a
//! quarter of it), or for no video at all while the panel is out of view; its sound goes on.
//! The loudest speakers get at least the middle layer, however far away. A higher layer is
//! asked for at once (the picture should sharpen as you look); a lower one, or a pause, only
//! once the view has wanted it for [`DOWN_AFTER`], and only past a margin below the layer's
//! height, so that turning your head or leaning does not thrash the server.

use std::fmt;

use bevy::prelude::*;
use holoroom_engine::protocol::{UserId, VideoLayer};

use crate::RoomSystems;
use crate::net::{ActiveSpeakers, EngineBridge};
use crate::room::ViewerCamera;
use crate::room::participants::{LocalParticipant, Participant, VideoFeed};
use crate::video::PANEL_SIZE;

/// How often panels are measured.
pub const MEASURE_EVERY: f32 = 0.25;
/// How long the view must want a lower layer (or none) before it is asked for.
pub const DOWN_AFTER: f32 = 1.0;
/// A lower layer is wanted only once the panel is this much smaller than that layer's height.
const DOWN_MARGIN: f32 = 0.8;
/// How many of the loudest speakers keep at least the middle layer.
const SPEAKERS_KEPT_SHARP: usize = 2;
/// Points nearer the viewer than this (in metres) are taken as on the near plane.
const NEAR: f32 = 0.1;
/// The picture height assumed until a stream's full size is known.
const ASSUMED_FULL_HEIGHT: u32 = 360;

/// Why a stream gets the layer it gets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LayerReason {
    /// Not measured yet: the full picture.
    Starting,
    /// The panel is shown this many (physical) pixels tall.
    Size(f32),
    /// Among the loudest speakers: at least the middle layer.
    Speaking,
    /// The panel is behind, beside or above the view.
    OutOfView,
}

impl fmt::Display for LayerReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerReason::Starting => f.write_str("starting"),
            LayerReason::Size(px) => write!(f, "shown {px:.0} px tall"),
            LayerReason::Speaking => f.write_str("speaking"),
            LayerReason::OutOfView => f.write_str("out of view"),
        }
    }
}

/// The layer a participant's stream is asked for, and why; on each remote participant with a
/// played stream.
#[derive(Component, Debug, Clone)]
pub struct ViewQuality {
    pub layer: VideoLayer,
    pub reason: LayerReason,
    /// What the view wants that is lower than `layer`, and since when (seconds).
    pending: Option<(VideoLayer, LayerReason, f32)>,
    /// The tallest picture decoded so far (the full layer's height once it has been seen; 0
    /// before any).
    full_height: u32,
}

impl Default for ViewQuality {
    fn default() -> Self {
        ViewQuality {
            layer: VideoLayer::High,
            reason: LayerReason::Starting,
            pending: None,
            full_height: 0,
        }
    }
}

/// The layer the view wants for a panel shown `on_screen` pixels tall (None: out of view) of a
/// stream whose full picture is `full_height` tall, currently at `current`.
pub fn wanted_layer(
    on_screen: Option<f32>,
    full_height: u32,
    speaking: bool,
    current: VideoLayer,
) -> (VideoLayer, LayerReason) {
    let Some(px) = on_screen else {
        return (VideoLayer::Off, LayerReason::OutOfView);
    };
    let covers = |layer: VideoLayer| {
        let height = full_height as f32 / layer.scale_down().max(1) as f32;
        // Going down needs a margin; staying or going up does not.
        let margin = if layer < current { DOWN_MARGIN } else { 1.0 };
        px <= height * margin
    };
    let layer = [VideoLayer::Low, VideoLayer::Medium]
        .into_iter()
        .find(|&layer| covers(layer))
        .unwrap_or(VideoLayer::High);
    if speaking && layer < VideoLayer::Medium {
        return (VideoLayer::Medium, LayerReason::Speaking);
    }
    (layer, LayerReason::Size(px))
}

impl ViewQuality {
    /// Takes the view's wish at `now` (seconds): returns the layer to ask the engine for, when
    /// that changes. Up at once; down (or off) once wanted for [`DOWN_AFTER`].
    pub fn update(&mut self, now: f32, wanted: VideoLayer, reason: LayerReason) -> Option<VideoLayer> {
        if wanted >= self.layer {
            self.pending = None;
            self.reason = reason;
            if wanted == self.layer {
                return None;
            }
            self.layer = wanted;
            return Some(wanted);
        }
        let since = match self.pending {
            Some((layer, _, since)) if layer == wanted => since,
            _ => now,
        };
        self.pending = Some((wanted, reason, since));
        if now - since < DOWN_AFTER {
            return None;
        }
        self.pending = None;
        self.layer = wanted;
        self.reason = reason;
        Some(wanted)
    }

    /// Notes a decoded picture's height. The tallest seen is taken as the full picture: a
    /// lower layer, or a picture from before a switch, never lowers it.
    fn saw_height(&mut self, height: u32) {
        self.full_height = self.full_height.max(height);
    }

    /// The stream's full height as far as known.
    fn full_height(&self) -> u32 {
        if self.full_height == 0 {
            ASSUMED_FULL_HEIGHT
        } else {
            self.full_height
        }
    }
}

/// When panels were last measured.
#[derive(Resource, Debug, Default)]
struct MeasureTimer(Option<f32>);

pub fn plugin(app: &mut App) {
    app.init_resource::<MeasureTimer>().add_systems(
        Update,
        (give_view_quality, choose_layers).chain().in_set(RoomSystems::Video),
    );
}

/// Every remote participant with a played stream gets its quality tracked.
fn give_view_quality(
    mut commands: Commands,
    new: Query<(Entity, &VideoFeed), (Without<ViewQuality>, Without<LocalParticipant>)>,
) {
    for (entity, feed) in &new {
        if feed.stream_id.is_some() {
            commands.entity(entity).insert(ViewQuality::default());
        }
    }
}

/// Measures each remote panel on the screen and asks for the layer the view wants.
#[allow(clippy::type_complexity)]
fn choose_layers(
    time: Res<Time>,
    mut timer: ResMut<MeasureTimer>,
    bridge: Option<Res<EngineBridge>>,
    speakers: Option<Res<ActiveSpeakers>>,
    camera: Query<(&Camera, &GlobalTransform), With<ViewerCamera>>,
    mut participants: Query<(&Participant, &GlobalTransform, &VideoFeed, &mut ViewQuality)>,
) {
    let now = time.elapsed_secs();
    if timer.0.is_some_and(|last| now - last < MEASURE_EVERY) {
        return;
    }
    timer.0 = Some(now);
    let (Some(bridge), Ok((camera, camera_transform))) = (bridge, camera.single()) else {
        return;
    };
    let loud: &[UserId] = speakers
        .as_ref()
        .map_or(&[], |s| &s.0[..s.0.len().min(SPEAKERS_KEPT_SHARP)]);
    for (participant, place, feed, mut quality) in &mut participants {
        let Some(stream_id) = &feed.stream_id else {
            continue;
        };
        if let Some(frame) = feed.slot.latest() {
            quality.saw_height(frame.frame.height);
        }
        let on_screen = on_screen_height(camera, camera_transform, place.translation());
        let speaking = loud.contains(&participant.user_id);
        let (wanted, reason) = wanted_layer(on_screen, quality.full_height(), speaking, quality.layer);
        if let Some(layer) = quality.update(now, wanted, reason) {
            bridge.engine.set_video_layer(stream_id.clone(), layer);
        }
    }
}

/// How tall the panel of a participant at `center` is on the screen, in physical pixels; None
/// when none of it is in view. Panels turn to face the viewer (about the vertical axis), so
/// the participant's place is all it takes.
pub fn on_screen_height(camera: &Camera, camera_transform: &GlobalTransform, center: Vec3) -> Option<f32> {
    let logical = camera.logical_viewport_size()?;
    let physical = camera.physical_viewport_size()?.as_vec2();
    let to_eye = camera_transform.translation() - center;
    let rotation = Quat::from_rotation_y(to_eye.x.atan2(to_eye.z));
    let right = rotation * Vec3::X * (PANEL_SIZE.x / 2.0);
    let up = Vec3::Y * (PANEL_SIZE.y / 2.0);
    let corners = [
        center - right - up,
        center + right - up,
        center - right + up,
        center + right + up,
    ];
    let view_from_world = camera_transform.affine().inverse();
    let clip_from_view = camera.clip_from_view();
    let (mut low, mut high) = (Vec2::splat(f32::MAX), Vec2::splat(f32::MIN));
    let mut in_front = false;
    for corner in corners {
        // A corner behind the near plane is brought onto it: what is beside or behind the
        // viewer projects far off the screen.
        let mut view = view_from_world.transform_point3(corner);
        in_front |= view.z < -NEAR;
        view.z = view.z.min(-NEAR);
        let ndc = clip_from_view.project_point3(view);
        let point = Vec2::new((ndc.x + 1.0) / 2.0 * logical.x, (1.0 - ndc.y) / 2.0 * logical.y);
        low = low.min(point);
        high = high.max(point);
    }
    if !in_front {
        return None;
    }
    let outside = high.x < 0.0 || high.y < 0.0 || low.x > logical.x || low.y > logical.y;
    if outside {
        return None;
    }
    let height = (high.y.min(logical.y) - low.y.max(0.0)).max(0.0);
    Some(height * physical.y / logical.y.max(1.0))
}

/// A camera that renders nothing, set up as a `width`x`height` window's camera with the default
/// perspective would be: for measuring what a view shows without rendering it (headless apps,
/// tests, benches).
pub fn measuring_camera(width: u32, height: u32) -> Camera {
    use bevy::camera::{CameraProjection, ComputedCameraValues, RenderTargetInfo};
    let mut projection = PerspectiveProjection::default();
    projection.update(width as f32, height as f32);
    Camera {
        computed: ComputedCameraValues {
            clip_from_view: projection.get_clip_from_view(),
            target_info: Some(RenderTargetInfo {
                physical_size: UVec2::new(width, height),
                scale_factor: 1.0,
            }),
            ..default()
        },
        ..default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smallest_layer_that_covers_the_panel() {
        let at = |px, current| wanted_layer(Some(px), 360, false, current).0;
        assert_eq!(at(60.0, VideoLayer::High), VideoLayer::Low, "under 90 px: a quarter");
        assert_eq!(
            at(130.0, VideoLayer::High),
            VideoLayer::Medium,
            "well under 180 px: half"
        );
        assert_eq!(at(300.0, VideoLayer::Low), VideoLayer::High, "over 180 px: all");
        assert_eq!(
            at(2000.0, VideoLayer::Medium),
            VideoLayer::High,
            "larger than the picture"
        );
        assert_eq!(
            wanted_layer(None, 360, true, VideoLayer::High),
            (VideoLayer::Off, LayerReason::OutOfView)
        );
    }

    #[test]
    fn going_down_needs_a_margin_below_the_layer() {
        // 85 px fits a quarter of 360 (90 px), but not with the margin a drop needs.
        assert_eq!(
            wanted_layer(Some(85.0), 360, false, VideoLayer::Medium).0,
            VideoLayer::Medium
        );
        assert_eq!(
            wanted_layer(Some(70.0), 360, false, VideoLayer::Medium).0,
            VideoLayer::Low
        );
        // Already low, it stays low up to the layer's full height.
        assert_eq!(wanted_layer(Some(89.0), 360, false, VideoLayer::Low).0, VideoLayer::Low);
    }

    #[test]
    fn loud_speakers_keep_the_middle_layer_when_small() {
        assert_eq!(
            wanted_layer(Some(30.0), 360, true, VideoLayer::Low),
            (VideoLayer::Medium, LayerReason::Speaking)
        );
        assert_eq!(
            wanted_layer(Some(300.0), 360, true, VideoLayer::Low).0,
            VideoLayer::High
        );
    }

    fn camera(eye: Vec3, target: Vec3) -> (Camera, GlobalTransform) {
        let place = Transform::from_translation(eye).looking_at(target, Vec3::Y);
        (measuring_camera(1280, 720), GlobalTransform::from(place))
    }

    #[test]
    fn panels_are_measured_by_distance_and_lost_out_of_view() {
        let panel = Vec3::new(0.0, 1.0, 0.0);
        let (near, near_at) = camera(Vec3::new(0.0, 1.0, 3.0), panel);
        let (far, far_at) = camera(Vec3::new(0.0, 1.0, 12.0), panel);
        let near_px = on_screen_height(&near, &near_at, panel).expect("in view");
        let far_px = on_screen_height(&far, &far_at, panel).expect("in view");
        // 0.62 m tall at 3 m with a 45 degree field of view on 720 lines: about 180 px.
        assert!((140.0..220.0).contains(&near_px), "{near_px}");
        assert!(
            (far_px * 4.0 - near_px).abs() < near_px * 0.1,
            "a quarter at four times the distance: {far_px}"
        );
        let (away, away_at) = camera(Vec3::new(0.0, 1.0, 3.0), Vec3::new(0.0, 1.0, 6.0));
        assert_eq!(on_screen_height(&away, &away_at, panel), None, "behind the viewer");
        let (aside, aside_at) = camera(Vec3::new(0.0, 1.0, 3.0), Vec3::new(8.0, 1.0, 3.0));
        assert_eq!(on_screen_height(&aside, &aside_at, panel), None, "beside the view");
    }

    #[test]
    fn up_at_once_down_and_off_only_after_holding() {
        let mut q = ViewQuality::default();
        assert_eq!(q.update(0.0, VideoLayer::High, LayerReason::Size(400.0)), None);
        assert_eq!(q.update(0.25, VideoLayer::Off, LayerReason::OutOfView), None);
        assert_eq!(q.update(0.75, VideoLayer::Off, LayerReason::OutOfView), None);
        // Turned back before the pause: nothing was asked.
        assert_eq!(q.update(1.0, VideoLayer::High, LayerReason::Size(400.0)), None);
        assert_eq!(q.update(1.25, VideoLayer::Off, LayerReason::OutOfView), None);
        assert_eq!(
            q.update(2.25, VideoLayer::Off, LayerReason::OutOfView),
            Some(VideoLayer::Off)
        );
        assert_eq!(q.reason, LayerReason::OutOfView);
        assert_eq!(
            q.update(2.5, VideoLayer::Low, LayerReason::Size(50.0)),
            Some(VideoLayer::Low)
        );
        assert_eq!(
            q.update(2.75, VideoLayer::High, LayerReason::Size(500.0)),
            Some(VideoLayer::High)
        );
    }
}
