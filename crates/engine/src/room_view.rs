//! What a client knows of its room: users and streams, kept from the login snapshot and the
//! events after it. After a reconnect the new snapshot is compared with what the app was
//! told, and only the differences become events, so a network blip does not flicker the room.

use std::collections::BTreeMap;

use holoroom_protocol::{Event, RoomId, StreamId, StreamInfo, UpdateType, UserId, UserInfo};

/// What one server event does to the room as the app knows it.
#[derive(Debug)]
pub(crate) enum Followed {
    /// Consistent: report this (if anything); `kicked` when it removes this client.
    Report {
        event: Option<crate::EngineEvent>,
        kicked: bool,
    },
    /// It contradicts what the app was told, and is ignored.
    Contradicts,
}

/// Users and streams as the app has been told them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RoomView {
    users: BTreeMap<UserId, UserInfo>,
    streams: BTreeMap<StreamId, StreamInfo>,
    /// The room's life the chat numbers below count in, and the newest message reported: a
    /// listing after a reconnect skips up to it.
    room_instance: u64,
    last_message: u64,
}

impl RoomView {
    pub fn users(&self) -> impl Iterator<Item = &UserInfo> {
        self.users.values()
    }

    pub fn streams(&self) -> impl Iterator<Item = &StreamInfo> {
        self.streams.values()
    }

    /// Replaces the view with a snapshot and returns the events that turn the old view into it:
    /// stream deletions, user deletions, user additions, stream additions, extra-info changes, mute changes.
    pub fn reset_to(&mut self, room_id: &RoomId, users: &[UserInfo], streams: &[StreamInfo]) -> Vec<Event> {
        let new_users: BTreeMap<UserId, UserInfo> = users.iter().map(|u| (u.user_id.clone(), u.clone())).collect();
        let new_streams: BTreeMap<StreamId, StreamInfo> =
            streams.iter().map(|s| (s.stream_id.clone(), s.clone())).collect();
        let mut events = Vec::new();
        let mut push = |update, list: Vec<StreamInfo>| {
            if !list.is_empty() {
                events.push(Event::RoomStreamUpdate {
                    room_id: room_id.clone(),
                    update,
                    streams: list,
                });
            }
        };

        // A stream whose publisher changed counts as deleted and added again.
        let same_stream = |old: &StreamInfo, new: &StreamInfo| old.user == new.user && old.source == new.source;
        let gone_streams: Vec<StreamInfo> = self
            .streams
            .values()
            .filter(|old| new_streams.get(&old.stream_id).is_none_or(|new| !same_stream(old, new)))
            .cloned()
            .collect();
        push(UpdateType::Delete, gone_streams);

        let mut user_events = Vec::new();
        let gone_users: Vec<UserInfo> = self
            .users
            .values()
            .filter(|old| new_users.get(&old.user_id) != Some(old))
            .cloned()
            .collect();
        let added_users: Vec<UserInfo> = new_users
            .values()
            .filter(|new| self.users.get(&new.user_id) != Some(new))
            .cloned()
            .collect();
        for (update, list) in [(UpdateType::Delete, gone_users), (UpdateType::Add, added_users)] {
            if !list.is_empty() {
                user_events.push(Event::RoomUserUpdate {
                    room_id: room_id.clone(),
                    update,
                    users: list,
                });
            }
        }

        let added_streams: Vec<StreamInfo> = new_streams
            .values()
            .filter(|new| {
                self.streams
                    .get(&new.stream_id)
                    .is_none_or(|old| !same_stream(old, new))
            })
            .cloned()
            .collect();
        // The same streams whose `differ` says they changed.
        let changed = |differ: fn(&StreamInfo, &StreamInfo) -> bool| -> Vec<StreamInfo> {
            new_streams
                .values()
                .filter(|new| {
                    self.streams
                        .get(&new.stream_id)
                        .is_some_and(|old| same_stream(old, new) && differ(old, new))
                })
                .cloned()
                .collect()
        };
        let changed_extra = changed(|old, new| old.extra_info != new.extra_info);
        let changed_mute = changed(|old, new| old.mute != new.mute);
        let mut tail = Vec::new();
        if !added_streams.is_empty() {
            tail.push(Event::RoomStreamUpdate {
                room_id: room_id.clone(),
                update: UpdateType::Add,
                streams: added_streams,
            });
        }
        if !changed_extra.is_empty() {
            tail.push(Event::StreamExtraInfoUpdate {
                room_id: room_id.clone(),
                streams: changed_extra,
            });
        }
        if !changed_mute.is_empty() {
            tail.push(Event::StreamMuteUpdate {
                room_id: room_id.clone(),
                streams: changed_mute,
            });
        }

        self.users = new_users;
        self.streams = new_streams;
        events.extend(user_events);
        events.extend(tail);
        events
    }

