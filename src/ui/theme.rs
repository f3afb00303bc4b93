//! One look for every window: rounded cards, roomy spacing, type that reads at 1280x720 and
//! 1920x1080, light or dark as the system says (dark where it says nothing: the room is dim).

use bevy::prelude::*;
use bevy_egui::{EguiContexts, egui};

/// The join button and other calls to action.
pub const ACCENT: egui::Color32 = egui::Color32::from_rgb(46, 118, 214);
/// A switch that is off (microphone muted, camera off).
pub const OFF: egui::Color32 = egui::Color32::from_rgb(150, 60, 55);
/// Leaving, and problems that stopped something.
pub const ERROR: egui::Color32 = egui::Color32::from_rgb(205, 70, 60);
/// Problems that did not stop anything.
pub const WARNING: egui::Color32 = egui::Color32::from_rgb(235, 170, 80);

/// Applies the theme once the overlay exists.
pub fn apply(mut contexts: EguiContexts, mut done: Local<bool>) -> Result {
    if *done {
        return Ok(());
    }
    let ctx = contexts.ctx_mut()?;
    ctx.options_mut(|options| options.fallback_theme = egui::Theme::Dark);
    ctx.set_theme(egui::ThemePreference::System);
    ctx.all_styles_mut(style);
    *done = true;
    Ok(())
}

fn style(style: &mut egui::Style) {
    use egui::{FontFamily, FontId, TextStyle};
    style.text_styles = [
        (TextStyle::Heading, FontId::new(24.0, FontFamily::Proportional)),
        (TextStyle::Body, FontId::new(15.0, FontFamily::Proportional)),
        (TextStyle::Button, FontId::new(15.0, FontFamily::Proportional)),
        (TextStyle::Small, FontId::new(12.0, FontFamily::Proportional)),
        (TextStyle::Monospace, FontId::new(13.0, FontFamily::Monospace)),
    ]
    .into();
    let spacing = &mut style.spacing;
    spacing.item_spacing = egui::vec2(8.0, 7.0);
    spacing.button_padding = egui::vec2(10.0, 5.0);
    spacing.window_margin = egui::Margin::same(16);
    spacing.interact_size.y = 26.0;
    let visuals = &mut style.visuals;
    visuals.window_corner_radius = egui::CornerRadius::same(14);
    visuals.menu_corner_radius = egui::CornerRadius::same(10);
    for widget in [
        &mut visuals.widgets.noninteractive,
        &mut visuals.widgets.inactive,
        &mut visuals.widgets.hovered,
        &mut visuals.widgets.active,
        &mut visuals.widgets.open,
    ] {
        widget.corner_radius = egui::CornerRadius::same(8);
    }
    visuals.selection.bg_fill = ACCENT;
    visuals.hyperlink_color = WARNING;
}

/// A Bevy colour for egui.
pub fn colour32(colour: Color) -> egui::Color32 {
    let srgb = colour.to_srgba();
    egui::Color32::from_rgb(
        (srgb.red * 255.0).round() as u8,
        (srgb.green * 255.0).round() as u8,
        (srgb.blue * 255.0).round() as u8,
    )
}
