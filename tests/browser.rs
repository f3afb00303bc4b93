//! The browser build end to end: the room server serves the web app (built by `make web`),
//! headless Chromium (with a fake camera) opens it and joins a room with a native bot.
//! The bot receives the browser's camera, decoded, at its size and changing; the page shows
//! the bot's video (its frame codes read back from the pictures the browser decoded and from
//! the page's own pixels) and hears the bot's tone through its mixer. A spectator tab sees
//! the bot and is not listed to it. The page's connections go through a relay that the test
//! cuts: the page comes back (Reconnected) and goes on publishing and playing. Then the media
//! path (an impairment relay) goes dark for 12 s with signaling up: the page and the bot set
//! their media up again by themselves and the pictures are back within 3 s of its return.
//! Then the server restarts on the same addresses: the page and the bot come back by
//! themselves, publishing and playing.
//! A tab that sends the test pattern and a tone instead of a camera is decoded by the bot
//! with its frame codes increasing.
//!
//! `make test` builds the web app and runs this with HOLOROOM_WEB_DIR set; plain `cargo test`
//! without it says so and skips.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use holoroom_engine::StreamConfig;
use holoroom_engine::bot::{Bot, BotConfig};
use holoroom_engine::media::{CodeLayout, FrameCode, read_code_with};
use holoroom_engine::protocol::{RoomId, StreamId, UserId, UserInfo, VideoGrant, VideoLayer};
use holoroom_server::{Server, ServerConfig, SigningKey, TokenKeys};
use holoroom_testkit::{Relay, UdpRelay};

/// The bot's picture size.
const BOT_VIDEO: (u32, u32) = (640, 360);

fn artifact(name: &str) -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("test-artifacts");
    let _ = std::fs::create_dir_all(&dir);
    dir.join(name)
}

/// Opens `url` in Chromium through `tests/web/drive.mjs`, which waits for `wait`, holds, and
/// then waits for `after` if given.
fn open_page(url: &str, screenshot: &Path, wait: &str, hold_seconds: u32, after: Option<&str>) -> Result<Child> {
    let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web/drive.mjs");
    let mut command = Command::new("node");
    command
        .arg(driver)
        .arg(url)
        .arg(screenshot)
        .arg(wait)
        .arg(hold_seconds.to_string());
    if let Some(after) = after {
        command.arg(after);
    }
    command
        .stdout(Stdio::piped())
        .spawn()
        .context("can't run node (make deps installs it)")
}

fn finish(page: Child, what: &str) -> Result<String> {
    let output = page.wait_with_output().context("the page driver")?;
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    ensure!(output.status.success(), "{what}: {text}");
    Ok(text)
}

/// A string field of the page's last state in the driver's JSON line.
fn field(result: &str, name: &str) -> String {
    let last = result.rsplit_once("\"last\":").map_or(result, |(_, last)| last);
    let key = format!("\"{name}\":\"");
    last.split_once(&key)
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(value, _)| value.to_owned())
        .unwrap_or_default()
}

/// Reads the bot's frame code off its panel in the screenshot: `panel` is `user:` and the
/// panel's corners on the page (top-left, top-right, bottom-left, bottom-right).
fn read_panel(screenshot: &Path, panel: &str) -> Result<FrameCode> {
    let corners: Vec<f32> = panel
        .split_once(':')
        .map(|(_, c)| c.split(',').filter_map(|v| v.parse().ok()).collect())
        .unwrap_or_default();
    ensure!(corners.len() == 8, "no live panel on the page: {panel:?}");
    let file = std::io::BufReader::new(std::fs::File::open(screenshot)?);
    let mut reader = png::Decoder::new(file).read_info()?;
    let mut pixels = vec![0; reader.output_buffer_size().context("PNG size")?];
    let info = reader.next_frame(&mut pixels)?;
    let channels = info.color_type.samples();
    let (width, height) = (info.width as usize, info.height as usize);
    let luma = |x: f32, y: f32| {
        let (x, y) = (
            (x.round() as usize).min(width - 1),
            (y.round() as usize).min(height - 1),
        );
        let p = &pixels[(y * width + x) * channels..];
        (0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2])) as u8
    };
    let point = |i: usize| (corners[2 * i], corners[2 * i + 1]);
    let (tl, tr, bl, br) = (point(0), point(1), point(2), point(3));
    let layout = CodeLayout::for_size(BOT_VIDEO.0, BOT_VIDEO.1).context("a code layout")?;
    read_code_with(
        |x, y| {
            // Bilinear across the panel: it faces the viewer, so this is close to the projection.
            let (u, v) = (x as f32 / BOT_VIDEO.0 as f32, y as f32 / BOT_VIDEO.1 as f32);
            let top = (tl.0 + (tr.0 - tl.0) * u, tl.1 + (tr.1 - tl.1) * u);
            let bottom = (bl.0 + (br.0 - bl.0) * u, bl.1 + (br.1 - bl.1) * u);
            luma(top.0 + (bottom.0 - top.0) * v, top.1 + (bottom.1 - top.1) * v)
        },
        layout,
    )
    .context("no frame code readable on the bot's panel in the screenshot")
}

