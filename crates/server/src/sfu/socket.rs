//! The SFU's shell: one UDP socket and one task that feeds the core datagrams, the time and
//! commands from signaling, and sends out what the core produces.

use std::net::SocketAddr;
use std::time::Instant;

use holoroom_protocol::VideoLayer;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use super::{Notice, PeerId, Sfu, SfuConfig, SfuCounters, SfuError};
use crate::rooms::{RoomStream, SessionId};

/// The largest datagram the SFU reads.
const MAX_DATAGRAM: usize = 2048;

enum Command {
    Publish {
        stream: RoomStream,
        owner: String,
        offer: String,
        reply: oneshot::Sender<Result<(PeerId, String), SfuError>>,
    },
    Subscribe {
        session: SessionId,
        stream: RoomStream,
        offer: String,
        layer: Option<VideoLayer>,
        reply: oneshot::Sender<Result<(PeerId, String), SfuError>>,
    },
    SetLayer(SessionId, RoomStream, VideoLayer),
    LayersSent(RoomStream, oneshot::Sender<Vec<VideoLayer>>),
    Publisher(RoomStream, oneshot::Sender<Option<PeerId>>),
    Levels(oneshot::Sender<Vec<(RoomStream, f32)>>),
    Unpublish(RoomStream),
    UnpublishPeer(RoomStream, PeerId),
    Unsubscribe(SessionId, RoomStream),
    DropSession(SessionId),
    Counters(oneshot::Sender<SfuCounters>),
    /// Close the socket and end the task (the server is stopping); answered once it is closed.
    Stop(oneshot::Sender<()>),
}

/// Signaling's handle on the running SFU. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SfuHandle {
    commands: mpsc::UnboundedSender<Command>,
    /// The address advertised to clients.
    public_addr: SocketAddr,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

impl SfuHandle {
    /// Binds `socket` (already bound) and starts the SFU task; `public_addr` is what clients are
    /// told. What the SFU tells signaling comes out of the returned receiver.
    pub fn start(
        socket: UdpSocket,
        public_ip: Option<std::net::IpAddr>,
        probe: Option<holoroom_protocol::timing::FrameProbe>,
        connect_deadline: std::time::Duration,
        dtls: super::dtls::DtlsStack,
    ) -> Result<(SfuHandle, mpsc::UnboundedReceiver<Notice>), SfuError> {
        let local_addr = socket
            .local_addr()
            .map_err(|e| SfuError::BadAddress(SocketAddr::from(([0, 0, 0, 0], 0)), e.to_string()))?;
        let public_addr = SocketAddr::new(public_ip.unwrap_or(local_addr.ip()), local_addr.port());
        let sfu = Sfu::new(SfuConfig {
            public_addr,
            keyframe_interval: std::time::Duration::from_millis(1000),
            probe,
            connect_deadline,
            dtls,
        })?;
        let (commands, rx) = mpsc::unbounded_channel();
        let (notices, notices_rx) = mpsc::unbounded_channel();
        tokio::spawn(run(socket, public_addr, sfu, rx, notices));
        Ok((SfuHandle { commands, public_addr }, notices_rx))
    }

    /// The address clients send media to.
    pub fn media_addr(&self) -> SocketAddr {
        self.public_addr
    }

