//! A userspace UDP relay that impairs traffic as a real network would: delay, jitter, random and bursty loss, a
//! bandwidth cap with a bounded queue, and blackouts.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::future::pending;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rand::Rng;
use tokio::net::UdpSocket;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, sleep_until};

/// The rate cap's queue bound when [`Impairment::queue_bytes`] is 0.
pub const DEFAULT_QUEUE_BYTES: usize = 64 * 1024;

/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;

/// One direction's network conditions; the default is a clean path.
///
/// Each datagram is, in this order: dropped during a blackout; dropped at random by `loss` and `burst`; queued behind
/// the datagrams before it when `rate_bps` is set, or dropped if that queue is full; then delayed by `delay` ± `jitter`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Impairment {
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Each datagram gets an extra delay uniform in `[-jitter, +jitter]`, the total kept at zero or more. Datagrams are
    /// not kept in order, so jitter reorders them, as netem does without a rate.
    pub jitter: Duration,
    /// Probability in `0.0..=1.0` that a datagram is lost, independently of the others.
    pub loss: f64,
    /// Bursty loss, in addition to `loss`.
    pub burst: Option<GilbertElliott>,
    /// Bandwidth cap in bits per second of UDP payload: datagrams leave one after another at this rate through a FIFO.
    pub rate_bps: Option<u64>,
    /// Bound of the rate cap's FIFO in bytes; a datagram that does not fit is dropped (tail drop). 0 means
    /// [`DEFAULT_QUEUE_BYTES`].
    pub queue_bytes: usize,
}

impl Impairment {
    /// A clean path: everything is forwarded at once.
    pub fn clean() -> Self {
        Self::default()
    }

    /// A path with a fixed one-way delay and nothing else.
    pub fn delay(delay: Duration) -> Self {
        Self::default().with_delay(delay)
    }

    /// With a fixed one-way delay.
    pub fn with_delay(self, delay: Duration) -> Self {
        Self { delay, ..self }
    }

    /// With jitter: see [`Impairment::jitter`].
    pub fn with_jitter(self, jitter: Duration) -> Self {
        Self { jitter, ..self }
    }

    /// With independent random loss of probability `loss`.
    pub fn with_loss(self, loss: f64) -> Self {
        Self { loss, ..self }
    }

    /// With bursty loss.
    pub fn with_burst(self, burst: GilbertElliott) -> Self {
        Self {
            burst: Some(burst),
            ..self
        }
    }

    /// With a bandwidth cap of `bps` bits per second.
    pub fn with_rate(self, bps: u64) -> Self {
        Self {
            rate_bps: Some(bps),
            ..self
        }
    }

    /// With the rate cap's FIFO bounded at `bytes`.
    pub fn with_queue(self, bytes: usize) -> Self {
        Self {
            queue_bytes: bytes,
            ..self
        }
    }
}

/// The Gilbert-Elliott model of bursty loss: a good and a bad state, with a chance to switch after each datagram and a
/// loss probability in each.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GilbertElliott {
    /// Probability of moving from the good state to the bad one, per datagram.
    pub p_good_to_bad: f64,
    /// Probability of moving from the bad state to the good one, per datagram.
    pub p_bad_to_good: f64,
    /// Loss probability in the good state.
    pub loss_good: f64,
    /// Loss probability in the bad state.
    pub loss_bad: f64,
}

impl GilbertElliott {
    /// Losses in bursts averaging `mean_burst_len` datagrams (at least 1), `mean_loss` (below 1) of all datagrams lost:
    /// every datagram in the bad state is lost, none in the good one.
    pub fn bursts(mean_loss: f64, mean_burst_len: f64) -> Self {
        let p_bad_to_good = 1.0 / mean_burst_len.max(1.0);
        let mean_loss = mean_loss.clamp(0.0, 1.0);
        Self {
            p_good_to_bad: (mean_loss * p_bad_to_good / (1.0 - mean_loss)).min(1.0),
            p_bad_to_good,
            loss_good: 0.0,
            loss_bad: 1.0,
        }
    }
}

