//! The seed call flow for three users over a real server: login, users, streams, logout.

mod common;

use std::time::Duration;

use common::{Client, start};
use holoroom_protocol::{Event, Request, ResponseBody, UpdateType};

fn users_of(event: &Event) -> (UpdateType, Vec<String>) {
    match event {
        Event::RoomUserUpdate { update, users, .. } => (*update, users.iter().map(|u| u.user_id.to_string()).collect()),
        other => panic!("expected a user update, got {other:?}"),
    }
}

fn streams_of(event: &Event) -> (UpdateType, Vec<String>) {
    match event {
        Event::RoomStreamUpdate { update, streams, .. } => {
            (*update, streams.iter().map(|s| s.stream_id.to_string()).collect())
        }
        other => panic!("expected a stream update, got {other:?}"),
    }
}

fn ids<T: ToString>(items: impl Iterator<Item = T>) -> Vec<String> {
    items.map(|i| i.to_string()).collect()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[tokio::test]
async fn three_users_see_users_and_streams_in_order() {
    let server = start(common::config()).await;

    let mut a = Client::join(&server, "lobby", "alice", true).await;
    a.publish("alice-cam").await.expect("alice publishes");

    // A login's response lists the room as it is; events after it are changes.
    let mut b = Client::join(&server, "lobby", "bob", true).await;
    let joined = b.login.clone().expect("logged in");
    assert_eq!(ids(joined.users.iter().map(|u| &u.user_id)), s(&["alice"]));
    assert_eq!(ids(joined.streams.iter().map(|s| &s.stream_id)), s(&["alice-cam"]));
    assert_eq!(users_of(&a.next_event().await), (UpdateType::Add, s(&["bob"])));

    // Carol asked for no user updates: she sees streams only.
    let mut c = Client::join(&server, "lobby", "carol", false).await;
    let joined = c.login.clone().expect("logged in");
    assert!(joined.users.is_empty());
    assert_eq!(ids(joined.streams.iter().map(|s| &s.stream_id)), s(&["alice-cam"]));
    assert_eq!(users_of(&a.next_event().await), (UpdateType::Add, s(&["carol"])));
    assert_eq!(users_of(&b.next_event().await), (UpdateType::Add, s(&["carol"])));

    b.publish("bob-cam").await.expect("bob publishes");
    assert_eq!(streams_of(&a.next_event().await), (UpdateType::Add, s(&["bob-cam"])));
    assert_eq!(streams_of(&c.next_event().await), (UpdateType::Add, s(&["bob-cam"])));

    // Playing is allowed for a listed stream and refused for an unknown one.
    let played = b
        .signaling
        .request(Request::StartPlaying(holoroom_protocol::PlayRequest {
            stream_id: common::stream("alice-cam"),
            video_layer: None,
            sdp_offer: None,
            media_id: None,
        }))
        .await
        .expect("bob plays alice");
    assert!(matches!(played, ResponseBody::Playing { ref stream, .. } if stream.user.user_id.as_str() == "alice"));

    a.stop_publishing("alice-cam").await.expect("alice stops");
    assert_eq!(
        streams_of(&b.next_event().await),
        (UpdateType::Delete, s(&["alice-cam"]))
    );
    assert_eq!(
        streams_of(&c.next_event().await),
        (UpdateType::Delete, s(&["alice-cam"]))
    );

    b.signaling.request(Request::Logout {}).await.expect("bob logs out");
    assert_eq!(streams_of(&a.next_event().await), (UpdateType::Delete, s(&["bob-cam"])));
    assert_eq!(users_of(&a.next_event().await), (UpdateType::Delete, s(&["bob"])));
    assert_eq!(streams_of(&c.next_event().await), (UpdateType::Delete, s(&["bob-cam"])));

    // Nothing else arrives, the publisher never hears of its own streams, and seq has no gaps.
    let quiet = Duration::from_millis(200);
    assert!(a.drain(quiet).await.is_empty());
    assert!(b.drain(quiet).await.is_empty());
    assert!(c.drain(quiet).await.is_empty());
    for client in [&a, &b, &c] {
        client.assert_seq_without_gaps();
    }
    assert!(
        c.seen.iter().all(|(_, e)| !matches!(e, Event::RoomUserUpdate { .. })),
        "user_update=false gets no user events: {:?}",
        c.seen
    );

    // The room vanishes when the last member leaves.
    a.signaling.request(Request::Logout {}).await.expect("alice logs out");
    c.signaling.request(Request::Logout {}).await.expect("carol logs out");
    assert!(server.snapshot().rooms.is_empty(), "{:?}", server.snapshot());
    server.shutdown().await.expect("clean shutdown");
}