    /// Connects `owner`'s publisher of `stream` (refused while another owner's connection
    /// publishes it); returns its connection's ID and the SDP answer.
    pub async fn publish(
        &self,
        stream: RoomStream,
        owner: String,
        offer: String,
    ) -> Result<(PeerId, String), SfuError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Publish {
                stream,
                owner,
                offer,
                reply,
            })
            .map_err(|_| SfuError::Stopped)?;
        answer.await.map_err(|_| SfuError::Stopped)?
    }

    /// Connects a subscriber of `stream`, its video starting at `layer` (or the layer the
    /// session asked for last); returns the SDP answer.
    pub async fn subscribe(
        &self,
        session: SessionId,
        stream: RoomStream,
        offer: String,
        layer: Option<VideoLayer>,
    ) -> Result<String, SfuError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Subscribe {
                session,
                stream,
                offer,
                layer,
                reply,
            })
            .map_err(|_| SfuError::Stopped)?;
        answer.await.map_err(|_| SfuError::Stopped)?.map(|(_, sdp)| sdp)
    }

    /// Sets the video layer `session` receives of `stream`.
    pub fn set_layer(&self, session: SessionId, stream: RoomStream, layer: VideoLayer) {
        let _ = self.commands.send(Command::SetLayer(session, stream, layer));
    }

    /// The video layers the publisher of `stream` sends now, lowest first.
    /// The connection publishing `stream` now, if any.
    pub async fn publisher(&self, stream: RoomStream) -> Result<Option<PeerId>, SfuError> {
        let (reply, publisher) = oneshot::channel();
        self.commands
            .send(Command::Publisher(stream, reply))
            .map_err(|_| SfuError::Stopped)?;
        publisher.await.map_err(|_| SfuError::Stopped)
    }

    pub async fn layers_sent(&self, stream: RoomStream) -> Result<Vec<VideoLayer>, SfuError> {
        let (reply, layers) = oneshot::channel();
        self.commands
            .send(Command::LayersSent(stream, reply))
            .map_err(|_| SfuError::Stopped)?;
        layers.await.map_err(|_| SfuError::Stopped)
    }

    /// The smoothed sound level (0..1) of every stream with a media connection.
    pub async fn levels(&self) -> Result<Vec<(RoomStream, f32)>, SfuError> {
        let (reply, levels) = oneshot::channel();
        self.commands
            .send(Command::Levels(reply))
            .map_err(|_| SfuError::Stopped)?;
        levels.await.map_err(|_| SfuError::Stopped)
    }

    pub fn unpublish(&self, stream: RoomStream) {
        let _ = self.commands.send(Command::Unpublish(stream));
    }

    /// Drops a publisher connection if it is still the one for `stream`.
    pub fn unpublish_peer(&self, stream: RoomStream, peer: PeerId) {
        let _ = self.commands.send(Command::UnpublishPeer(stream, peer));
    }

    pub fn unsubscribe(&self, session: SessionId, stream: RoomStream) {
        let _ = self.commands.send(Command::Unsubscribe(session, stream));
    }

    pub fn drop_session(&self, session: SessionId) {
        let _ = self.commands.send(Command::DropSession(session));
    }

    /// Ends the relay: its socket closes (so the port can be bound again) and every media
    /// connection with it. Returns once the socket is closed.
    pub async fn stop(&self) {
        let (done, closed) = oneshot::channel();
        if self.commands.send(Command::Stop(done)).is_ok() {
            let _ = closed.await;
        }
    }

    pub async fn counters(&self) -> Result<SfuCounters, SfuError> {
        let (reply, counters) = oneshot::channel();
        self.commands
            .send(Command::Counters(reply))
            .map_err(|_| SfuError::Stopped)?;
        counters.await.map_err(|_| SfuError::Stopped)
    }
}

async fn run(
    socket: UdpSocket,
    public_addr: SocketAddr,
    mut sfu: Sfu,
    mut commands: mpsc::UnboundedReceiver<Command>,
    notices: mpsc::UnboundedSender<Notice>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        while let Some(notice) = sfu.poll_notice() {
            let _ = notices.send(notice);
        }
        while let Some(transmit) = sfu.poll_transmit() {
            if let Err(err) = socket.send_to(&transmit.contents, transmit.destination).await {
                tracing::debug!(%err, to = %transmit.destination, "media send failed");
            }
        }
        let deadline = tokio::time::Instant::from_std(sfu.poll_timeout(Instant::now()));
        tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                // The destination is the advertised address: str0m matches it against its candidate.
                Ok((n, source)) => sfu.handle_receive(Instant::now(), source, public_addr, &buf[..n]),
                Err(err) => tracing::debug!(%err, "media receive failed"),
            },
            () = tokio::time::sleep_until(deadline) => sfu.handle_timeout(Instant::now()),
            command = commands.recv() => match command {
                None => return,
                Some(Command::Stop(done)) => {
                    drop(socket);
                    let _ = done.send(());
                    return;
                }
                Some(Command::Publish { stream, owner, offer, reply }) => {
                    let _ = reply.send(sfu.publish(Instant::now(), &stream, &owner, &offer));
                }
                Some(Command::Subscribe { session, stream, offer, layer, reply }) => {
                    let _ = reply.send(sfu.subscribe(Instant::now(), session, &stream, &offer, layer));
                }
                Some(Command::SetLayer(session, stream, layer)) => sfu.set_layer(Instant::now(), session, &stream, layer),
                Some(Command::Publisher(stream, reply)) => {
                    let _ = reply.send(sfu.publisher(&stream));
                }
                Some(Command::LayersSent(stream, reply)) => {
                    let _ = reply.send(sfu.layers_sent(Instant::now(), &stream));
                }
                Some(Command::Levels(reply)) => {
                    let _ = reply.send(sfu.levels(Instant::now()));
                }
                Some(Command::Unpublish(stream)) => sfu.unpublish(&stream),
                Some(Command::UnpublishPeer(stream, peer)) => sfu.unpublish_peer(&stream, peer),
                Some(Command::Unsubscribe(session, stream)) => sfu.unsubscribe(session, &stream),
                Some(Command::DropSession(session)) => sfu.drop_session(session),
                Some(Command::Counters(reply)) => {
                    let _ = reply.send(sfu.counters());
                }
            },
        }
    }
}
