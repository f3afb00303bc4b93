//! Property test: random operation sequences from many clients against a real server keep
//! the room's invariants, match a reference model, and every observer agrees.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{Client, start};
use holoroom_protocol::{Event, Request, UpdateType};
use holoroom_server::Server;
use proptest::prelude::*;

const USERS: usize = 4;
const STREAMS: usize = 4;

#[derive(Debug, Clone)]
enum Op {
    /// Log in (again, from a new connection, if already in: that kicks the old one).
    Login(usize),
    Logout(usize),
    Publish(usize, usize),
    Stop(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..USERS).prop_map(Op::Login),
        1 => (0..USERS).prop_map(Op::Logout),
        3 => (0..USERS, 0..STREAMS).prop_map(|(u, s)| Op::Publish(u, s)),
        2 => (0..USERS, 0..STREAMS).prop_map(|(u, s)| Op::Stop(u, s)),
    ]
}

fn user_name(u: usize) -> String {
    format!("u{u}")
}

fn stream_name(s: usize) -> String {
    format!("s{s}")
}

/// What a client has been told: users and stream owners.
#[derive(Debug, Default)]
struct View {
    users: BTreeSet<String>,
    streams: BTreeMap<String, String>,
}

impl View {
    fn apply(&mut self, event: &Event) {
        match event {
            Event::RoomUserUpdate { update, users, .. } => {
                for user in users {
                    let id = user.user_id.to_string();
                    match update {
                        UpdateType::Add => assert!(self.users.insert(id), "user added twice: {event:?}"),
                        UpdateType::Delete => assert!(self.users.remove(&id), "unknown user deleted: {event:?}"),
                    }
                }
            }
            Event::RoomStreamUpdate { update, streams, .. } => {
                for stream in streams {
                    let id = stream.stream_id.to_string();
                    match update {
                        UpdateType::Add => {
                            let previous = self.streams.insert(id, stream.user.user_id.to_string());
                            assert!(previous.is_none(), "stream added twice: {event:?}");
                        }
                        UpdateType::Delete => {
                            assert!(self.streams.remove(&id).is_some(), "unknown stream deleted: {event:?}");
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

struct Observer {
    client: Client,
    view: View,
}

impl Observer {
    async fn catch_up(&mut self) {
        for event in self.client.drain(Duration::from_millis(5)).await {
            self.view.apply(&event);
        }
    }
}

async fn run(ops: Vec<Op>) {
    let server: Server = start(common::config()).await;
    let mut observers: Vec<Option<Observer>> = (0..USERS).map(|_| None).collect();
    // The reference model: who is in, who owns which stream.
    let mut users: BTreeSet<String> = BTreeSet::new();
    let mut streams: BTreeMap<String, String> = BTreeMap::new();

    for op in ops {
        match op {
            Op::Login(u) => {
                let me = user_name(u);
                let client = Client::join(&server, "r", &me, true).await;
                let joined = client.login.clone().expect("logged in");
                let view = View {
                    users: joined.users.iter().map(|u| u.user_id.to_string()).collect(),
                    streams: joined
                        .streams
                        .iter()
                        .map(|s| (s.stream_id.to_string(), s.user.user_id.to_string()))
                        .collect(),
                };
                if let Some(old) = observers[u].take() {
                    // The old connection is kicked out; its streams go.
                    drop(old);
                    streams.retain(|_, owner| owner != &me);
                }
                users.insert(me);
                observers[u] = Some(Observer { client, view });
            }
            Op::Logout(u) => {
                if let Some(observer) = observers[u].take() {
                    observer
                        .client
                        .signaling
                        .request(Request::Logout {})
                        .await
                        .expect("logout of a member succeeds");
                    let me = user_name(u);
                    users.remove(&me);
                    streams.retain(|_, owner| owner != &me);
                }
            }
            Op::Publish(u, s) => {
                if let Some(observer) = &observers[u] {
                    let result = observer.client.publish(&stream_name(s)).await;
                    let free = !streams.contains_key(&stream_name(s));
                    assert_eq!(result.is_ok(), free, "publish {s} by {u}: {result:?}");
                    if free {
                        streams.insert(stream_name(s), user_name(u));
                    }
                }
            }
            Op::Stop(u, s) => {
                if let Some(observer) = &observers[u] {
                    let result = observer.client.stop_publishing(&stream_name(s)).await;
                    let mine = streams.get(&stream_name(s)) == Some(&user_name(u));
                    assert_eq!(result.is_ok(), mine, "stop {s} by {u}: {result:?}");
                    if mine {
                        streams.remove(&stream_name(s));
                    }
                }
            }
        }
        for observer in observers.iter_mut().flatten() {
            observer.catch_up().await;
        }
    }

    // Let everything settle, then compare the server, the model and every observer.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let snapshot = server.snapshot();
    let (listed_users, listed_streams): (BTreeSet<String>, BTreeMap<String, String>) = match snapshot.rooms.as_slice() {
        [] => Default::default(),
        [room] => (
            room.users.iter().map(|u| u.user_id.to_string()).collect(),
            room.streams
                .iter()
                .map(|s| (s.stream_id.to_string(), s.user.user_id.to_string()))
                .collect(),
        ),
        more => panic!("one room expected, got {more:?}"),
    };
    assert_eq!(listed_users, users, "server users match the model");
    assert_eq!(listed_streams, streams, "server streams match the model");
    for owner in listed_streams.values() {
        assert!(listed_users.contains(owner), "stream owner {owner} is a live member");
    }
    for (u, observer) in observers.iter_mut().enumerate() {
        let Some(observer) = observer else { continue };
        observer.catch_up().await;
        observer.client.assert_seq_without_gaps();
        let me = user_name(u);
        let mut others = users.clone();
        others.remove(&me);
        assert_eq!(observer.view.users, others, "{me} sees the other members");
        let foreign: BTreeMap<String, String> = streams
            .iter()
            .filter(|(_, o)| **o != me)
            .map(|(s, o)| (s.clone(), o.clone()))
            .collect();
        assert_eq!(observer.view.streams, foreign, "{me} sees the others' streams");
    }
    server.shutdown().await.expect("clean shutdown");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_keep_the_room_consistent(ops in proptest::collection::vec(op(), 1..30)) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(run(ops));
    }
}
