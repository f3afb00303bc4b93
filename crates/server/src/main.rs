//! `holoroom-server`: run a room server (`serve`) or mint an access token (`token`).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use holoroom_protocol::{RoomId, UserId, VideoGrant};
use holoroom_server::auth::parse_key;
use holoroom_server::{AddressLimits, Limits, Server, ServerConfig, SigningKey, TokenKeys};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "holoroom-server",
    version,
    about = "Holoroom's room server: rooms, users, tokens, signaling"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the room server.
    Serve(ServeArgs),
    /// Print an access token for one user in one room.
    Token(TokenArgs),
}

#[derive(Args)]
struct KeyArgs {
    /// Secret that signs and verifies tokens (at least 16 bytes).
    #[arg(long, env = "HOLOROOM_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// ID of the signing key, written into each token's `kid`.
    #[arg(long, env = "HOLOROOM_KEY_ID", default_value = "k1")]
    key_id: String,
    /// Issuer written into and required of tokens.
    #[arg(long, env = "HOLOROOM_ISSUER", default_value = TokenKeys::DEFAULT_ISSUER)]
    issuer: String,
}

impl KeyArgs {
    fn keys(&self) -> Result<Option<TokenKeys>> {
        let Some(secret) = &self.secret else {
            return Ok(None);
        };
        if secret.len() < 16 {
            bail!("the secret is {} bytes long; use at least 16", secret.len());
        }
        Ok(Some(
            TokenKeys::new(SigningKey::new(self.key_id.clone(), secret.as_bytes().to_vec())).with_issuer(&self.issuer),
        ))
    }
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on for HTTP and WebSocket.
    #[arg(long, env = "HOLOROOM_LISTEN", default_value = "127.0.0.1:7880")]
    listen: String,
    /// UDP address of the media relay (one socket for every media connection).
    #[arg(long, env = "HOLOROOM_MEDIA_LISTEN", default_value = "127.0.0.1:7882")]
    media_listen: std::net::SocketAddr,
    /// The IP clients send media to, when it is not the one bound (needed with 0.0.0.0 or behind NAT).
    #[arg(long, env = "HOLOROOM_PUBLIC_IP")]
    public_ip: Option<std::net::IpAddr>,
    #[command(flatten)]
    key: KeyArgs,
    /// Older keys still accepted, as KID=SECRET (repeat, or comma-separate in the variable).
    #[arg(long = "previous-key", env = "HOLOROOM_PREVIOUS_KEYS", value_delimiter = ',', value_parser = parse_key)]
    previous_keys: Vec<SigningKey>,
    /// Dev mode: without a secret, generate one; mint guest tokens at /v1/dev/token.
    #[arg(long, env = "HOLOROOM_DEV")]
    dev: bool,
    /// Serve the browser app (the directory `make web` fills) at `/`.
    #[arg(long, env = "HOLOROOM_WEB_ROOT")]
    web_root: Option<std::path::PathBuf>,
    /// Clock skew allowed on token times, in seconds (at most 60).
    #[arg(long, env = "HOLOROOM_TOKEN_LEEWAY", default_value_t = 30)]
    token_leeway: u64,
    /// How long a dropped member stays listed before it is removed (e.g. 10s, 1m).
    #[arg(long, env = "HOLOROOM_RECONNECT_GRACE", default_value = "10s", value_parser = parse_duration)]
    reconnect_grace: Duration,
    /// Close connections that do not log in within this time.
    #[arg(long, env = "HOLOROOM_LOGIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    login_timeout: Duration,
    /// Browser origins allowed to connect (repeat); none allows any.
    #[arg(long = "allow-origin", env = "HOLOROOM_ALLOWED_ORIGINS", value_delimiter = ',')]
    allowed_origins: Vec<String>,
    /// Close HTTP connections whose request headers have not all arrived in this time.
    #[arg(long, env = "HOLOROOM_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    header_timeout: Duration,
    /// Connections one address may have open at once; more are refused with a reason.
    #[arg(long, env = "HOLOROOM_MAX_CONNECTIONS_PER_IP", default_value_t = AddressLimits::default().connections)]
    max_connections_per_ip: usize,
    /// Failed logins one address may make per minute before its logins are refused for a while.
    #[arg(long, env = "HOLOROOM_MAX_LOGIN_FAILURES_PER_IP", default_value_t = AddressLimits::default().login_failures_per_minute)]
    max_login_failures_per_ip: u32,
    #[arg(long, env = "HOLOROOM_MAX_ROOMS", default_value_t = Limits::default().max_rooms)]
    max_rooms: usize,
    #[arg(long, env = "HOLOROOM_MAX_USERS_PER_ROOM", default_value_t = Limits::default().max_users_per_room)]
    max_users_per_room: usize,
    #[arg(long, env = "HOLOROOM_MAX_STREAMS_PER_ROOM", default_value_t = Limits::default().max_streams_per_room)]
    max_streams_per_room: usize,
}

