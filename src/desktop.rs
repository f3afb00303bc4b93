//! The desktop client. Without `--server` it starts an embedded room server on loopback.
//! `holoroom bot` runs headless participants instead.

use anyhow::{Context, Result};
use bevy::prelude::*;
use bevy::winit::{UpdateMode, WinitSettings};
use clap::{Args, Parser, Subcommand};
use std::sync::Arc;

use holoroom::net::{EngineBridge, TokenSource};
use holoroom::{Connection, HoloroomPlugin};
use holoroom_engine::protocol::{RoomId, UserId, UserInfo, VideoGrant};
use holoroom_engine::{Engine, EngineConfig};
use holoroom_server::{BackgroundServer, ServerConfig, SigningKey, TokenKeys};

#[derive(Parser, Debug)]
#[command(name = "holoroom", version, about = "Holoroom: an immersive 3D video room")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    app: AppArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Join a room with headless participants that publish the test pattern and a tone (or
    /// only watch) and log what they receive.
    Bot(BotArgs),
}

#[derive(Args, Debug)]
struct BotArgs {
    /// Room server signaling URL, e.g. ws://127.0.0.1:7880/v1/ws.
    #[arg(long, env = "HOLOROOM_SERVER")]
    server: String,
    #[arg(long, env = "HOLOROOM_ROOM", default_value = "lobby")]
    room: String,
    /// How many bots.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// What they publish: `pattern`, or a .y4m file.
    #[arg(long, default_value = "pattern")]
    source: String,
    /// Frame size of the pattern.
    #[arg(long, default_value = "640x360", value_parser = parse_size)]
    size: (u32, u32),
    #[arg(long, default_value_t = 30.0)]
    fps: f32,
    /// Only watch, hidden, publishing nothing.
    #[arg(long)]
    spectate: bool,
    /// The server's signing secret, to mint the bots' tokens here; without it the bots ask the server for guest tokens (dev mode).
    #[arg(long, env = "HOLOROOM_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Key ID of the secret.
    #[arg(long, env = "HOLOROOM_KEY_ID", default_value = "k1")]
    key_id: String,
    /// User IDs are this prefix and a number.
    #[arg(long, default_value = "bot")]
    prefix: String,
}

#[derive(Args, Debug)]
struct AppArgs {
    /// Room server signaling URL (ws://host:port/v1/ws). Without it, an embedded server runs on loopback.
    #[arg(long, env = "HOLOROOM_SERVER")]
    server: Option<String>,
    /// Room to join (the last one, or lobby).
    #[arg(long, env = "HOLOROOM_ROOM")]
    room: Option<String>,
    /// Your user ID (unique in the server).
    #[arg(long, env = "HOLOROOM_USER")]
    user: Option<String>,
    /// Your display name (the last one, or Guest).
    #[arg(long, env = "HOLOROOM_NAME")]
    name: Option<String>,
    /// Join as a hidden spectator with a free camera.
    #[arg(long, env = "HOLOROOM_SPECTATE")]
    spectate: bool,
    /// An access token for the room (from `holoroom-server token`).
    #[arg(long, env = "HOLOROOM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The server's signing secret, to mint your own token.
    #[arg(long, env = "HOLOROOM_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Key ID of the secret.
    #[arg(long, env = "HOLOROOM_KEY_ID", default_value = "k1")]
    key_id: String,
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

/// Starts a dev-mode room server on 127.0.0.1 (it stops when dropped).
fn start_embedded_server() -> Result<BackgroundServer> {
    let mut config = ServerConfig::new(TokenKeys::new(SigningKey::generate("embedded")));
    config.dev_tokens = true;
    BackgroundServer::start("127.0.0.1:0", config).context("can't start the embedded room server")
}

fn run_bots(args: BotArgs) -> Result<()> {
    use holoroom_engine::bot::{Bot, BotConfig};
    use holoroom_engine::{StreamConfig, VideoSource};

    tracing_subscriber_init();
    let room = RoomId::new(args.room.clone()).context("bad --room")?;
    let keys = args
        .secret
        .as_ref()
        .map(|secret| TokenKeys::new(SigningKey::new(args.key_id.clone(), secret.as_bytes().to_vec())));
    let publish = if args.spectate {
        None
    } else {
        let mut config = StreamConfig::test_pattern(args.size.0, args.size.1, args.fps);
        if args.source != "pattern" {
            config.video = VideoSource::File(args.source.clone().into());
        }
        Some(config)
    };
    let mut bots = Vec::new();
    for n in 1..=args.count {
        let user_id = UserId::new(format!("{}-{n}", args.prefix)).context("bad --prefix")?;
        let user = UserInfo {
            user_name: format!("Bot {n}"),
            user_id,
        };
        let token = match &keys {
            Some(keys) => {
                let grant = if args.spectate {
                    VideoGrant::spectator(room.as_str())
                } else {
                    VideoGrant::participant(room.as_str())
                };
                keys.mint(grant, &user.user_id, Some(user.user_name.clone()), 24 * 3600)
                    .into()
            }
            None => holoroom_engine::TokenSource::Guest {
                server_url: args.server.clone(),
                spectator: args.spectate,
            },
        };
        let bot = Bot::start(BotConfig {
            server_url: args.server.clone(),
            room_id: room.clone(),
            user,
            token,
            publish: publish.clone(),
            plays: true,
        })
        .context("can't start a bot")?;
        bots.push(bot);
    }
    println!(
        "{} bot(s) in room {} on {}; Ctrl-C to stop.",
        bots.len(),
        room,
        args.server
    );
    let stop = holoroom_engine::bot::interrupted().context("can't watch for Ctrl-C")?;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_secs(2));
        for (n, bot) in bots.iter().enumerate() {
            let status = bot.status();
            let received: Vec<String> = status
                .received
                .iter()
                .map(|(stream, r)| {
                    let code = r.last_frame_number.map_or("-".into(), |c| c.to_string());
                    format!("{stream}: {} frames {}x{} code {code}", r.frames, r.size.0, r.size.1)
                })
                .collect();
            println!(
                "bot {}: {:?}, sees {} user(s); {}",
                n + 1,
                status.state,
                status.users.len(),
                if received.is_empty() {
                    "no streams".into()
                } else {
                    received.join("; ")
                }
            );
            if let Some(error) = status.error {
                println!("bot {}: {error}", n + 1);
            }
        }
    }
    Ok(())
}

