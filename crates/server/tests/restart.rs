//! The room survives its server: three bots publish and play through a real
//! `holoroom-server` process, which is killed (SIGKILL) and started again on the same address,
//! then stopped gracefully (SIGTERM) and started again. Each time every bot shows Reconnecting
//! at once, logs in again by itself, republishes under the same stream ID and sees the other
//! two's live frames again, and no observer ever lists a user twice.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use holoroom_engine::bot::{Bot, BotStatus};
use holoroom_engine::protocol::{RoomStateReason, StreamId};

#[path = "common/process.rs"]
mod process;

const SECRET: &str = "restart-test-secret-0123456789";
const BOTS: [&str; 3] = ["ann", "ben", "cat"];

fn start_server(listen: &str) -> Child {
    process::start_server(
        listen,
        SECRET,
        &["--media-listen", "127.0.0.1:0"],
        &[("RUST_LOG", "warn")],
    )
}

fn bot(url: &str, name: &str) -> Bot {
    process::bot(url, SECRET, "r", name, 15.0)
}

fn cam(name: &str) -> StreamId {
    StreamId::new(format!("{name}-cam")).expect("valid")
}

/// The newest frame number each bot has from each other bot's camera (None: none yet).
fn newest(bots: &[Bot]) -> Vec<Vec<Option<u32>>> {
    bots.iter()
        .zip(BOTS)
        .map(|(bot, me)| {
            let status = bot.status();
            BOTS.iter()
                .filter(|other| **other != me)
                .map(|other| status.received.get(&cam(other)).and_then(|r| r.last_frame_number))
                .collect()
        })
        .collect()
}

/// Fails the test if any bot lists a user twice or has left the room.
fn check_listing(status: &BotStatus, me: &str) {
    let mut users = status.users.clone();
    users.sort();
    let listed = users.len();
    users.dedup();
    assert_eq!(users.len(), listed, "{me} lists a user twice: {:?}", status.users);
    assert!(
        !matches!(
            status.state,
            RoomStateReason::Kickout | RoomStateReason::ReconnectFailed | RoomStateReason::Logout
        ),
        "{me} left the room: {status:?}"
    );
}

/// Waits until every bot has frames newer than `since` from both others, checking the
/// listings all along; returns how long that took.
fn wait_for_live_frames(bots: &[Bot], since: &[Vec<Option<u32>>], limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        for (bot, me) in bots.iter().zip(BOTS) {
            check_listing(&bot.status(), me);
        }
        let now = newest(bots);
        let live = now.iter().zip(since).all(|(mine, before)| {
            mine.iter()
                .zip(before)
                .all(|(n, b)| matches!((n, b), (Some(n), Some(b)) if n > b) || (b.is_none() && n.is_some()))
        });
        if live {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "no live frames everywhere within {limit:?}: {now:?} (before {since:?}); {:?}",
            bots.iter().map(Bot::status).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until every bot shows Reconnecting; returns how long that took.
fn wait_for_reconnecting(bots: &[Bot], limit: Duration) -> Duration {
    let start = Instant::now();
    let mut seen = [false; BOTS.len()];
    while !seen.iter().all(|s| *s) {
        for (i, bot) in bots.iter().enumerate() {
            seen[i] |= bot.status().state == RoomStateReason::Reconnecting;
        }
        assert!(start.elapsed() < limit, "not every bot shows Reconnecting: {seen:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

#[test]
fn the_room_comes_back_after_its_server_is_killed_or_restarted() {
    let listen = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        probe.local_addr().expect("address").to_string()
    };
    let url = format!("ws://{listen}/v1/ws");
    let mut server = start_server(&listen);
    let bots: Vec<Bot> = BOTS.iter().map(|name| bot(&url, name)).collect();
    let none = vec![vec![None; BOTS.len() - 1]; BOTS.len()];
    wait_for_live_frames(&bots, &none, Duration::from_secs(30));

    // SIGKILL: no goodbye at all; the same address again a second later. Frames count as live
    // only when newer than any decoded before the restart.
    server.kill().expect("SIGKILL");
    let _ = server.wait();
    let noticed = wait_for_reconnecting(&bots, Duration::from_secs(1));
    std::thread::sleep(Duration::from_secs(1));
    let before = newest(&bots);
    let mut server = start_server(&listen);
    let back = wait_for_live_frames(&bots, &before, Duration::from_secs(8));
    eprintln!("killed: Reconnecting after {noticed:?}, live frames everywhere {back:?} after the restart");

    // SIGTERM: the server tells everyone to come back rather than ending their calls.
    let stopped = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(stopped.success());
    let exit = server.wait().expect("the server exits");
    assert!(exit.success(), "a graceful stop exits cleanly: {exit:?}");
    let noticed = wait_for_reconnecting(&bots, Duration::from_secs(1));
    std::thread::sleep(Duration::from_millis(200));
    let before = newest(&bots);
    let mut server = start_server(&listen);
    let back = wait_for_live_frames(&bots, &before, Duration::from_secs(8));
    eprintln!("restarted: Reconnecting after {noticed:?}, live frames everywhere {back:?} after the restart");

    drop(bots);
    let _ = server.kill();
    let _ = server.wait();
}