#[derive(Args)]
struct TokenArgs {
    #[arg(long)]
    room: String,
    #[arg(long)]
    user: String,
    /// Display name shown to the room.
    #[arg(long)]
    name: Option<String>,
    /// A hidden spectator: may watch, is never listed, may not publish.
    #[arg(long)]
    spectator: bool,
    /// May administer the room.
    #[arg(long)]
    admin: bool,
    /// How long the token is valid (e.g. 30m, 1h, 7d).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    ttl: Duration,
    #[command(flatten)]
    key: KeyArgs,
}

/// Parses `90`, `90s`, `15m`, `2h` or `7d`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, ""), |at| text.split_at(at));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s, 15m, 1h"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("unknown unit {unit:?} in {text:?}; use s, m, h or d")),
    };
    Ok(Duration::from_secs(secs))
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve(args) => serve(args),
        Command::Token(args) => token(args),
    }
}

fn token(args: TokenArgs) -> Result<()> {
    let keys = args
        .key
        .keys()?
        .context("no signing secret: pass --secret or set HOLOROOM_SECRET")?;
    let room = RoomId::new(args.room).context("bad --room")?;
    let user = UserId::new(args.user).context("bad --user")?;
    if let Some(name) = &args.name {
        holoroom_protocol::validate_user_name(name)
            .map_err(anyhow::Error::msg)
            .context("bad --name")?;
    }
    let mut grant = if args.spectator {
        VideoGrant::spectator(room.as_str())
    } else {
        VideoGrant::participant(room.as_str())
    };
    grant.room_admin = args.admin;
    println!("{}", keys.mint(grant, &user, args.name, args.ttl.as_secs()));
    Ok(())
}

fn serve(args: ServeArgs) -> Result<()> {
    let keys = match (args.key.keys()?, args.dev) {
        (Some(keys), _) => keys,
        (None, true) => {
            tracing::warn!("dev mode: signing with a generated secret; tokens from other servers will not work");
            TokenKeys::new(SigningKey::generate(args.key.key_id.clone())).with_issuer(&args.key.issuer)
        }
        (None, false) => bail!("no signing secret: pass --secret or set HOLOROOM_SECRET (or use --dev to try it out)"),
    };
    let mut config = ServerConfig::new(keys.with_previous(args.previous_keys).with_leeway(args.token_leeway));
    config.dev_tokens = args.dev;
    config.web_root = args.web_root;
    config.reconnect_grace = args.reconnect_grace;
    config.login_timeout = args.login_timeout;
    config.header_timeout = args.header_timeout;
    config.per_address = AddressLimits {
        connections: args.max_connections_per_ip,
        login_failures_per_minute: args.max_login_failures_per_ip,
    };
    config.allowed_origins = args.allowed_origins;
    if args.media_listen.ip().is_unspecified() && args.public_ip.is_none() {
        bail!(
            "--media-listen {} needs --public-ip: clients must be told a concrete address",
            args.media_listen
        );
    }
    config.media = holoroom_server::config::MediaConfig {
        bind: args.media_listen,
        public_ip: args.public_ip,
        ..Default::default()
    };
    config.limits = Limits {
        max_rooms: args.max_rooms,
        max_users_per_room: args.max_users_per_room,
        max_streams_per_room: args.max_streams_per_room,
        ..Limits::default()
    };

    let runtime = tokio::runtime::Runtime::new().context("can't start the async runtime")?;
    runtime.block_on(async {
        let server = Server::bind(&args.listen, config).await?;
        println!(
            "Holoroom server on {} (signaling at {}, media at udp {})",
            server.http_url(),
            server.ws_url(),
            server.media_addr()
        );
        shutdown_signal().await;
        tracing::info!("shutting down: closing sessions");
        server.shutdown().await?;
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "can't listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "can't listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