/// Logging for the headless commands (the app uses Bevy's log plugin instead).
fn tracing_subscriber_init() {
    use tracing_subscriber::EnvFilter;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Bot(args)) = cli.command {
        return run_bots(args);
    }
    let cli = cli.app;
    // Lives until the app has closed (and logged out of it).
    let mut embedded_server = None;
    let (server_url, keys, embedded) = match cli.server {
        Some(url) => {
            let keys = cli
                .secret
                .as_ref()
                .map(|secret| TokenKeys::new(SigningKey::new(cli.key_id.clone(), secret.as_bytes().to_vec())));
            (url, keys, false)
        }
        None => {
            let server = start_embedded_server()?;
            let (url, keys) = (server.ws_url().to_owned(), server.keys().clone());
            embedded_server = Some(server);
            (url, Some(keys), true)
        }
    };
    let note = embedded.then(|| "Embedded room server on loopback. Join, then add demo participants.".to_owned());
    let tokens = match (cli.token, keys) {
        (Some(token), _) => TokenSource::Fixed(token),
        (None, Some(keys)) => {
            TokenSource::Mint(Arc::new(move |room: &str, user: &str, name: &str, spectator: bool| {
                let room = RoomId::new(room).ok()?;
                let user = UserId::new(user).ok()?;
                let grant = if spectator {
                    VideoGrant::spectator(room.as_str())
                } else {
                    VideoGrant::participant(room.as_str())
                };
                Some(keys.mint(grant, &user, Some(name.to_owned()), 12 * 3600))
            }))
        }
        // A dev server hands out guest tokens over HTTP; the engine asks it.
        (None, None) => TokenSource::Guest(server_url.clone()),
    };
    let engine = Engine::new(EngineConfig::new(server_url.clone())).context("can't start the engine")?;
    // What the command line does not say, the login card takes from last time.
    let remembered = cli.room.is_none() && cli.user.is_none() && cli.name.is_none();
    let user = cli
        .user
        .unwrap_or_else(|| format!("guest-{:04x}", std::process::id() & 0xffff));
    let connection = Connection {
        server_url,
        room: cli.room.unwrap_or_else(|| "lobby".into()),
        user,
        name: cli.name.unwrap_or_else(|| "Guest".into()),
        remembered,
        remember: true,
        spectate: cli.spectate,
        embedded,
        note,
    };

    // Ctrl-C ends the app, also when it was started with SIGINT ignored (a script's background
    // job): Bevy's own handler stands aside then.
    let interrupted = Interrupted(holoroom_engine::bot::interrupted().context("can't watch for Ctrl-C")?);
    App::new()
        .add_plugins(holoroom::window_plugins(Window {
            title: "Holoroom".into(),
            resolution: (cli.window.0, cli.window.1).into(),
            ..default()
        }))
        // Keep rendering when unfocused: remote video moves whether or not the window has focus.
        .insert_resource(WinitSettings {
            focused_mode: UpdateMode::Continuous,
            unfocused_mode: UpdateMode::Continuous,
        })
        .insert_resource(EngineBridge {
            engine: Arc::new(engine),
            tokens,
        })
        .add_plugins(HoloroomPlugin { connection })
        .insert_resource(interrupted)
        .add_systems(Update, exit_when_interrupted)
        .run();
    // The app and its engine are gone: the room server can stop.
    drop(embedded_server);
    Ok(())
}

/// Turns true when the process is interrupted (Ctrl-C).
#[derive(Resource)]
struct Interrupted(Arc<std::sync::atomic::AtomicBool>);

/// Ends the app once interrupted.
fn exit_when_interrupted(interrupted: Res<Interrupted>, mut exit: MessageWriter<AppExit>) {
    if interrupted.0.load(std::sync::atomic::Ordering::Relaxed) {
        tracing::info!("interrupted: closing");
        exit.write(AppExit::Success);
    }
}