    /// Applies a server event to the view. Returns false for an event that contradicts it
    /// (a duplicate add or an unknown delete), which is then not passed on.
    pub fn apply(&mut self, event: &Event) -> bool {
        match event {
            Event::RoomUserUpdate { update, users, .. } => users.iter().all(|user| match update {
                UpdateType::Add => self.users.insert(user.user_id.clone(), user.clone()).is_none(),
                UpdateType::Delete => self.users.remove(&user.user_id).is_some(),
            }),
            Event::RoomStreamUpdate { update, streams, .. } => streams.iter().all(|stream| match update {
                UpdateType::Add => self.streams.insert(stream.stream_id.clone(), stream.clone()).is_none(),
                UpdateType::Delete => self.streams.remove(&stream.stream_id).is_some(),
            }),
            Event::StreamExtraInfoUpdate { streams, .. } | Event::StreamMuteUpdate { streams, .. } => {
                for stream in streams {
                    self.streams.insert(stream.stream_id.clone(), stream.clone());
                }
                true
            }
            _ => true,
        }
    }

    pub fn clear(&mut self) {
        self.users.clear();
        self.streams.clear();
        self.room_instance = 0;
        self.last_message = 0;
    }

    /// Whether a chat message is news (not reported yet), noting it if it is.
    fn fresh_message(&mut self, id: u64) -> bool {
        let fresh = id > self.last_message;
        self.last_message = self.last_message.max(id);
        fresh
    }
}

impl RoomView {
    /// A login's snapshot as events: everything on a first login, only the differences after a
    /// reconnect; then every member's pose.
    pub(crate) fn snapshot_events(
        &mut self,
        room_id: &RoomId,
        response: &holoroom_protocol::LoginResponse,
    ) -> Vec<crate::EngineEvent> {
        let changes = self.reset_to(room_id, &response.users, &response.streams);
        let poses = response.poses.iter().map(|user_pose| crate::EngineEvent::PoseUpdate {
            room_id: room_id.clone(),
            user_id: user_pose.user_id.clone(),
            pose: user_pose.pose,
        });
        // Joining (not coming back): what the room lists was said before you came.
        let earlier = self.room_instance == 0;
        // A room that started afresh (emptied, or its server restarted) numbers from 1 again.
        if response.room_instance != self.room_instance {
            self.room_instance = response.room_instance;
            self.last_message = 0;
        }
        let messages: Vec<crate::EngineEvent> = response
            .messages
            .iter()
            .filter(|message| self.fresh_message(message.id))
            .map(|message| crate::EngineEvent::RoomMessage {
                room_id: room_id.clone(),
                message: message.clone(),
                earlier,
            })
            .collect();
        changes
            .into_iter()
            .filter_map(crate::EngineEvent::from_server)
            .chain(poses)
            .chain(messages)
            .collect()
    }

    /// Applies a server event; a kick-out also forgets the room.
    pub(crate) fn follow(&mut self, event: Event) -> Followed {
        let kicked = matches!(
            event,
            Event::RoomStateChanged {
                reason: holoroom_protocol::RoomStateReason::Kickout,
                ..
            }
        );
        if let Event::RoomMessage { message, .. } = &event
            && !self.fresh_message(message.id)
        {
            return Followed::Report {
                event: None,
                kicked: false,
            };
        }
        if !self.apply(&event) {
            tracing::warn!(?event, "event contradicts the room view; ignored");
            return Followed::Contradicts;
        }
        let event = crate::EngineEvent::from_server(event);
        if kicked {
            self.clear();
        }
        Followed::Report { event, kicked }
    }
}

