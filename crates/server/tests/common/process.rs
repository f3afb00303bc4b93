//! A `holoroom-server` process and bots with tokens it accepts: shared by the restart test and
//! the chaos bench (which includes this file by path).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use holoroom_engine::bot::{Bot, BotConfig};
use holoroom_engine::protocol::{RoomId, UserId, UserInfo, VideoGrant};
use holoroom_engine::{StreamConfig, TokenSource};
use holoroom_server::{SigningKey, TokenKeys};

/// Starts `holoroom-server serve --listen <listen> <args>` signing with `secret`, with extra
/// environment `env`, and returns once it says it listens.
pub fn start_server(listen: &str, secret: &str, args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_holoroom-server"))
        .args(["serve", "--listen", listen])
        .args(args)
        .env("HOLOROOM_SECRET", secret)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the server starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the server says where it listens");
    assert!(line.starts_with("Holoroom server on"), "{line}");
    child
}

/// A bot `name` in `room` of the server at `url`, publishing the test pattern at 320x180 and
/// `fps`, with a token signed by `secret`.
pub fn bot(url: &str, secret: &str, room: &str, name: &str, fps: f32) -> Bot {
    let keys = TokenKeys::new(SigningKey::new("k1", secret.as_bytes().to_vec()));
    let user_id = UserId::new(name).expect("valid");
    let token = keys.mint(VideoGrant::participant(room), &user_id, None, 7200);
    Bot::start(BotConfig {
        server_url: url.to_owned(),
        room_id: RoomId::new(room).expect("valid"),
        user: UserInfo {
            user_id,
            user_name: name.to_uppercase(),
        },
        token: TokenSource::Fixed(token),
        publish: Some(StreamConfig::test_pattern(320, 180, fps)),
        plays: true,
    })
    .expect("bot starts")
}
