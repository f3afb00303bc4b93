//! Chaos and soak: bots join, leave, publish and play at random through the impairment relay
//! (loss, jitter, blackouts) against a real `holoroom-server` process, which in the second part
//! is killed and started again every few seconds of the run. It reports what was injected and
//! what survived: panics, users ever listed twice or missing, streams listed without media,
//! the server's memory and descriptors at the start and end, and how long media took to
//! come back after each restart.
//!
//! `cargo bench -p holoroom-server --bench chaos -- [--seconds 120] [--bots 20] [--restart-every 30] [--loss-percent 2]`
//! (each part runs for `--seconds`; the restarts happen in the second).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use holoroom_engine::bot::Bot;
use holoroom_engine::protocol::{RoomStateReason, StreamId};
use holoroom_testkit::{Impairment, UdpRelay};

#[path = "../tests/common/process.rs"]
mod process;

const SECRET: &str = "chaos-bench-secret-0123456789";
/// The relay's address; the server tells clients to send media here.
const RELAY_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// A member is judged, and judged by others, only once it has been in the room this long, and
/// only when no blackout or restart happened for this long: until then, being incomplete is
/// normal.
const SETTLE: Duration = Duration::from_secs(8);

struct Options {
    seconds: u64,
    bots: usize,
    restart_every: u64,
    /// Random loss on each leg through the relay, in percent.
    loss_percent: u64,
}

fn options() -> Options {
    let mut options = Options {
        seconds: 120,
        bots: 20,
        restart_every: 30,
        loss_percent: 2,
    };
    let args: Vec<String> = std::env::args().collect();
    for pair in args.windows(2) {
        let value = pair[1].parse().ok();
        match (pair[0].as_str(), value) {
            ("--seconds", Some(v)) => options.seconds = v,
            ("--bots", Some(v)) => options.bots = v as usize,
            ("--restart-every", Some(v)) => options.restart_every = v,
            ("--loss-percent", Some(v)) => options.loss_percent = v,
            _ => {}
        }
    }
    options
}

/// A xorshift generator, seeded, so a run can be repeated.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

struct ServerProcess {
    child: Child,
    started: Instant,
}

fn start_server(listen: &str, media: SocketAddr) -> ServerProcess {
    let (media, relay) = (media.to_string(), RELAY_IP.to_string());
    let args = ["--media-listen", media.as_str(), "--public-ip", relay.as_str()];
    let env = [("HOLOROOM_MAX_CONNECTIONS_PER_IP", "200"), ("RUST_LOG", "error")];
    ServerProcess {
        child: process::start_server(listen, SECRET, &args, &env),
        started: Instant::now(),
    }
}

/// Resident memory (KiB) and open descriptors of a process.
fn footprint(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    (rss, fds)
}

fn bot(url: &str, name: &str) -> Bot {
    process::bot(url, SECRET, "chaos", name, 10.0)
}

/// One bot in the room and what the run has seen of it.
struct Member {
    bot: Bot,
    since: Instant,
    /// How many frames it had decoded from each stream, and when that last changed (None: not
    /// since it was first seen, or since the last server kill).
    frames: BTreeMap<StreamId, (u64, Option<Instant>)>,
}

#[derive(Default)]
struct Tally {
    joins: usize,
    leaves: usize,
    blackouts: usize,
    restarts: usize,
    /// Observations (every 250 ms, per settled member) of each failure.
    duplicated: usize,
    missing_user: usize,
    stale_stream: usize,
    left_room: usize,
    samples: usize,
    recoveries: Vec<Duration>,
    unrecovered: usize,
    /// How long the server that ran at the end had been running.
    last_start: Duration,
}