fn run(web_dir: PathBuf) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let config = || {
        let mut config = ServerConfig::new(TokenKeys::new(SigningKey::new(
            "k1",
            b"browser-test-secret-012".to_vec(),
        )));
        config.dev_tokens = true;
        config.web_root = Some(web_dir.clone());
        // Media goes to 127.0.0.2, where an impairment relay passes it on (or not).
        config.media.public_ip = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
        config
    };
    let server = runtime.block_on(Server::bind("127.0.0.1:0", config()))?;
    let advertised = server.media_addr();
    let media = runtime.block_on(UdpRelay::start(
        advertised,
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), advertised.port()),
    ))?;
    // The page and its connections go through a relay, so the test can cut them.
    let relay = runtime.block_on(Relay::start(server.local_addr()));
    let http = format!("http://{}", relay.addr());

    let bot_user = UserInfo {
        user_id: UserId::new("bot-1")?,
        user_name: "Bot 1".into(),
    };
    let bot = Bot::start(BotConfig {
        server_url: server.ws_url(),
        room_id: RoomId::new("demo")?,
        token: server
            .keys()
            .mint(VideoGrant::participant("demo"), &bot_user.user_id, None, 3600)
            .into(),
        user: bot_user,
        publish: Some(StreamConfig::test_pattern(BOT_VIDEO.0, BOT_VIDEO.1, 15.0)),
        plays: true,
    })?;

    // A participant tab: it must show the bot's live video with the bot's frame codes (after
    // the server's restart too: the tab waits until the bot's codes are back, not only its own
    // picture).
    let shot = artifact("browser-participant.png");
    let page = open_page(
        &format!("{http}/?room=demo&user=web-1&name=Web&join=1"),
        &shot,
        r#"{"participants":2,"liveFeeds":1,"code":true,"speaking":1,"quality":"1/1"}"#,
        12,
        Some(r#"{"participants":2,"liveFeeds":1,"code":true,"reconnects":2}"#),
    )?;
    // Meanwhile the bot must receive the browser's camera.
    let browser_stream = StreamId::new("web-1-cam")?;
    let deadline = Instant::now() + Duration::from_secs(150);
    let first = loop {
        if let Some(frame) = bot.remote(&browser_stream).and_then(|r| r.video.latest()) {
            break frame;
        }
        if Instant::now() > deadline {
            bail!("the bot never received the browser's camera; bot: {:?}", bot.status());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // Chromium starts its simulcast with the lower layer while its send bandwidth estimate
    // grows: the full picture follows within seconds.
    let full = Instant::now();
    let size = loop {
        let latest = bot.remote(&browser_stream).and_then(|r| r.video.latest());
        let size = latest.map_or((0, 0), |f| (f.frame.width, f.frame.height));
        if size.0 >= 640 || full.elapsed() > Duration::from_secs(20) {
            break size;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    println!(
        "browser: the bot sees the camera at {size:?} {:?} after its first frame",
        full.elapsed()
    );
    // The bot watches the full picture only: the page stops sending the half-size encoding
    // once the server says nobody receives it (dynacast).
    let asked = Instant::now();
    loop {
        let layers = runtime.block_on(server.layers_sent(&RoomId::new("demo")?, &browser_stream))?;
        if layers == [VideoLayer::High] {
            println!("browser: only the full layer is sent {:?} later", asked.elapsed());
            break;
        }
        ensure!(
            asked.elapsed() < Duration::from_secs(10),
            "the page still sends {layers:?} while only the full layer is watched"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The network drops the page's connections: it must come back (Reconnected, video again)
    // and go on publishing.
    let at_cut = bot
        .remote(&browser_stream)
        .and_then(|r| r.video.latest())
        .map_or(0, |f| f.sequence);
    relay.cut();
    std::thread::sleep(Duration::from_secs(6));
    let later = bot
        .remote(&browser_stream)
        .and_then(|r| r.video.latest())
        .context("the browser's video stopped")?;
    ensure!(
        later.sequence > at_cut + 10,
        "the browser goes on publishing after the cut: {at_cut} -> {}",
        later.sequence
    );
    // The media path dies for longer than ICE tolerates while signaling stays up: the page
    // (publishing and playing) and the bot set their media up again by themselves once the
    // path returns. The page's driver, its hold over during the blackout, waits for frames.
    media.blackout();
    std::thread::sleep(Duration::from_secs(12));
    let at_return = bot
        .remote(&browser_stream)
        .and_then(|r| r.video.latest())
        .map_or(0, |f| f.sequence);
    media.restore();
    let back = Instant::now();
    while bot
        .remote(&browser_stream)
        .and_then(|r| r.video.latest())
        .is_none_or(|f| f.sequence <= at_return + 5)
    {
        ensure!(
            back.elapsed() < Duration::from_secs(3),
            "the browser's camera is not back at the bot 3 s after the media path returned"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "browser: camera back at the bot {:?} after a 12 s media blackout",
        back.elapsed()
    );
    // The server restarts (stopped gracefully, then started again on the same addresses): it
    // tells the page and the bot to come back, and they log in again, republish and play again
    // by themselves (the page's driver waits for its second reconnect and the bot's video).
    let addr = server.local_addr();
    let media_port = server.media_addr().port();
    runtime.block_on(server.shutdown())?;
    let server = runtime.block_on(async {
        let mut config = config();
        config.media.bind = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), media_port);
        Server::bind(&addr.to_string(), config).await
    })?;
    let restarted = Instant::now();
    // Frames decoded from now on are the new server's; the bot may play the stream afresh
    // (its count then starts again).
    let decoded = || bot.remote(&browser_stream).map_or(0, |r| r.video.count());
    let mut base = decoded();
    loop {
        let now = decoded();
        if now < base {
            base = 0;
        }
        if now >= base + 5 {
            break;
        }
        ensure!(
            restarted.elapsed() < Duration::from_secs(10),
            "the browser's camera is not back at the bot 10 s after the server restarted; bot: {:?}",
            bot.status()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "browser: camera back at the bot {:?} after the server restarted",
        restarted.elapsed()
    );
    let result = finish(page, "participant tab")?;
    println!("browser: participant tab {result}");
    ensure!(size == (640, 360) || size == (640, 480), "browser camera at {size:?}");
    ensure!(
        later.sequence > first.sequence + 10,
        "frames keep coming: {} -> {}",
        first.sequence,
        later.sequence
    );
    ensure!(later.frame.y != first.frame.y, "the picture changes");
    ensure!(
        !field(&result, "codes").is_empty(),
        "the page reports frame codes: {result}"
    );
    ensure!(
        field(&result, "rememberedRoom") == "demo",
        "the page remembers the room it joined (local storage): {result}"
    );
    let code = read_panel(&shot, &field(&result, "panel"))?;
    println!(
        "browser: read frame {} of bot-1 from the page's pixels",
        code.frame_number
    );

    // A tab that sends the test pattern (drawn into a canvas the browser captures) and a
    // tone: the bot decodes it with its frame codes, increasing. It also chats: the page finds
    // what the bot said before it came (the room's latest messages), and the bot reads what
    // is typed into the page's chat.
    bot.say("Hello, browser");
    let page = open_page(
        &format!("{http}/?room=demo&user=web-2&name=Pattern&video=pattern&join=1"),
        &artifact("browser-pattern.png"),
        r#"{"participants":1,"liveFeeds":1,"quality":"1/1","chat":1,"say":"Hello from the browser"}"#,
        6,
        None,
    )?;
    let pattern_stream = StreamId::new("web-2-cam")?;
    let deadline = Instant::now() + Duration::from_secs(90);
    // Meanwhile, every layer the SFU hears from it: Chromium publishes simulcast
    // (sendEncodings with the layers' RIDs) and at 640x360 sends two layers, half and full size
    // (the full one once its send bandwidth estimate has grown; on a loaded machine the bot's
    // downlink judgement may later cap it and dynacast turn it off, so what counts is what was
    // sent, not what is sent at the end).
    let demo = RoomId::new("demo")?;
    let mut seen_layers = std::collections::BTreeSet::new();
    let mut codes = Vec::new();
    let both = [VideoLayer::Medium, VideoLayer::High];
    while codes.len() < 5 || !both.iter().all(|l| seen_layers.contains(l)) {
        seen_layers.extend(runtime.block_on(server.layers_sent(&demo, &pattern_stream))?);
        if let Some(code) = bot
            .remote(&pattern_stream)
            .and_then(|r| r.video.latest())
            .and_then(|f| f.code)
            && codes.last() != Some(&code.frame_number)
            && codes.len() < 5
        {
            codes.push(code.frame_number);
        }
        ensure!(
            Instant::now() < deadline,
            "the bot never decoded the browser's test pattern with both layers sent (codes {codes:?}, layers {seen_layers:?}); bot: {:?}",
            bot.status()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    ensure!(
        codes.windows(2).all(|w| w[1] > w[0]),
        "the browser's pattern codes increase: {codes:?}"
    );
    println!("browser: Chromium sent the layers {seen_layers:?}");
    ensure!(
        seen_layers.iter().eq(both.iter()),
        "Chromium's simulcast layers at the SFU: {seen_layers:?}"
    );
    let heard = bot.remote(&pattern_stream).map_or(0, |r| r.audio.received());
    let result = finish(page, "pattern tab")?;
    println!(
        "browser: the bot decoded the browser's test pattern, codes {codes:?}, {heard} samples of its tone; {result}"
    );
    ensure!(heard > 0, "the bot hears the browser's tone");
    let chat = bot.status().chat;
    ensure!(
        chat.iter()
            .any(|(from, text)| from == "web-2" && text == "Hello from the browser"),
        "the bot reads what was typed into the page's chat: {chat:?}"
    );
    ensure!(
        field(&result, "chat").parse::<usize>().unwrap_or(0) >= 2,
        "the page shows the bot's message and its own: {result}"
    );

    // A spectator tab: sees the bot, is not listed to it.
    let page = open_page(
        &format!("{http}/?room=demo&user=watcher&name=Watcher&spectate=1&join=1"),
        &artifact("browser-spectator.png"),
        r#"{"participants":1,"liveFeeds":1}"#,
        2,
        None,
    )?;
    let result = finish(page, "spectator tab")?;
    println!("browser: spectator tab {result}");
    let status = bot.status();
    ensure!(
        !status.users.iter().any(|u| u == "watcher"),
        "the spectator is listed to the bot: {status:?}"
    );
    drop(bot);
    drop(runtime);
    Ok(())
}

fn main() {
    let Some(web_dir) = std::env::var_os("HOLOROOM_WEB_DIR").map(PathBuf::from) else {
        println!("browser test: skipped (HOLOROOM_WEB_DIR unset; `make test` builds the web app and sets it)");
        println!("0 passed, 0 failed");
        return;
    };
    match run(web_dir) {
        Ok(()) => println!("1 passed, 0 failed"),
        Err(err) => {
            println!("browser test failed: {err:#}");
            println!("0 passed, 1 failed");
            std::process::exit(1);
        }
    }
}
