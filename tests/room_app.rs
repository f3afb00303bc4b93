//! The room's ECS mapping without a window: Messages in, entities out; then the real thing,
//! an app joined to a real server with two pattern bots, and a spectator.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bevy::prelude::*;
use bevy::state::app::StatesPlugin;
use holoroom::audio::{Muted, RoomAudio, SpeakingLevel};
use holoroom::net::{
    EngineBridge, FeedState, JoinRoom, LeaveRoom, Me, MediaTrouble, Problem, RoomStateChanged, RoomUpdate, TokenSource,
};
use holoroom::quality::{LayerReason, ViewQuality};
use holoroom::room::ViewerCamera;
use holoroom::room::participants::{
    AppState, LastError, LocalParticipant, Participant, Reconnecting, Seat, VideoFeed, seat_transform,
};
use holoroom::{HoloroomCorePlugin, net};
use holoroom_engine::bot::{Bot, BotConfig};
use holoroom_engine::media::FrameSlot;
use holoroom_engine::protocol::{Pose, RoomId, RoomStateReason, StreamId, UserId, UserInfo, VideoGrant, VideoLayer};
use holoroom_engine::{Engine, EngineConfig, MediaError, StreamConfig};
use holoroom_server::{Server, ServerConfig, SigningKey, TokenKeys};

fn headless() -> App {
    let mut app = App::new();
    app.add_plugins((MinimalPlugins, StatesPlugin, HoloroomCorePlugin));
    app
}

fn user(id: &str) -> UserInfo {
    UserInfo {
        user_id: UserId::new(id).expect("valid"),
        user_name: id.to_uppercase(),
    }
}

fn seats(app: &mut App) -> Vec<(String, usize)> {
    let mut seats: Vec<(String, usize)> = app
        .world_mut()
        .query::<(&Participant, &Seat)>()
        .iter(app.world())
        .map(|(p, s)| (p.user_id.to_string(), s.0))
        .collect();
    seats.sort();
    seats
}

#[test]
fn users_become_entities_in_stable_seats() {
    let mut app = headless();
    for id in ["a", "b", "c"] {
        app.world_mut().write_message(RoomUpdate::UserJoined(user(id)));
    }
    app.update();
    assert_eq!(seats(&mut app), vec![("a".into(), 0), ("b".into(), 1), ("c".into(), 2)]);

    // b leaves: a and c keep their seats; the next arrival takes b's.
    app.world_mut().write_message(RoomUpdate::UserLeft(user("b").user_id));
    app.update();
    assert_eq!(seats(&mut app), vec![("a".into(), 0), ("c".into(), 2)]);
    app.world_mut().write_message(RoomUpdate::UserJoined(user("d")));
    // A duplicate ADD does not make a second entity.
    app.world_mut().write_message(RoomUpdate::UserJoined(user("a")));
    app.update();
    assert_eq!(seats(&mut app), vec![("a".into(), 0), ("c".into(), 2), ("d".into(), 1)]);

    // Within one frame, order decides: e joins and leaves (no ghost), c leaves and comes back
    // (present, in a free seat), d moves.
    let pose = Pose {
        position: [1.0, 1.3, -2.0],
        orientation: [0.0, 0.0, 0.0, 1.0],
    };
    for update in [
        RoomUpdate::UserJoined(user("e")),
        RoomUpdate::UserLeft(user("e").user_id),
        RoomUpdate::UserLeft(user("c").user_id),
        RoomUpdate::UserJoined(user("c")),
        RoomUpdate::Moved {
            user_id: user("d").user_id,
            pose,
        },
    ] {
        app.world_mut().write_message(update);
    }
    app.update();
    assert_eq!(seats(&mut app), vec![("a".into(), 0), ("c".into(), 2), ("d".into(), 1)]);
    let moved = app
        .world_mut()
        .query::<(&Participant, &Transform)>()
        .iter(app.world())
        .find(|(p, _)| p.user_id.as_str() == "d")
        .map(|(_, t)| t.translation);
    // Poses are relative to the mover's seat, which this viewer chose.
    let expected = seat_transform(1) * Transform::from_xyz(1.0, 1.3, -2.0);
    assert_eq!(moved, Some(expected.translation));
}