fn run(options: &Options, restarts: bool, seed: u64) -> (Tally, (u64, usize), (u64, usize)) {
    let listen = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        probe.local_addr().expect("address").to_string()
    };
    let media = {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").expect("a free port");
        probe.local_addr().expect("address")
    };
    let url = format!("ws://{listen}/v1/ws");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let relay = runtime
        .block_on(UdpRelay::start(
            SocketAddr::new(IpAddr::V4(RELAY_IP), media.port()),
            media,
        ))
        .expect("relay");
    let impaired = Impairment::delay(Duration::from_millis(20))
        .with_jitter(Duration::from_millis(10))
        .with_loss(options.loss_percent as f64 / 100.0);
    relay.set(impaired);

    let mut server = start_server(&listen, media);
    let mut dice = Dice(seed);
    let mut tally = Tally::default();
    let mut members: BTreeMap<usize, Member> = BTreeMap::new();
    for n in 0..options.bots / 2 {
        members.insert(n, member(&url, n));
        tally.joins += 1;
    }
    let mut last_disruption = Instant::now();
    let start = Instant::now();
    let end = start + Duration::from_secs(options.seconds);
    let mut first = None;
    let mut next_action = start + Duration::from_secs(2);
    let mut next_restart = start + Duration::from_secs(options.restart_every.max(1));
    let mut waiting_since: Option<Instant> = None;
    let mut blackout_until: Option<Instant> = None;
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(250));
        let now = Instant::now();
        if blackout_until.is_some_and(|t| now >= t) {
            relay.set(impaired);
            blackout_until = None;
        }
        if restarts && now >= next_restart {
            let _ = server.child.kill();
            let _ = server.child.wait();
            std::thread::sleep(Duration::from_millis(500 + dice.below(1500)));
            // Frames decoded until now (what was on its way) do not count as media being back.
            for m in members.values_mut() {
                let status = m.bot.status();
                for (stream, received) in &status.received {
                    m.frames.insert(stream.clone(), (received.frames, None));
                }
            }
            server = start_server(&listen, media);
            tally.restarts += 1;
            waiting_since = Some(server.started);
            last_disruption = Instant::now();
            next_restart = Instant::now() + Duration::from_secs(options.restart_every.max(1));
            continue;
        }
        // While media comes back after a kill, nothing else happens, so the time measured is
        // the restart's alone.
        if now >= next_action && waiting_since.is_none() {
            next_action = now + Duration::from_millis(1000 + dice.below(3000));
            match dice.below(10) {
                0..=3 if members.len() < options.bots => {
                    let free = (0..options.bots)
                        .find(|n| !members.contains_key(n))
                        .expect("a free seat");
                    members.insert(free, member(&url, free));
                    tally.joins += 1;
                }
                4..=6 if members.len() > 2 => {
                    let keys: Vec<usize> = members.keys().copied().collect();
                    let gone = keys[dice.below(keys.len() as u64) as usize];
                    if let Some(m) = members.remove(&gone) {
                        m.bot.leave();
                    }
                    tally.leaves += 1;
                }
                7 => {
                    relay.blackout_for(Duration::from_millis(500 + dice.below(2500)));
                    tally.blackouts += 1;
                    last_disruption = now;
                }
                _ => {}
            }
        }
        observe(
            &mut members,
            &mut tally,
            now,
            now.duration_since(last_disruption) >= SETTLE,
        );
        if first.is_none() && now.duration_since(start) >= SETTLE {
            first = Some(footprint(server.child.id()));
        }
        if let Some(since) = waiting_since
            && recovered(&members)
        {
            tally.recoveries.push(now.duration_since(since));
            waiting_since = None;
            last_disruption = now;
        } else if waiting_since.is_some_and(|since| now.duration_since(since) > Duration::from_secs(20)) {
            tally.unrecovered += 1;
            waiting_since = None;
            last_disruption = now;
        }
    }
    let last = footprint(server.child.id());
    tally.last_start = server.started.elapsed();
    if matches!(server.child.try_wait(), Ok(Some(_))) {
        eprintln!("the server died by itself");
    }
    for (_, m) in std::mem::take(&mut members) {
        m.bot.leave();
    }
    let _ = server.child.kill();
    let _ = server.child.wait();
    (tally, first.unwrap_or_default(), last)
}

fn member(url: &str, n: usize) -> Member {
    Member {
        bot: bot(url, &format!("bot{n:02}")),
        since: Instant::now(),
        frames: BTreeMap::new(),
    }
}

/// Every member has frames newer than at the restart from every other member's camera.
fn recovered(members: &BTreeMap<usize, Member>) -> bool {
    let cams: BTreeSet<StreamId> = members
        .keys()
        .map(|n| StreamId::new(format!("bot{n:02}-cam")).expect("valid"))
        .collect();
    members.iter().all(|(n, m)| {
        let status = m.bot.status();
        let mine = StreamId::new(format!("bot{n:02}-cam")).expect("valid");
        cams.iter().filter(|c| **c != mine).all(|cam| {
            let fresh = m
                .frames
                .get(cam)
                .and_then(|(_, at)| *at)
                .is_some_and(|at| at.elapsed() < Duration::from_millis(500));
            fresh && status.received.contains_key(cam)
        })
    })
}

