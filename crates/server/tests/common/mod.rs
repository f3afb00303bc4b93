//! Shared by the server's integration tests: a real server on 127.0.0.1:0 and real WebSocket clients.
#![allow(dead_code)]

use std::time::Duration;

use holoroom_engine::signaling::{Signaling, SignalingError, SignalingEvent, login_request};
use holoroom_protocol::{
    Event, LoginConfig, LoginResponse, PublishRequest, Request, ResponseBody, RoomId, StreamId, StreamSource, UserId,
    UserInfo, VideoGrant,
};
use holoroom_server::{Server, ServerConfig, SigningKey, TokenKeys};
use tokio::sync::mpsc;

pub const SECRET: &[u8] = b"integration-test-secret-0123456789";

pub fn keys() -> TokenKeys {
    TokenKeys::new(SigningKey::new("k1", SECRET.to_vec())).with_leeway(0)
}

pub fn config() -> ServerConfig {
    let mut config = ServerConfig::new(keys());
    config.reconnect_grace = Duration::from_millis(300);
    config
}

pub async fn start(config: ServerConfig) -> Server {
    Server::bind("127.0.0.1:0", config)
        .await
        .expect("server binds a loopback port")
}

pub fn room(id: &str) -> RoomId {
    RoomId::new(id).expect("test room IDs are valid")
}

pub fn user(id: &str) -> UserId {
    UserId::new(id).expect("test user IDs are valid")
}

pub fn stream(id: &str) -> StreamId {
    StreamId::new(id).expect("test stream IDs are valid")
}

pub fn token(server: &Server, room_id: &str, user_id: &str) -> String {
    server
        .keys()
        .mint(VideoGrant::participant(room_id), &user(user_id), None, 3600)
}

pub fn spectator_token(server: &Server, room_id: &str, user_id: &str) -> String {
    server
        .keys()
        .mint(VideoGrant::spectator(room_id), &user(user_id), None, 3600)
}

/// One connected client that records every event it receives.
pub struct Client {
    pub signaling: Signaling,
    pub events: mpsc::UnboundedReceiver<SignalingEvent>,
    /// Every event received so far, with its seq.
    pub seen: Vec<(u64, Event)>,
    pub closed: Option<(Option<u16>, String)>,
    pub login: Option<LoginResponse>,
}

pub const WAIT: Duration = Duration::from_secs(5);

impl Client {
    pub async fn connect(server: &Server) -> Client {
        let (signaling, events) = Signaling::connect(&server.ws_url()).await.expect("client connects");
        Client {
            signaling,
            events,
            seen: Vec::new(),
            closed: None,
            login: None,
        }
    }

    /// Connects and logs in as a participant.
    pub async fn join(server: &Server, room_id: &str, user_id: &str, user_update: bool) -> Client {
        let mut client = Client::connect(server).await;
        client
            .login_with(room_id, user_id, token(server, room_id, user_id), user_update)
            .await
            .expect("login succeeds");
        client
    }

    pub async fn login_with(
        &mut self,
        room_id: &str,
        user_id: &str,
        token: String,
        user_update: bool,
    ) -> Result<LoginResponse, SignalingError> {
        let response = self
            .signaling
            .login(login_request(
                &room(room_id),
                &token,
                &UserInfo {
                    user_id: user(user_id),
                    user_name: format!("{user_id} name"),
                },
                &LoginConfig { user_update },
                None,
            ))
            .await?;
        self.login = Some(response.clone());
        Ok(response)
    }

    pub async fn publish(&self, stream_id: &str) -> Result<ResponseBody, SignalingError> {
        self.publish_media(stream_id, None).await
    }

    /// Publishes `stream_id` as media connection `media_id`.
    pub async fn publish_media(&self, stream_id: &str, media_id: Option<u64>) -> Result<ResponseBody, SignalingError> {
        self.signaling
            .request(Request::StartPublishing(PublishRequest {
                stream_id: stream(stream_id),
                source: StreamSource::Camera,
                extra_info: format!("extra of {stream_id}"),
                mute: Default::default(),
                sdp_offer: None,
                media_id,
            }))
            .await
    }

    /// Publishes `stream_id` with an SDP offer made elsewhere (another WebRTC stack's).
    pub async fn publish_offer(&self, stream_id: &str, sdp: String) -> Result<ResponseBody, SignalingError> {
        self.signaling
            .request(Request::StartPublishing(PublishRequest {
                stream_id: stream(stream_id),
                source: StreamSource::Custom,
                extra_info: String::new(),
                mute: Default::default(),
                sdp_offer: Some(sdp),
                media_id: None,
            }))
            .await
    }

    pub async fn stop_publishing(&self, stream_id: &str) -> Result<ResponseBody, SignalingError> {
        self.stop_publishing_media(stream_id, None).await
    }

    /// Stops `stream_id`, naming media connection `media_id`.
    pub async fn stop_publishing_media(
        &self,
        stream_id: &str,
        media_id: Option<u64>,
    ) -> Result<ResponseBody, SignalingError> {
        self.signaling
            .request(Request::StopPublishing {
                stream_id: stream(stream_id),
                media_id,
            })
            .await
    }

    fn record(&mut self, event: SignalingEvent) -> Option<Event> {
        match event {
            SignalingEvent::Event { seq, event } => {
                self.seen.push((seq, event.clone()));
                Some(event)
            }
            SignalingEvent::Closed { code, reason } => {
                self.closed = Some((code, reason));
                None
            }
        }
    }

    /// The next event, failing the test if none comes within [`WAIT`].
    pub async fn next_event(&mut self) -> Event {
        let event = tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("an event arrives in time")
            .expect("event channel open");
        match self.record(event) {
            Some(event) => event,
            None => panic!("connection closed while waiting for an event: {:?}", self.closed),
        }
    }

    /// Waits for the socket to close and returns its close code.
    pub async fn closed(&mut self) -> Option<u16> {
        while self.closed.is_none() {
            let event = tokio::time::timeout(WAIT, self.events.recv())
                .await
                .expect("the socket closes in time")
                .expect("event channel open until closed");
            self.record(event);
        }
        self.closed.as_ref().and_then(|(code, _)| *code)
    }

    /// Collects whatever arrives within `quiet` of silence.
    pub async fn drain(&mut self, quiet: Duration) -> Vec<Event> {
        let mut out = Vec::new();
        while let Ok(Some(event)) = tokio::time::timeout(quiet, self.events.recv()).await {
            if let Some(event) = self.record(event) {
                out.push(event);
            }
        }
        out
    }

    /// Asserts sequence numbers ran 1, 2, 3, ... without gaps.
    pub fn assert_seq_without_gaps(&self) {
        for (i, (seq, _)) in self.seen.iter().enumerate() {
            assert_eq!(*seq, i as u64 + 1, "seq gap in {:?}", self.seen);
        }
    }
}

/// A GET over a plain TCP connection with extra header lines (each ending in CRLF): the
/// status code, the response's header lines (lowercased) and its body.
pub async fn http_get(server: &Server, path: &str, headers: &str) -> (u16, String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .expect("connects");
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{headers}\r\n");
    tcp.write_all(request.as_bytes()).await.expect("writes");
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.expect("reads");
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
    let head = String::from_utf8_lossy(&response[..split]).to_lowercase();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head, response[split..].to_vec())
}
