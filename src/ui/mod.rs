//! The egui overlay: where this client connects and as whom.

use bevy::prelude::*;
use bevy_egui::{EguiContexts, EguiPlugin, EguiPrimaryContextPass, egui};

use crate::Connection;

pub fn plugin(app: &mut App) {
    app.add_plugins(EguiPlugin::default())
        .add_systems(EguiPrimaryContextPass, connection_panel);
}

fn connection_panel(mut contexts: EguiContexts, connection: Res<Connection>) -> Result {
    egui::Window::new("Holoroom")
        .anchor(egui::Align2::LEFT_TOP, [12.0, 12.0])
        .resizable(false)
        .show(contexts.ctx_mut()?, |ui| {
            egui::Grid::new("connection").num_columns(2).show(ui, |ui| {
                ui.label("Room server");
                ui.monospace(&connection.server_url);
                ui.end_row();
                ui.label("Room");
                ui.monospace(&connection.room);
                ui.end_row();
                ui.label("You");
                ui.label(format!("{} ({})", connection.name, connection.user));
                ui.end_row();
                ui.label("Role");
                ui.label(if connection.spectate {
                    "spectator"
                } else {
                    "participant"
                });
                ui.end_row();
            });
            if let Some(note) = &connection.note {
                ui.separator();
                ui.label(note);
            }
        });
    Ok(())
}