fn observe(members: &mut BTreeMap<usize, Member>, tally: &mut Tally, now: Instant, quiet: bool) {
    // Those every settled member must list and see.
    let present: BTreeSet<String> = members
        .iter()
        .filter(|(_, m)| now.duration_since(m.since) >= SETTLE)
        .map(|(n, _)| format!("bot{n:02}"))
        .collect();
    for (n, m) in members.iter_mut() {
        let status = m.bot.status();
        for (stream, received) in &status.received {
            // Frames decoded so far (a stream played again counts from zero: any change is news).
            let count = received.frames;
            if count == 0 {
                continue;
            }
            let entry = m.frames.entry(stream.clone()).or_insert((count, None));
            if entry.0 != count {
                *entry = (count, Some(now));
            }
        }
        // Nobody is ever listed twice, settled or not.
        let listed: Vec<&String> = status.users.iter().collect();
        let unique: BTreeSet<&String> = listed.iter().copied().collect();
        if unique.len() != listed.len() {
            tally.duplicated += 1;
        }
        if !quiet || now.duration_since(m.since) < SETTLE {
            continue;
        }
        tally.samples += 1;
        let me = format!("bot{n:02}");
        if present.iter().any(|p| *p != me && !unique.contains(p)) {
            tally.missing_user += 1;
        }
        if matches!(
            status.state,
            RoomStateReason::Kickout | RoomStateReason::ReconnectFailed | RoomStateReason::Logout
        ) {
            tally.left_room += 1;
        }
        let stale = present.iter().filter(|p| **p != me).any(|p| {
            let cam = StreamId::new(format!("{p}-cam")).expect("valid");
            m.frames
                .get(&cam)
                .and_then(|(_, at)| *at)
                .is_none_or(|at| now.duration_since(at) > Duration::from_secs(5))
        });
        if stale {
            tally.stale_stream += 1;
        }
    }
}

fn percentile(values: &[Duration], p: f64) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted
        .get(((sorted.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or_default()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let options = options();
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let panics = Arc::new(AtomicUsize::new(0));
    let counted = panics.clone();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        counted.fetch_add(1, Ordering::Relaxed);
        default_hook(info);
    }));
    println!(
        "chaos: {} bots at most, {} s per part, loss {}%, 20 ms ± 10 ms, random blackouts (0.5-3 s)",
        options.bots, options.seconds, options.loss_percent
    );
    for (part, restarts) in [("churn", false), ("churn + server kills", true)] {
        let (tally, first, last) = run(&options, restarts, 0x00c0_ffee_u64 + u64::from(restarts));
        let rate = |n: usize| 100.0 * n as f64 / tally.samples.max(1) as f64;
        println!("\n== {part}");
        println!(
            "injected: {} joins, {} leaves, {} blackouts, {} server kills (SIGKILL, back after 0.5-2 s)",
            tally.joins, tally.leaves, tally.blackouts, tally.restarts
        );
        println!(
            "settled observations: {} (every 250 ms, each member in the room for {} s, judged on those in for as long, {} s after any blackout or the room's recovery from a kill)",
            tally.samples,
            SETTLE.as_secs(),
            SETTLE.as_secs()
        );
        println!(
            "  user listed twice: {} ({:.2}%)  user missing: {} ({:.2}%)  stream without media > 5 s: {} ({:.2}%)  out of the room: {}",
            tally.duplicated,
            rate(tally.duplicated),
            tally.missing_user,
            rate(tally.missing_user),
            tally.stale_stream,
            rate(tally.stale_stream),
            tally.left_room
        );
        if restarts {
            println!(
                "server: {} MiB and {} descriptors at the end ({} s after its last start)",
                last.0 / 1024,
                last.1,
                tally.last_start.as_secs()
            );
        } else {
            println!(
                "server: {} MiB and {} descriptors after {} s, {} MiB and {} at the end",
                first.0 / 1024,
                first.1,
                SETTLE.as_secs(),
                last.0 / 1024,
                last.1
            );
        }
        if restarts {
            println!(
                "media back everywhere after a kill: p50 {:?}, p95 {:?} ({} kills, {} not back within 20 s)",
                percentile(&tally.recoveries, 0.5),
                percentile(&tally.recoveries, 0.95),
                tally.recoveries.len(),
                tally.unrecovered
            );
            let each: Vec<String> = tally
                .recoveries
                .iter()
                .map(|d| format!("{:.1} s", d.as_secs_f64()))
                .collect();
            println!("  each: {}", each.join(", "));
        }
    }
    println!("\npanics in the bots' process: {}", panics.load(Ordering::Relaxed));
}
