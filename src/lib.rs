//! holoroom: the Bevy client. The room as an ECS world; everything network and media goes through `holoroom-engine`.
//!
//! Code map (follows the data path):
//! - [`room`]: the room scene and the pure seating function.
//! - [`ui`]: the egui overlay.
//!
//! Architecture Invariant: only this crate knows Bevy, and its systems never block on the network.

pub mod room;
pub mod ui;

use bevy::prelude::*;

/// The ordered stages of a frame in the room.
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RoomSystems {
    /// Build and update the static room.
    Scene,
}

/// Where and as whom this client joins.
#[derive(Resource, Debug, Clone)]
pub struct Connection {
    /// Signaling WebSocket URL of the room server.
    pub server_url: String,
    pub room: String,
    pub user: String,
    pub name: String,
    pub spectate: bool,
    /// A line for the person at the screen (for example that the server is embedded).
    pub note: Option<String>,
}

/// Everything Holoroom adds to an [`App`] that already has Bevy's plugins.
#[derive(Debug)]
pub struct HoloroomPlugin {
    pub connection: Connection,
}

impl Plugin for HoloroomPlugin {
    fn build(&self, app: &mut App) {
        app.insert_resource(self.connection.clone())
            .insert_resource(ClearColor(Color::srgb(0.08, 0.09, 0.11)))
            .configure_sets(Startup, RoomSystems::Scene)
            .add_plugins((room::plugin, ui::plugin));
    }
}