/// What happened to one direction's datagrams so far. Each datagram received is counted once more in one of the other
/// fields, once it has left the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DirectionStats {
    /// Datagrams that came in.
    pub received: u64,
    /// Dropped by `loss` or `burst`.
    pub lost: u64,
    /// Dropped because the rate cap's FIFO was full.
    pub queue_dropped: u64,
    /// Dropped during a blackout, on their way in or out.
    pub blackout_dropped: u64,
    /// Sent on.
    pub forwarded: u64,
    /// Payload bytes sent on.
    pub forwarded_bytes: u64,
    /// Failed to send, or to open the client's upstream socket.
    pub send_errors: u64,
}

/// What happened to the datagrams of each direction so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RelayStats {
    /// From the clients to the target.
    pub upstream: DirectionStats,
    /// From the target back to the clients.
    pub downstream: DirectionStats,
}

/// A UDP relay in front of a server that impairs traffic as a network would: see [`Impairment`].
///
/// Each client (source address) gets its own upstream socket, so the server sees one peer per client and its replies
/// find their way back; replies reach the client from the listening address. The relay stops when dropped.
#[derive(Debug)]
pub struct UdpRelay {
    addr: SocketAddr,
    up: Arc<Direction>,
    down: Arc<Direction>,
    tasks: [JoinHandle<()>; 3],
}

impl UdpRelay {
    /// Listens on `listen` (a port of 0 picks a free one) and relays every client's datagrams to `target`, with both
    /// directions clean until told otherwise.
    pub async fn start(listen: SocketAddr, target: SocketAddr) -> io::Result<UdpRelay> {
        let socket = Arc::new(UdpSocket::bind(listen).await?);
        let addr = socket.local_addr()?;
        let (up, down) = (Arc::new(Direction::new()), Arc::new(Direction::new()));
        let (up_line, up_waiting) = mpsc::unbounded_channel();
        let (down_line, down_waiting) = mpsc::unbounded_channel();
        let up_path = Path {
            direction: up.clone(),
            line: up_line,
        };
        let down_path = Path {
            direction: down.clone(),
            line: down_line,
        };
        let tasks = [
            tokio::spawn(delay_line(up.clone(), up_waiting)),
            tokio::spawn(delay_line(down.clone(), down_waiting)),
            tokio::spawn(serve(socket, target, up_path, down_path)),
        ];
        Ok(UdpRelay { addr, up, down, tasks })
    }

    /// The address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets the conditions of both directions.
    pub fn set(&self, both: Impairment) {
        self.set_upstream(both);
        self.set_downstream(both);
    }

    /// Sets the conditions from the clients to the target.
    pub fn set_upstream(&self, impairment: Impairment) {
        self.up.set(impairment);
    }

    /// Sets the conditions from the target back to the clients.
    pub fn set_downstream(&self, impairment: Impairment) {
        self.down.set(impairment);
    }

    /// Drops everything in both directions, including datagrams already delayed, until [`UdpRelay::restore`].
    pub fn blackout(&self) {
        self.set_blackout(Blackout::Indefinite);
    }

    /// Drops everything in both directions for `duration`, or until [`UdpRelay::restore`].
    pub fn blackout_for(&self, duration: Duration) {
        self.set_blackout(Blackout::Until(Instant::now() + duration));
    }

    /// Ends a blackout.
    pub fn restore(&self) {
        self.set_blackout(Blackout::Off);
    }

    /// What happened to the datagrams so far.
    pub fn stats(&self) -> RelayStats {
        RelayStats {
            upstream: self.up.state().stats,
            downstream: self.down.state().stats,
        }
    }