#[cfg(test)]
mod tests {
    use holoroom_protocol::StreamSource;

    use super::*;

    fn user(id: &str) -> UserInfo {
        UserInfo {
            user_id: UserId::new(id).expect("valid"),
            user_name: id.to_uppercase(),
        }
    }

    fn stream(id: &str, owner: &str, extra: &str) -> StreamInfo {
        StreamInfo {
            stream_id: StreamId::new(id).expect("valid"),
            user: user(owner),
            source: StreamSource::Camera,
            extra_info: extra.into(),
            mute: Default::default(),
        }
    }

    fn room() -> RoomId {
        RoomId::new("r").expect("valid")
    }

    #[test]
    fn a_first_snapshot_adds_everything() {
        let mut view = RoomView::default();
        let events = view.reset_to(&room(), &[user("a"), user("b")], &[stream("a-cam", "a", "")]);
        assert_eq!(
            events,
            vec![
                Event::RoomUserUpdate {
                    room_id: room(),
                    update: UpdateType::Add,
                    users: vec![user("a"), user("b")]
                },
                Event::RoomStreamUpdate {
                    room_id: room(),
                    update: UpdateType::Add,
                    streams: vec![stream("a-cam", "a", "")]
                },
            ]
        );
    }

    #[test]
    fn the_same_snapshot_again_is_silent() {
        let mut view = RoomView::default();
        view.reset_to(&room(), &[user("a")], &[stream("a-cam", "a", "x")]);
        assert!(
            view.reset_to(&room(), &[user("a")], &[stream("a-cam", "a", "x")])
                .is_empty()
        );
    }

    #[test]
    fn only_differences_are_reported_in_a_safe_order() {
        let mut view = RoomView::default();
        view.reset_to(
            &room(),
            &[user("a"), user("b")],
            &[stream("a-cam", "a", "x"), stream("b-cam", "b", "")],
        );
        let events = view.reset_to(
            &room(),
            &[user("a"), user("c")],
            &[stream("a-cam", "a", "y"), stream("c-cam", "c", "")],
        );
        assert_eq!(
            events,
            vec![
                Event::RoomStreamUpdate {
                    room_id: room(),
                    update: UpdateType::Delete,
                    streams: vec![stream("b-cam", "b", "")]
                },
                Event::RoomUserUpdate {
                    room_id: room(),
                    update: UpdateType::Delete,
                    users: vec![user("b")]
                },
                Event::RoomUserUpdate {
                    room_id: room(),
                    update: UpdateType::Add,
                    users: vec![user("c")]
                },
                Event::RoomStreamUpdate {
                    room_id: room(),
                    update: UpdateType::Add,
                    streams: vec![stream("c-cam", "c", "")]
                },
                Event::StreamExtraInfoUpdate {
                    room_id: room(),
                    streams: vec![stream("a-cam", "a", "y")]
                },
            ]
        );
    }

    #[test]
    fn a_mute_switched_during_a_blip_is_one_mute_update() {
        let mut view = RoomView::default();
        view.reset_to(&room(), &[user("a")], &[stream("a-cam", "a", "x")]);
        let muted = StreamInfo {
            mute: holoroom_protocol::StreamMute {
                audio: true,
                video: false,
            },
            ..stream("a-cam", "a", "x")
        };
        let events = view.reset_to(&room(), &[user("a")], std::slice::from_ref(&muted));
        assert_eq!(
            events,
            vec![Event::StreamMuteUpdate {
                room_id: room(),
                streams: vec![muted.clone()]
            }]
        );
        assert_eq!(view.streams().next(), Some(&muted));
    }

    #[test]
    fn contradicting_events_are_flagged() {
        let mut view = RoomView::default();
        let add = Event::RoomUserUpdate {
            room_id: room(),
            update: UpdateType::Add,
            users: vec![user("a")],
        };
        assert!(view.apply(&add));
        assert!(!view.apply(&add), "a duplicate add");
        let delete = Event::RoomStreamUpdate {
            room_id: room(),
            update: UpdateType::Delete,
            streams: vec![stream("ghost", "a", "")],
        };
        assert!(!view.apply(&delete), "an unknown delete");
    }
}
