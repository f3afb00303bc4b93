//! holoroom: the Bevy client. The room as an ECS world; everything network and media goes
//! through `holoroom-engine`.
//!
//! Code map (follows the data path):
//! - [`net`]: the engine bridge: engine events in as Messages, intents out.
//! - [`room`]: the scene, the pure seating function, participants as entities and their feeds.
//! - [`audio`]: spatial audio: each voice placed by its entity relative to the listener.
//! - [`video`]: YUV materials: a feed's newest frame into three R8 plane images.
//! - [`ui`]: the egui overlay: the login card, the call bar and its drawers, name plates.
//! - [`settings`]: what is remembered between runs (file or local storage).
//!
//! Architecture Invariant: only this crate knows Bevy, and its systems never block on the
//! network: they read channels and latest-frame slots.

// Bevy systems take what they use as parameters, and queries spell out their data: long
// parameter lists and query types are the idiom, not a smell.
#![allow(clippy::type_complexity, clippy::too_many_arguments)]

pub mod audio;
pub mod net;
pub mod quality;
pub mod room;
pub mod settings;
pub mod ui;
pub mod video;

use bevy::prelude::*;

/// What the app logs unless `RUST_LOG` says otherwise: its own news, everyone's warnings,
/// not the dependencies' chatter (WebRTC's state changes, a DTLS warning per connection, the
/// renderer's INFO lines, each bot's receiving report).
pub const LOG_FILTER: &str = "warn,holoroom=info,holoroom_engine=info,holoroom_engine::bot=warn,\
                              holoroom_server=info,rtc_dtls=error,wgpu=error,naga=warn";

/// Bevy's default plugins for the app's window: the log filter above, and assets taken as
/// they are (no `.meta` files beside them to ask for, from disk or from the server).
pub fn window_plugins(window: Window) -> bevy::app::PluginGroupBuilder {
    DefaultPlugins
        .set(WindowPlugin {
            primary_window: Some(window),
            ..default()
        })
        .set(bevy::log::LogPlugin {
            filter: LOG_FILTER.into(),
            ..default()
        })
        .set(AssetPlugin {
            meta_check: bevy::asset::AssetMetaCheck::Never,
            ..default()
        })
}

/// Puts a shader compiled into the binary under its fixed handle, so native and web builds use
/// the same source.
pub(crate) fn embed_shader(app: &mut App, handle: &Handle<Shader>, source: &'static str, path: &'static str) {
    app.world_mut()
        .resource_mut::<Assets<Shader>>()
        .insert(handle.id(), Shader::from_wgsl(source, path))
        .expect("a UUID handle always inserts");
}

/// The ordered stages of a frame in the room.
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RoomSystems {
    /// Build the static room.
    Scene,
    /// Engine events in, intents out.
    Network,
    /// Participants spawn, move, leave; feeds attach and detach.
    Participants,
    /// Feeds take their newest frames.
    Feeds,
    /// Fresh frames go into textures.
    Video,
}

/// Where and as whom this client joins by default.
#[derive(Resource, Debug, Clone)]
pub struct Connection {
    /// Signaling WebSocket URL of the room server.
    pub server_url: String,
    pub room: String,
    pub user: String,
    pub name: String,
    pub spectate: bool,
    /// The server runs inside this process (demo participants can be added).
    pub embedded: bool,
    /// A line for the person at the screen.
    pub note: Option<String>,
    /// The login card may start from what was used last time ([`settings`]): the app was
    /// started without a room, user or name of its own.
    pub remembered: bool,
    /// A successful join is remembered for next time (off in tests, which must not touch the
    /// person's settings).
    pub remember: bool,
}

/// The room without rendering: engine bridge, participants, their feeds and voices. Runs
/// under `MinimalPlugins`.
#[derive(Debug, Default)]
pub struct HoloroomCorePlugin;

impl Plugin for HoloroomCorePlugin {
    fn build(&self, app: &mut App) {
        app.configure_sets(
            Update,
            (
                RoomSystems::Network,
                RoomSystems::Participants,
                RoomSystems::Feeds,
                RoomSystems::Video,
            )
                .chain(),
        )
        .add_plugins((net::plugin, room::participants::plugin, audio::plugin));
    }
}

/// Everything Holoroom adds to an [`App`] that already has Bevy's default plugins.
#[derive(Debug)]
pub struct HoloroomPlugin {
    pub connection: Connection,
}

impl Plugin for HoloroomPlugin {
    fn build(&self, app: &mut App) {
        app.insert_resource(self.connection.clone())
            .insert_resource(ClearColor(Color::srgb(0.08, 0.09, 0.11)))
            .configure_sets(Startup, RoomSystems::Scene)
            .add_plugins((
                HoloroomCorePlugin,
                room::plugin,
                video::plugin,
                quality::plugin,
                ui::plugin,
            ));
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tracing_subscriber::layer::SubscriberExt;

    /// Counts the events that get through.
    struct Count(Arc<AtomicUsize>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Count {
        fn on_event(&self, _: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn logged(emit: impl FnOnce()) -> usize {
        let count = Arc::new(AtomicUsize::new(0));
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::EnvFilter::new(super::LOG_FILTER))
            .with(Count(count.clone()));
        tracing::subscriber::with_default(subscriber, emit);
        count.load(Ordering::Relaxed)
    }

    #[test]
    fn the_log_keeps_our_news_and_drops_the_dependencies_chatter() {
        assert_eq!(logged(|| tracing::info!(target: "holoroom::net", "joined")), 1);
        assert_eq!(
            logged(|| tracing::info!(target: "holoroom_engine::machine", "published")),
            1
        );
        assert_eq!(logged(|| tracing::warn!(target: "cpal", "no sound card")), 1);
        for chatter in [
            || tracing::info!(target: "rtc::peer_connection::internal", "state changed"),
            || tracing::info!(target: "rtc_ice::agent", "checking"),
            || tracing::warn!(target: "rtc_dtls::config", "conn.remote_addr is empty"),
            || tracing::info!(target: "holoroom_engine::bot", "receiving"),
            || tracing::info!(target: "bevy_render::renderer", "adapter"),
        ] {
            assert_eq!(logged(chatter), 0);
        }
    }
}