    fn set_blackout(&self, blackout: Blackout) {
        self.up.state().blackout = blackout;
        self.down.state().blackout = blackout;
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// One direction's conditions and counters.
#[derive(Debug)]
struct Direction {
    state: Mutex<State>,
    /// Datagrams in the delay line: while there are any, a datagram due at once waits behind them.
    in_line: AtomicUsize,
}

#[derive(Debug)]
struct State {
    impairment: Impairment,
    blackout: Blackout,
    /// Whether the Gilbert-Elliott model is in its bad state.
    bad: bool,
    /// When the rate cap's FIFO will have drained.
    busy_until: Instant,
    stats: DirectionStats,
}

#[derive(Debug, Clone, Copy)]
enum Blackout {
    Off,
    Until(Instant),
    Indefinite,
}

impl Blackout {
    fn covers(self, now: Instant) -> bool {
        match self {
            Blackout::Off => false,
            Blackout::Until(end) => now < end,
            Blackout::Indefinite => true,
        }
    }
}

impl Direction {
    fn new() -> Self {
        let state = State {
            impairment: Impairment::clean(),
            blackout: Blackout::Off,
            bad: false,
            busy_until: Instant::now(),
            stats: DirectionStats::default(),
        };
        Direction {
            state: Mutex::new(state),
            in_line: AtomicUsize::new(0),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, impairment: Impairment) {
        let mut state = self.state();
        state.impairment = impairment;
        state.bad = false;
    }

    /// Puts a datagram of `len` bytes arriving `now` through the conditions: when it is due to leave, or `None` if it
    /// is dropped.
    fn admit(&self, len: usize, now: Instant) -> Option<Instant> {
        let mut state = self.state();
        state.stats.received += 1;
        if state.blackout.covers(now) {
            state.stats.blackout_dropped += 1;
            return None;
        }
        let impairment = state.impairment;
        let mut rng = rand::rng();
        let mut lost = impairment.loss > 0.0 && rng.random::<f64>() < impairment.loss;
        if let Some(ge) = impairment.burst {
            let (loss, switch) = match state.bad {
                false => (ge.loss_good, ge.p_good_to_bad),
                true => (ge.loss_bad, ge.p_bad_to_good),
            };
            lost |= rng.random::<f64>() < loss;
            if rng.random::<f64>() < switch {
                state.bad = !state.bad;
            }
        }
        if lost {
            state.stats.lost += 1;
            return None;
        }
        let mut due = now;
        if let Some(rate) = impairment.rate_bps.filter(|&rate| rate > 0) {
            let start = state.busy_until.max(now);
            let bytes_per_sec = rate as f64 / 8.0;
            let queued = (start - now).as_secs_f64() * bytes_per_sec;
            let limit = match impairment.queue_bytes {
                0 => DEFAULT_QUEUE_BYTES,
                bytes => bytes,
            };
            if queued + len as f64 > limit as f64 {
                state.stats.queue_dropped += 1;
                return None;
            }
            state.busy_until = start + Duration::from_secs_f64(len as f64 / bytes_per_sec);
            due = state.busy_until;
        }
        let jitter = impairment.jitter.as_secs_f64();
        if jitter > 0.0 {
            let delay = impairment.delay.as_secs_f64() + rng.random_range(-jitter..=jitter);
            due += Duration::from_secs_f64(delay.max(0.0));
        } else {
            due += impairment.delay;
        }
        Some(due)
    }

    /// Sends a datagram that is due, unless a blackout began since it came in.
    async fn send(&self, socket: &UdpSocket, dest: SocketAddr, data: &[u8]) {
        if self.state().blackout.covers(Instant::now()) {
            self.state().stats.blackout_dropped += 1;
            return;
        }
        let sent = socket.send_to(data, dest).await;
        let mut state = self.state();
        match sent {
            Ok(n) => {
                state.stats.forwarded += 1;
                state.stats.forwarded_bytes += n as u64;
            }
            Err(_) => state.stats.send_errors += 1,
        }
    }
}

/// A datagram in the delay line.
#[derive(Debug)]
struct Packet {
    due: Instant,
    data: Vec<u8>,
    socket: Arc<UdpSocket>,
    dest: SocketAddr,
}

/// One direction and its delay line.
#[derive(Debug, Clone)]
struct Path {
    direction: Arc<Direction>,
    line: UnboundedSender<Packet>,
}

impl Path {
    /// Sends `data` from `socket` to `dest` through the direction's conditions: at once when it is due now and nothing
    /// waits in the delay line, else through the delay line.
    async fn forward(&self, socket: &Arc<UdpSocket>, dest: SocketAddr, data: &[u8]) {
        let now = Instant::now();
        let Some(due) = self.direction.admit(data.len(), now) else {
            return;
        };
        if due <= now && self.direction.in_line.load(Ordering::Acquire) == 0 {
            self.direction.send(socket, dest, data).await;
            return;
        }
        self.direction.in_line.fetch_add(1, Ordering::AcqRel);
        let packet = Packet {
            due,
            data: data.to_vec(),
            socket: socket.clone(),
            dest,
        };
        if self.line.send(packet).is_err() {
            // The relay is stopping.
            self.direction.in_line.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Sends one direction's delayed datagrams when they are due, in order of due time then arrival.
async fn delay_line(direction: Arc<Direction>, mut incoming: UnboundedReceiver<Packet>) {
    let mut waiting = BTreeMap::new();
    let mut seq = 0_u64;
    loop {
        let next = waiting.first_key_value().map(|(&(due, _), _)| due);
        let wake = async {
            match next {
                Some(due) => sleep_until(due).await,
                None => pending().await,
            }
        };
        tokio::select! {
            packet = incoming.recv() => {
                let Some(packet) = packet else { return };
                waiting.insert((packet.due, seq), packet);
                seq += 1;
            }
            () = wake => {}
        }
        let now = Instant::now();
        while let Some(first) = waiting.first_entry() {
            if first.key().0 > now {
                break;
            }
            let packet = first.remove();
            direction.send(&packet.socket, packet.dest, &packet.data).await;
            direction.in_line.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Reads the clients' datagrams and relays them upstream, opening an upstream socket per client.
async fn serve(socket: Arc<UdpSocket>, target: SocketAddr, up: Path, down: Path) {
    let local = upstream_bind_addr(target);
    let mut clients = HashMap::new();
    // Dropped with this task, which aborts the readers.
    let mut readers = JoinSet::new();
    let mut buf = vec![0; MAX_DATAGRAM];
    loop {
        let (len, client) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(error) if transient(&error) => continue,
            Err(_) => return,
        };
        let upstream = match clients.entry(client) {
            Entry::Occupied(entry) => Arc::clone(entry.get()),
            Entry::Vacant(entry) => {
                let Ok(upstream) = UdpSocket::bind(local).await else {
                    let stats = &mut up.direction.state().stats;
                    stats.received += 1;
                    stats.send_errors += 1;
                    continue;
                };
                let upstream = Arc::new(upstream);
                readers.spawn(relay_replies(upstream.clone(), socket.clone(), client, down.clone()));
                entry.insert(upstream).clone()
            }
        };
        up.forward(&upstream, target, &buf[..len]).await;
    }
}

/// Relays what the target sends to one client's upstream socket back to that client.
async fn relay_replies(upstream: Arc<UdpSocket>, listener: Arc<UdpSocket>, client: SocketAddr, down: Path) {
    let mut buf = vec![0; MAX_DATAGRAM];
    loop {
        match upstream.recv_from(&mut buf).await {
            Ok((len, _)) => down.forward(&listener, client, &buf[..len]).await,
            Err(error) if transient(&error) => {}
            Err(_) => return,
        }
    }
}

/// Errors a UDP socket reports for an earlier datagram (an ICMP error), after which it works on.
fn transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionRefused | io::ErrorKind::Interrupted
    )
}

/// The target's own address when it is a loopback one, else the unspecified address of its family; any port.
fn upstream_bind_addr(target: SocketAddr) -> SocketAddr {
    let ip = match target.ip() {
        ip if ip.is_loopback() => ip,
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    SocketAddr::new(ip, 0)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use tokio::time::timeout;

    use super::*;

    /// A UDP echo server on a free loopback port.
    async fn echo_server() -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0; MAX_DATAGRAM];
            while let Ok((len, from)) = socket.recv_from(&mut buf).await {
                let _ = socket.send_to(&buf[..len], from).await;
            }
        });
        addr
    }

    /// A relay on `listen` in front of an echo server.
    async fn relay_on(listen: &str) -> UdpRelay {
        UdpRelay::start(listen.parse().unwrap(), echo_server().await)
            .await
            .unwrap()
    }

    /// Sends `count` numbered datagrams of `size` bytes through `relay`, `batch` every millisecond, and returns when
    /// sending began and the numbers echoed back with when they came, in arrival order, once none came for 200 ms.
    async fn exchange(relay: &UdpRelay, count: u32, size: usize, batch: u32) -> (Instant, Vec<(u32, Instant)>) {
        let relay = relay.local_addr();
        let client = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let start = Instant::now();
        let sender = tokio::spawn({
            let client = client.clone();
            async move {
                let mut packet = vec![0; size.max(4)];
                for n in 0..count {
                    packet[..4].copy_from_slice(&n.to_be_bytes());
                    client.send_to(&packet, relay).await.unwrap();
                    if (n + 1) % batch == 0 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
        });
        let mut echoes = Vec::new();
        let mut buf = vec![0; MAX_DATAGRAM];
        loop {
            match timeout(Duration::from_millis(200), client.recv_from(&mut buf)).await {
                Ok(received) => {
                    let (len, from) = received.unwrap();
                    assert_eq!((len, from), (size.max(4), relay));
                    echoes.push((u32::from_be_bytes(buf[..4].try_into().unwrap()), Instant::now()));
                }
                Err(_) if sender.is_finished() => break,
                Err(_) => {}
            }
        }
        sender.await.unwrap();
        (start, echoes)
    }

    #[tokio::test]
    async fn a_clean_path_relays_both_ways_from_the_listening_address() {
        // The SFU case: clients talk to 127.0.0.2, the server listens on 127.0.0.1.
        let listen = if cfg!(target_os = "linux") {
            "127.0.0.2:0"
        } else {
            "127.0.0.1:0"
        };
        let relay = relay_on(listen).await;
        let (a, b) = (
            UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        );
        a.send_to(b"from a", relay.local_addr()).await.unwrap();
        b.send_to(b"from b", relay.local_addr()).await.unwrap();
        for (client, expected) in [(&a, b"from a"), (&b, b"from b")] {
            let mut buf = [0; 16];
            let (len, from) = timeout(Duration::from_secs(1), client.recv_from(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!((&buf[..len], from), (&expected[..], relay.local_addr()));
        }
        let stats = relay.stats();
        assert_eq!((stats.upstream.forwarded, stats.downstream.forwarded), (2, 2));
    }

    #[tokio::test]
    async fn a_dropped_relay_stops_and_frees_its_port() {
        let relay = relay_on("127.0.0.1:0").await;
        let addr = relay.local_addr();
        assert_eq!(exchange(&relay, 1, 4, 1).await.1.len(), 1);
        drop(relay);
        // The aborted tasks, which own the sockets, are dropped once the runtime gets to them.
        tokio::time::sleep(Duration::from_millis(10)).await;
        UdpSocket::bind(addr).await.unwrap();
    }

    #[tokio::test]
    async fn random_loss_drops_about_that_share() {
        let relay = relay_on("127.0.0.1:0").await;
        relay.set_upstream(Impairment::clean().with_loss(0.3));
        let (_, echoes) = exchange(&relay, 1000, 4, 25).await;
        let up = relay.stats().upstream;
        assert_eq!(up.received, 1000);
        assert_eq!(up.lost + up.forwarded, 1000);
        assert_eq!(echoes.len() as u64, up.forwarded);
        assert!((200..=400).contains(&up.lost), "{up:?}");
    }

    #[tokio::test]
    async fn jitter_reorders_without_losing() {
        let relay = relay_on("127.0.0.1:0").await;
        relay.set_upstream(Impairment::delay(Duration::from_millis(20)).with_jitter(Duration::from_millis(10)));
        let (_, echoes) = exchange(&relay, 200, 4, 1).await;
        let numbers: Vec<u32> = echoes.iter().map(|&(n, _)| n).collect();
        assert_eq!(numbers.iter().copied().collect::<HashSet<_>>(), (0..200).collect());
        let overtaken = numbers.windows(2).filter(|pair| pair[1] < pair[0]).count();
        assert!(overtaken > 0, "{numbers:?}");
    }

    #[tokio::test]
    async fn delay_adds_to_each_direction() {
        let relay = relay_on("127.0.0.1:0").await;
        relay.set_upstream(Impairment::delay(Duration::from_millis(40)));
        relay.set_downstream(Impairment::delay(Duration::from_millis(20)));
        let (start, echoes) = exchange(&relay, 1, 4, 1).await;
        assert_eq!(echoes.len(), 1);
        assert!(echoes[0].1 - start >= Duration::from_millis(60));
    }

    #[tokio::test]
    async fn a_rate_cap_paces_and_drops_when_its_queue_overflows() {
        let relay = relay_on("127.0.0.1:0").await;
        // 50 kB/s: a 1000-byte datagram every 20 ms, 10 of them queued at most.
        relay.set_upstream(Impairment::clean().with_rate(400_000).with_queue(10_000));
        let (start, echoes) = exchange(&relay, 40, 1000, 40).await;
        let up = relay.stats().upstream;
        assert!(up.queue_dropped >= 20, "{up:?}");
        assert_eq!(up.queue_dropped + up.forwarded, 40);
        assert_eq!(echoes.len() as u64, up.forwarded);
        let elapsed = echoes.last().unwrap().1 - start;
        let bps = (echoes.len() * 8000) as f64 / elapsed.as_secs_f64();
        assert!((200_000.0..=410_000.0).contains(&bps), "{bps} bit/s over {elapsed:?}");
    }

    #[tokio::test]
    async fn a_blackout_drops_everything_until_restored() {
        let relay = relay_on("127.0.0.1:0").await;
        relay.blackout();
        assert!(exchange(&relay, 10, 4, 10).await.1.is_empty());
        assert_eq!(relay.stats().upstream.blackout_dropped, 10);
        relay.restore();
        assert_eq!(exchange(&relay, 10, 4, 10).await.1.len(), 10);
        relay.blackout_for(Duration::from_millis(100));
        assert!(exchange(&relay, 10, 4, 10).await.1.is_empty());
        // The exchange waited 200 ms for echoes: the blackout is over.
        assert_eq!(exchange(&relay, 10, 4, 10).await.1.len(), 10);
    }

    #[tokio::test]
    async fn gilbert_elliott_loses_in_bursts() {
        let relay = relay_on("127.0.0.1:0").await;
        relay.set_upstream(Impairment::clean().with_burst(GilbertElliott::bursts(0.1, 5.0)));
        let (_, echoes) = exchange(&relay, 5000, 4, 25).await;
        let up = relay.stats().upstream;
        assert!((200..=1000).contains(&up.lost), "{up:?}");
        let echoed: HashSet<u32> = echoes.iter().map(|&(n, _)| n).collect();
        let mut bursts = Vec::new();
        let mut run = 0;
        for n in 0..=5000 {
            if n < 5000 && !echoed.contains(&n) {
                run += 1;
            } else if run > 0 {
                bursts.push(run);
                run = 0;
            }
        }
        let mean_burst = bursts.iter().sum::<u32>() as f64 / bursts.len() as f64;
        assert!(mean_burst > 2.0, "{bursts:?}");
    }
}