#[test]
fn reconnecting_is_shown_until_the_room_is_back_or_lost() {
    let mut app = headless();
    let state = |reason| RoomStateChanged { reason, error: None };
    for (reason, expected) in [
        (RoomStateReason::Reconnecting, true),
        (RoomStateReason::Reconnected, false),
        (RoomStateReason::Reconnecting, true),
        (RoomStateReason::ReconnectFailed, false),
    ] {
        app.world_mut().write_message(state(reason));
        app.update();
        assert_eq!(app.world().resource::<Reconnecting>().0, expected, "after {reason:?}");
    }
}

#[test]
fn a_panel_says_reconnecting_video_while_its_media_is_set_up_again() {
    let mut app = headless();
    let stream = StreamId::new("cam").expect("valid");
    let other = StreamId::new("other").expect("valid");
    let feed = app
        .world_mut()
        .spawn(VideoFeed::new(Some(stream.clone()), FrameSlot::new()))
        .id();
    let reconnecting = |app: &App| app.world().get::<VideoFeed>(feed).is_some_and(|f| f.reconnecting);
    for (stream_id, state, expected) in [(&stream, true, true), (&other, false, true), (&stream, false, false)] {
        app.world_mut().write_message(FeedState {
            stream_id: stream_id.clone(),
            reconnecting: state,
        });
        app.update();
        assert_eq!(reconnecting(&app), expected, "after {stream_id} {state}");
    }
}

#[test]
fn a_streams_trouble_is_cleared_once_its_media_flows_again() {
    let mut app = headless();
    let stream = StreamId::new("bob-cam").expect("valid");
    let failed = MediaTrouble::Began(Problem::Play {
        stream_id: stream.clone(),
        error: MediaError::Connection("media connection Failed".into()),
    });
    app.world_mut().write_message(failed.clone());
    app.update();
    let shown = |app: &App| app.world().resource::<LastError>().0.is_some();
    assert!(shown(&app));
    app.world_mut()
        .write_message(MediaTrouble::Over(StreamId::new("other-cam").expect("valid")));
    app.update();
    assert!(shown(&app), "another stream coming back changes nothing");
    app.world_mut().write_message(MediaTrouble::Over(stream.clone()));
    app.update();
    assert!(!shown(&app), "the problem is gone once its stream plays again");
    // Back, then failing again, within one frame: the failure is what stands.
    app.world_mut().write_message(MediaTrouble::Over(stream));
    app.world_mut().write_message(failed);
    app.update();
    assert!(shown(&app), "the last word stands");
}

struct Room {
    server: Server,
    runtime: tokio::runtime::Runtime,
}

fn room() -> Room {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let server = runtime.block_on(async {
        let config = ServerConfig::new(TokenKeys::new(SigningKey::new(
            "k1",
            b"app-test-secret-0123456".to_vec(),
        )));
        Server::bind("127.0.0.1:0", config).await.expect("server binds")
    });
    Room { server, runtime }
}

fn bot(room: &Room, id: &str) -> Bot {
    let user = user(id);
    let token = room
        .server
        .keys()
        .mint(VideoGrant::participant("demo"), &user.user_id, None, 3600);
    Bot::start(BotConfig {
        server_url: room.server.ws_url(),
        room_id: RoomId::new("demo").expect("valid"),
        user,
        token: token.into(),
        publish: Some(StreamConfig::test_pattern(320, 180, 15.0)),
        plays: true,
    })
    .expect("bot starts")
}

/// An app with the room's core plugins, joined (by intent, as the login button does) to `room`.
fn joined_app(room: &Room, id: &str, spectate: bool) -> App {
    let mut app = headless();
    let keys = room.server.keys().clone();
    let mint: net::MintToken = Arc::new(move |room: &str, user: &str, _name: &str, spectator: bool| {
        let grant = if spectator {
            VideoGrant::spectator(room)
        } else {
            VideoGrant::participant(room)
        };
        Some(keys.mint(grant, &UserId::new(user).ok()?, None, 3600))
    });
    let engine = Engine::new(EngineConfig::new(room.server.ws_url())).expect("engine");
    app.insert_resource(EngineBridge {
        engine: Arc::new(engine),
        tokens: TokenSource::Mint(mint),
    });
    app.world_mut().write_message(JoinRoom {
        room: "demo".into(),
        user: id.into(),
        name: id.to_uppercase(),
        spectate,
    });
    app
}

