//! `holoroom`: the desktop client. Without `--server` it starts an embedded room server on loopback.

use std::sync::mpsc;

use anyhow::{Context, Result};
use bevy::prelude::*;
use bevy::winit::{UpdateMode, WinitSettings};
use clap::Parser;
use holoroom::{Connection, HoloroomPlugin};
use holoroom_server::{Server, ServerConfig, SigningKey, TokenKeys};

#[derive(Parser, Debug)]
#[command(name = "holoroom", version, about = "Holoroom: an immersive 3D video room")]
struct Cli {
    /// Room server signaling URL (ws://host:port/v1/ws). Without it, an embedded server runs on loopback.
    #[arg(long, env = "HOLOROOM_SERVER")]
    server: Option<String>,
    /// Room to join.
    #[arg(long, env = "HOLOROOM_ROOM", default_value = "lobby")]
    room: String,
    /// Your user ID (unique in the server).
    #[arg(long, env = "HOLOROOM_USER")]
    user: Option<String>,
    /// Your display name.
    #[arg(long, env = "HOLOROOM_NAME", default_value = "Guest")]
    name: String,
    /// Join as a hidden spectator with a free camera.
    #[arg(long, env = "HOLOROOM_SPECTATE")]
    spectate: bool,
    /// Window size as WIDTHxHEIGHT.
    #[arg(long, env = "HOLOROOM_WINDOW", default_value = "1280x720", value_parser = parse_size)]
    window: (u32, u32),
}

fn parse_size(text: &str) -> Result<(u32, u32), String> {
    let (w, h) = text.split_once('x').ok_or("use WIDTHxHEIGHT, e.g. 1280x720")?;
    let w = w.parse().map_err(|_| format!("bad width in {text:?}"))?;
    let h = h.parse().map_err(|_| format!("bad height in {text:?}"))?;
    Ok((w, h))
}

/// Starts a dev-mode room server on 127.0.0.1 on its own thread and returns its signaling URL.
fn start_embedded_server() -> Result<String> {
    let (url_tx, url_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("embedded-room-server".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => {
                    let _ = url_tx.send(Err(anyhow::Error::new(err).context("can't start the server runtime")));
                    return;
                }
            };
            runtime.block_on(async move {
                let mut config = ServerConfig::new(TokenKeys::new(SigningKey::generate("embedded")));
                config.dev_tokens = true;
                match Server::bind("127.0.0.1:0", config).await {
                    Ok(server) => {
                        let _ = url_tx.send(Ok(server.ws_url()));
                        std::future::pending::<()>().await;
                    }
                    Err(err) => {
                        let _ = url_tx.send(Err(anyhow::Error::new(err)));
                    }
                }
            });
        })
        .context("can't start the embedded server thread")?;
    url_rx.recv().context("the embedded server thread ended early")?
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let (server_url, note) = match cli.server {
        Some(url) => (url, None),
        None => {
            let url = start_embedded_server()?;
            (url, Some("Embedded room server on loopback (dev tokens).".to_owned()))
        }
    };
    let user = cli
        .user
        .unwrap_or_else(|| format!("guest-{:04x}", std::process::id() & 0xffff));
    let connection = Connection {
        server_url,
        room: cli.room,
        user,
        name: cli.name,
        spectate: cli.spectate,
        note,
    };

    App::new()
        .add_plugins(DefaultPlugins.set(WindowPlugin {
            primary_window: Some(Window {
                title: "Holoroom".into(),
                resolution: (cli.window.0, cli.window.1).into(),
                ..default()
            }),
            ..default()
        }))
        // Keep rendering when unfocused: remote video moves whether or not the window has focus.
        .insert_resource(WinitSettings {
            focused_mode: UpdateMode::Continuous,
            unfocused_mode: UpdateMode::Continuous,
        })
        .add_plugins(HoloroomPlugin { connection })
        .run();
    Ok(())
}
