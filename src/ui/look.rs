//! The overlay's own assets: its typeface and the call bar's icons, loaded through the asset
//! server (the browser build fetches them from beside the page). Until they are in (or if
//! one is missing) egui's bundled font and the icons' tooltips stand in, and the log says why.

use std::collections::HashMap;

use bevy::asset::LoadState;
use bevy::prelude::*;
use bevy_egui::{EguiContexts, EguiTextureHandle, egui};

/// The interface's typeface.
pub const FONT: &str = "fonts/Inter-Regular.otf";
/// The name it goes by among egui's fonts.
const FONT_NAME: &str = "Inter";

/// An icon of the call bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Icon {
    Microphone,
    MicrophoneOff,
    Camera,
    CameraOff,
    Devices,
    Participants,
    Chat,
    Connection,
    Overview,
    Leave,
}

impl Icon {
    pub const ALL: [Icon; 10] = [
        Icon::Microphone,
        Icon::MicrophoneOff,
        Icon::Camera,
        Icon::CameraOff,
        Icon::Devices,
        Icon::Participants,
        Icon::Chat,
        Icon::Connection,
        Icon::Overview,
        Icon::Leave,
    ];

    /// What stands in while its image is not in: a glyph of egui's bundled fonts.
    pub const fn fallback(self) -> &'static str {
        match self {
            Icon::Microphone => "🎤",
            Icon::MicrophoneOff => "🔇",
            Icon::Camera => "📷",
            Icon::CameraOff => "🚫",
            Icon::Devices => "⚙",
            Icon::Participants => "👥",
            Icon::Chat => "💬",
            Icon::Connection => "📶",
            Icon::Overview => "🗺",
            Icon::Leave => "📞",
        }
    }

    /// Its file under `assets/`.
    pub const fn path(self) -> &'static str {
        match self {
            Icon::Microphone => "icons/microphone.png",
            Icon::MicrophoneOff => "icons/microphone-off.png",
            Icon::Camera => "icons/camera.png",
            Icon::CameraOff => "icons/camera-off.png",
            Icon::Devices => "icons/devices.png",
            Icon::Participants => "icons/participants.png",
            Icon::Chat => "icons/chat.png",
            Icon::Connection => "icons/connection.png",
            Icon::Overview => "icons/overview.png",
            Icon::Leave => "icons/leave.png",
        }
    }
}

/// The icons whose images are in, as egui textures.
#[derive(Resource, Debug, Default)]
pub struct Icons(HashMap<Icon, egui::TextureId>);

impl Icons {
    /// The icon as an image `size` points square, tinted `colour`.
    pub fn image(&self, icon: Icon, size: f32, colour: egui::Color32) -> Option<egui::Image<'static>> {
        let id = *self.0.get(&icon)?;
        Some(egui::Image::new(egui::load::SizedTexture::new(id, [size, size])).tint(colour))
    }
}

/// The typeface and the icons on their way in.
#[derive(Resource, Debug, Default)]
struct Pending {
    font: Option<Handle<Font>>,
    icons: Vec<(Icon, Handle<Image>)>,
}

pub fn plugin(app: &mut App) {
    app.init_resource::<Icons>()
        .init_resource::<Pending>()
        .add_systems(Startup, load)
        .add_systems(Update, install);
}

fn load(assets: Res<AssetServer>, mut pending: ResMut<Pending>) {
    pending.icons = Icon::ALL
        .into_iter()
        .map(|icon| (icon, assets.load(icon.path())))
        .collect();
    pending.font = Some(assets.load(FONT));
}

/// Puts each asset to use once it has loaded: the typeface becomes egui's first choice, an
/// icon replaces its stand-in glyph. One that fails is said in the log and left to its stand-in.
fn install(
    mut contexts: EguiContexts,
    mut pending: ResMut<Pending>,
    mut icons: ResMut<Icons>,
    fonts: Res<Assets<Font>>,
    assets: Res<AssetServer>,
) -> Result {
    let mut waiting = Vec::new();
    for (icon, handle) in std::mem::take(&mut pending.icons) {
        match assets.load_state(&handle) {
            LoadState::Loaded => {
                let id = contexts.add_image(EguiTextureHandle::Strong(handle));
                icons.0.insert(icon, id);
            }
            LoadState::Failed(error) => warn!("the icon {} did not load ({error}); a glyph stands in", icon.path()),
            LoadState::NotLoaded | LoadState::Loading => waiting.push((icon, handle)),
        }
    }
    pending.icons = waiting;
    let Some(handle) = pending.font.clone() else {
        return Ok(());
    };
    match assets.load_state(&handle) {
        LoadState::Loaded => {
            if let Some(font) = fonts.get(&handle) {
                let ctx = contexts.ctx_mut()?;
                use_font(ctx, font.data.as_ref().to_vec());
            }
            pending.font = None;
        }
        LoadState::Failed(error) => {
            warn!("the interface's typeface {FONT} did not load ({error}); egui's own stands in");
            pending.font = None;
        }
        LoadState::NotLoaded | LoadState::Loading => {}
    }
    Ok(())
}

/// Puts `data` (an OpenType or TrueType font) first for egui's proportional text; egui's
/// bundled fonts stay behind it for what it lacks (emoji, symbols).
pub fn use_font(ctx: &egui::Context, data: Vec<u8>) {
    ctx.add_font(egui::epaint::text::FontInsert::new(
        FONT_NAME,
        egui::FontData::from_owned(data),
        vec![egui::epaint::text::InsertFontFamily {
            family: egui::FontFamily::Proportional,
            priority: egui::epaint::text::FontPriority::Highest,
        }],
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The asset folder the app loads from.
    fn asset(path: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("assets")
            .join(path)
    }

    #[test]
    fn every_icon_is_a_48_pixel_square_with_transparency() {
        for icon in Icon::ALL {
            let file = std::fs::File::open(asset(icon.path())).unwrap_or_else(|e| panic!("{icon:?}: {e}"));
            let reader = png::Decoder::new(std::io::BufReader::new(file))
                .read_info()
                .unwrap_or_else(|e| panic!("{icon:?} is not a PNG: {e}"));
            let info = reader.info();
            assert_eq!((info.width, info.height), (48, 48), "{icon:?}");
            assert_eq!(info.color_type, png::ColorType::Rgba, "{icon:?}");
        }
    }

    #[test]
    fn the_typeface_sets_the_interfaces_text() {
        let data = std::fs::read(asset(FONT)).expect("the typeface is in assets");
        let width = |ctx: &egui::Context| {
            let mut width = 0.0;
            let mut output = ctx.run_ui(egui::RawInput::default(), |ui| {
                width = ui.label("Holoroom: Welcome, everyone!").rect.width();
            });
            output.textures_delta.clear();
            width
        };
        let ctx = egui::Context::default();
        let before = width(&ctx);
        use_font(&ctx, data);
        // The font takes effect from the next frame.
        width(&ctx);
        let after = width(&ctx);
        assert!(after > 0.0 && (after - before).abs() > 1.0, "{before} vs {after}");
    }
}