/// Runs frames until `done` or the deadline.
fn run_until(app: &mut App, what: &str, mut done: impl FnMut(&mut App) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done(app) {
        assert!(Instant::now() < deadline, "timed out: {what}");
        app.update();
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_joined_app_shows_each_bot_with_live_video() {
    let room = room();
    let bots = [bot(&room, "bot-1"), bot(&room, "bot-2")];
    let mut app = joined_app(&room, "viewer", false);

    run_until(&mut app, "in call with two remote feeds", |app| {
        let in_call = *app.world().resource::<State<AppState>>().get() == AppState::InCall;
        let feeds = app
            .world_mut()
            .query_filtered::<&VideoFeed, Without<LocalParticipant>>()
            .iter(app.world())
            .filter(|f| f.frames_taken > 0)
            .count();
        in_call && feeds == 2
    });
    let remote = app
        .world_mut()
        .query_filtered::<&Participant, Without<LocalParticipant>>()
        .iter(app.world())
        .count();
    assert_eq!(remote, 2, "one entity per bot");
    assert_eq!(
        app.world_mut()
            .query_filtered::<(), With<LocalParticipant>>()
            .iter(app.world())
            .count(),
        1,
        "and one for yourself"
    );

    // Every feed's frame codes only go up, frame after frame.
    let mut last: std::collections::HashMap<String, u32> = Default::default();
    let mut advanced = 0;
    for _ in 0..200 {
        app.update();
        std::thread::sleep(Duration::from_millis(10));
        for (participant, feed) in app
            .world_mut()
            .query_filtered::<(&Participant, &VideoFeed), Without<LocalParticipant>>()
            .iter(app.world())
        {
            let Some(code) = feed.slot.latest().and_then(|f| f.code) else {
                continue;
            };
            let key = participant.user_id.to_string();
            if let Some(previous) = last.get(&key) {
                assert!(
                    code.frame_number >= *previous,
                    "{key}: {} after {previous}",
                    code.frame_number
                );
                if code.frame_number > *previous {
                    advanced += 1;
                }
            }
            last.insert(key, code.frame_number);
        }
    }
    assert_eq!(last.len(), 2);
    assert!(advanced > 20, "frames keep coming ({advanced} advances)");
    // Your own stream opened off the frame, shows in your seat and reaches the bots.
    let own = app
        .world_mut()
        .query_filtered::<&VideoFeed, With<LocalParticipant>>()
        .iter(app.world())
        .map(|f| f.frames_taken)
        .next();
    assert!(
        own.is_some_and(|frames| frames > 0),
        "your self-view shows frames: {own:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !bots.iter().all(|b| {
        b.status()
            .received
            .get(&StreamId::new("viewer-cam").expect("valid"))
            .is_some_and(|r| r.frames > 0)
    }) {
        assert!(Instant::now() < deadline, "the bots receive your stream");
        app.update();
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(bots);
    drop(room.runtime);
}

/// A viewer's camera for measuring panels without rendering: 1280x720 at `eye` looking at
/// `target`.
fn measuring_camera(eye: Vec3, target: Vec3) -> (Camera, Transform) {
    let camera = holoroom::quality::measuring_camera(1280, 720);
    (camera, Transform::from_translation(eye).looking_at(target, Vec3::Y))
}

fn frames_and_layer(app: &mut App) -> Option<(u64, VideoLayer, LayerReason)> {
    app.world_mut()
        .query_filtered::<(&VideoFeed, &ViewQuality), Without<LocalParticipant>>()
        .iter(app.world())
        .next()
        .map(|(feed, quality)| (feed.frames_taken, quality.layer, quality.reason))
}

#[test]
fn a_panel_out_of_view_pauses_its_video_and_resumes_when_seen_again() {
    let room = room();
    let _bot = bot(&room, "bot-1");
    // A spectator with a free camera: the view decides what it downloads.
    let mut app = joined_app(&room, "watcher", true);
    app.add_plugins((TransformPlugin, holoroom::quality::plugin));
    run_until(&mut app, "the bot's video", |app| {
        frames_and_layer(app).is_some_and(|(frames, ..)| frames > 0)
    });
    let bot_at = app
        .world_mut()
        .query::<(&Participant, &GlobalTransform)>()
        .iter(app.world())
        .map(|(_, place)| place.translation())
        .next()
        .expect("the bot's place");
    let eye = bot_at + Vec3::new(0.0, 0.0, 3.0);
    let camera = app
        .world_mut()
        .spawn((ViewerCamera, measuring_camera(eye, bot_at)))
        .id();
    run_until(&mut app, "the panel measured in view", |app| {
        frames_and_layer(app)
            .is_some_and(|(_, layer, reason)| layer != VideoLayer::Off && matches!(reason, LayerReason::Size(_)))
    });

    // Turned away: after a moment the video pauses, and no frames come.
    let away = measuring_camera(eye, eye + Vec3::new(0.0, 0.0, 3.0));
    app.world_mut().entity_mut(camera).insert(away);
    run_until(&mut app, "the video paused", |app| {
        frames_and_layer(app)
            .is_some_and(|(_, layer, reason)| layer == VideoLayer::Off && reason == LayerReason::OutOfView)
    });
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_millis(400) {
        app.update();
        std::thread::sleep(Duration::from_millis(10));
    }
    let (paused_at, ..) = frames_and_layer(&mut app).expect("the feed");
    let hold = Instant::now();
    while hold.elapsed() < Duration::from_secs(1) {
        app.update();
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        frames_and_layer(&mut app).map(|(frames, ..)| frames),
        Some(paused_at),
        "no frames while out of view"
    );

    // Turned back: the picture returns.
    let back = measuring_camera(eye, bot_at);
    app.world_mut().entity_mut(camera).insert(back);
    let turned = Instant::now();
    run_until(&mut app, "frames again", |app| {
        frames_and_layer(app).is_some_and(|(frames, ..)| frames > paused_at)
    });
    println!("turned back: a picture after {:?}", turned.elapsed());
    drop(room.runtime);
}

#[test]
fn a_spectator_sees_the_bots_and_is_not_seen() {
    let room = room();
    let bots = [bot(&room, "bot-1"), bot(&room, "bot-2")];
    let mut app = joined_app(&room, "watcher", true);
    run_until(&mut app, "two live bots", |app| {
        app.world_mut()
            .query::<&VideoFeed>()
            .iter(app.world())
            .filter(|f| f.frames_taken > 0)
            .count()
            == 2
    });
    assert_eq!(
        app.world_mut()
            .query_filtered::<(), With<LocalParticipant>>()
            .iter(app.world())
            .count(),
        0,
        "a spectator has no seat"
    );
    for bot in &bots {
        let status = bot.status();
        assert_eq!(status.users.len(), 1, "each bot lists only the other: {status:?}");
        assert!(!status.users.iter().any(|u| u == "watcher"));
    }
    assert_eq!(room.server.snapshot().rooms[0].spectators, 1);
    assert!(app.world().get_resource::<Me>().is_some_and(|me| me.spectator));
    // Leaving forgets who you were in the room.
    app.world_mut().write_message(LeaveRoom);
    run_until(&mut app, "back at the login", |app| {
        *app.world().resource::<State<AppState>>().get() == AppState::Login
    });
    app.update();
    assert!(app.world().get_resource::<Me>().is_none(), "no identity outside a room");
    drop(bots);
    drop(room.runtime);
}

#[test]
fn moves_travel_both_ways_relative_to_seats() {
    let room = room();
    let mut app = joined_app(&room, "walker", false);
    let observer = Engine::new(EngineConfig::new(room.server.ws_url())).expect("engine");
    let who = user("observer");
    let token = room
        .server
        .keys()
        .mint(VideoGrant::participant("demo"), &who.user_id, None, 3600);
    observer.login_room(
        RoomId::new("demo").expect("valid"),
        token,
        who,
        holoroom_engine::protocol::LoginConfig { user_update: true },
    );
    run_until(&mut app, "in call and seeing the observer", |app| {
        app.world_mut()
            .query_filtered::<&Participant, Without<LocalParticipant>>()
            .iter(app.world())
            .any(|p| p.user_id.as_str() == "observer")
            && app
                .world_mut()
                .query_filtered::<(), With<LocalParticipant>>()
                .iter(app.world())
                .count()
                == 1
    });

    // The app's participant steps 1 m to the side of its seat: the observer hears of it.
    let seat = {
        let world = app.world_mut();
        let (seat, mut transform) = world
            .query_filtered::<(&Seat, &mut Transform), With<LocalParticipant>>()
            .single_mut(world)
            .expect("seated");
        let seat = seat.0;
        *transform = seat_transform(seat) * Transform::from_xyz(1.0, 0.0, 0.0);
        seat
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let pose = loop {
        assert!(Instant::now() < deadline, "the observer never saw the move");
        app.update();
        if let Ok(holoroom_engine::EngineEvent::PoseUpdate { user_id, pose, .. }) =
            observer.events().recv_timeout(Duration::from_millis(20))
            && user_id.as_str() == "walker"
        {
            break pose;
        }
    };
    let [x, y, z] = pose.position;
    assert!(
        (x - 1.0).abs() < 1e-4 && y.abs() < 1e-4 && z.abs() < 1e-4,
        "seat-relative: {pose:?}"
    );
    let local = app
        .world_mut()
        .query_filtered::<&Transform, With<LocalParticipant>>()
        .single(app.world())
        .expect("seated")
        .translation;
    assert!(
        local.distance(seat_transform(seat).translation) > 0.9,
        "the walker itself moved"
    );

    // The observer turns and steps back from its seat: the app moves its entity accordingly.
    let turn = Quat::from_rotation_y(0.5);
    observer.set_pose(Pose {
        position: [0.0, 0.0, 2.0],
        orientation: [turn.x, turn.y, turn.z, turn.w],
    });
    run_until(&mut app, "the observer's entity moved", |app| {
        app.world_mut()
            .query::<(&Participant, &Seat, &Transform)>()
            .iter(app.world())
            .any(|(p, seat, t)| {
                p.user_id.as_str() == "observer"
                    && t.translation
                        .distance((seat_transform(seat.0) * Transform::from_xyz(0.0, 0.0, 2.0)).translation)
                        < 1e-3
            })
    });
    drop(room.runtime);
}

#[test]
fn voices_come_from_where_people_are() {
    let room = room();
    let _bot = bot(&room, "singer");
    let mut app = joined_app(&room, "listener", false);
    run_until(&mut app, "the singer is heard", |app| {
        app.world_mut()
            .query::<(&Participant, &SpeakingLevel)>()
            .iter(app.world())
            .any(|(p, level)| p.user_id.as_str() == "singer" && level.speaking())
    });
    let (ear, right) = {
        let world = app.world_mut();
        let me = world
            .query_filtered::<&Transform, With<LocalParticipant>>()
            .single(world)
            .expect("seated");
        // Seated, you face the table (+Z of your seat): your right hand is -X.
        (me.translation, me.rotation * Vec3::NEG_X)
    };
    let place_singer = |app: &mut App, at: Vec3| {
        let world = app.world_mut();
        let mut query = world.query::<(&Participant, &mut Transform)>();
        for (participant, mut transform) in query.iter_mut(world) {
            if participant.user_id.as_str() == "singer" {
                transform.translation = at;
            }
        }
    };
    let heard = |app: &mut App| {
        // A few frames (and mixer blocks) for the gains to settle.
        for _ in 0..20 {
            app.update();
            std::thread::sleep(Duration::from_millis(10));
        }
        app.world().resource::<RoomAudio>().mixer().output_level()
    };

    place_singer(&mut app, ear + right * 3.0);
    let [left, right_level] = heard(&mut app);
    assert!(
        right_level > 0.05 && right_level > 3.0 * left,
        "on your right: {left} / {right_level}"
    );

    place_singer(&mut app, ear - right * 3.0);
    let [left, right_level] = heard(&mut app);
    assert!(
        left > 0.05 && left > 3.0 * right_level,
        "on your left: {left} / {right_level}"
    );

    // Further away is quieter.
    place_singer(&mut app, ear - right * 12.0);
    let [far, _] = heard(&mut app);
    assert!(far < left * 0.5, "12 m away: {far} vs 3 m: {left}");

    // Muting them silences them for you; they still show as speaking.
    let singer = app
        .world_mut()
        .query::<(Entity, &Participant)>()
        .iter(app.world())
        .find(|(_, p)| p.user_id.as_str() == "singer")
        .map(|(e, _)| e)
        .expect("singer");
    app.world_mut().entity_mut(singer).insert(Muted);
    let [left, right_level] = heard(&mut app);
    assert!(left < 1e-3 && right_level < 1e-3, "muted: {left} / {right_level}");
    assert!(app.world().get::<SpeakingLevel>(singer).is_some_and(|l| l.speaking()));
    drop(room.runtime);
}
