//! Problems as sentences for people: what happened, and what to do about it.

use holoroom_engine::protocol::{ErrorCode, KickoutReason};
use holoroom_engine::{MediaError, RequestKind, RoomError, TokenError};

use crate::net::Problem;

/// What the overlay says about `problem`.
pub fn sentence(problem: &Problem) -> String {
    match problem {
        Problem::Room(error) => room(error),
        Problem::Retrying { error, retry_in } => {
            let why = match error {
                RoomError::Unreachable { url, reason } => {
                    format!(
                        "Can't reach the room server at {url}: {}.",
                        reason.trim_end_matches('.')
                    )
                }
                other => room(other),
            };
            format!("{why} Retrying in {}.", seconds(*retry_in))
        }
        Problem::Kickout(reason) => match reason {
            KickoutReason::DuplicateLogin => {
                "Your session ended because you joined from another window or device.".into()
            }
            KickoutReason::TokenExpired => {
                "Your session ended because your access token expired and could not be renewed. Join again.".into()
            }
            KickoutReason::Admin => "A room admin removed you from the room.".into(),
        },
        Problem::BadId(why) => format!("That name can't be used in a room: {why}. Pick another."),
        Problem::Publish { error, .. } => media("Your video", error),
        Problem::Play { stream_id, error } => media(&format!("The video {stream_id}"), error),
        Problem::Request {
            request: RequestKind::RenewToken,
            error,
        } => format!(
            "Your access token could not be renewed ({}); the call ends when it expires.",
            room(error).trim_end_matches('.')
        ),
        Problem::Request {
            request: RequestKind::SetPose,
            error,
        } => format!("Your place in the room was not sent: {}", room(error)),
        Problem::Request {
            request: RequestKind::SetVideoLayer,
            error,
        } => format!("The video quality could not be changed: {}", room(error)),
        Problem::Request {
            request: RequestKind::SendMessage,
            error,
        } => format!("Your chat message was not sent: {}", room(error)),
        Problem::Request {
            request: RequestKind::SetStreamMute,
            error,
        } => format!(
            "Others may not see that your microphone or camera is off: {}",
            room(error)
        ),
        Problem::Stream(why) => format!("Your camera stream could not start: {why}."),
    }
}

/// Whether joining again could help (the button then says Retry).
pub fn worth_retrying(problem: &Problem) -> bool {
    match problem {
        Problem::Kickout(KickoutReason::DuplicateLogin | KickoutReason::Admin) | Problem::BadId(_) => false,
        Problem::Room(RoomError::Refused(body)) => !matches!(
            body.code,
            ErrorCode::TokenInvalid
                | ErrorCode::TokenRoomMismatch
                | ErrorCode::TokenUserMismatch
                | ErrorCode::PermissionDenied
                | ErrorCode::UnsupportedVersion
        ),
        _ => true,
    }
}

fn room(error: &RoomError) -> String {
    match error {
        RoomError::Unreachable { url, reason } => format!(
            "Can't reach the room server at {url}: {}. Check the address and that the server runs.",
            reason.trim_end_matches('.')
        ),
        RoomError::Refused(body) => match body.code {
            ErrorCode::TokenExpired => "Your access token has expired. Get a new one and join again.".into(),
            ErrorCode::TokenNotYetValid => "Your access token is not valid yet; check this computer's clock.".into(),
            ErrorCode::TokenInvalid => "The room server did not accept your access token.".into(),
            ErrorCode::TokenRoomMismatch => "Your access token is for another room.".into(),
            ErrorCode::TokenUserMismatch => "Your access token is for another user name.".into(),
            ErrorCode::PermissionDenied => format!("You may not do that in this room: {}.", body.message),
            ErrorCode::RoomFull => "The room is full. Try again later.".into(),
            ErrorCode::TooManyRooms => "The room server has no room for another room. Try again later.".into(),
            ErrorCode::RateLimited => "Too many requests at once; slow down and try again.".into(),
            ErrorCode::ShuttingDown => "The room server is shutting down. Try again in a moment.".into(),
            ErrorCode::UnsupportedVersion => {
                "This app and the room server speak different versions. Update the app.".into()
            }
            ErrorCode::AlreadyLoggedIn => "You are already in a room; leave it first.".into(),
            _ => format!("The room server refused: {}.", body.message.trim_end_matches('.')),
        },
        RoomError::Closed => "The connection to the room server closed.".into(),
        RoomError::Timeout => "The room server did not answer in time. Check your network.".into(),
        RoomError::Protocol(what) => {
            format!("The room server sent something this app can't read ({what}). Is one of them out of date?")
        }
        RoomError::NotInRoom => "You are not in a room; join one first.".into(),
        RoomError::Token(error) => match error {
            TokenError::Unreachable { url, reason } => {
                format!("Can't get an access token from {url}: {reason}.")
            }
            TokenError::Refused { url, status } => format!("The token service at {url} said no ({status})."),
            other => format!("Can't get an access token: {other}."),
        },
    }
}

fn media(what: &str, error: &MediaError) -> String {
    match error {
        MediaError::Connection(_) | MediaError::Signaling(_) => {
            format!("{what} lost its connection; setting it up again.")
        }
        MediaError::Negotiation(why) => format!("{what} could not be set up ({why})."),
        MediaError::Codec(why) => format!("{what} could not be encoded or decoded ({why})."),
        MediaError::Capture(why) => format!("{what} could not be captured: {why}."),
        MediaError::Duplicate(_) => format!("{what} is already on."),
        MediaError::NotInRoom => "You are not in a room; join one first.".into(),
    }
}

/// "4 s", "0.4 s".
fn seconds(duration: std::time::Duration) -> String {
    let secs = duration.as_secs_f32();
    if secs >= 10.0 || secs.fract() == 0.0 {
        format!("{secs:.0} s")
    } else {
        format!("{secs:.1} s")
    }
}

#[cfg(test)]
mod tests {
    use holoroom_engine::protocol::{ErrorBody, StreamId};

    use super::*;

    #[test]
    fn problems_read_as_sentences_without_debug_output() {
        let cases = [
            Problem::Kickout(KickoutReason::DuplicateLogin),
            Problem::Kickout(KickoutReason::TokenExpired),
            Problem::Room(RoomError::Unreachable {
                url: "ws://10.0.0.1:7880/v1/ws".into(),
                reason: "Connection refused (os error 111)".into(),
            }),
            Problem::Room(RoomError::Refused(ErrorBody::new(
                ErrorCode::RoomFull,
                "room r is full",
            ))),
            Problem::Play {
                stream_id: StreamId::new("bob-cam").expect("valid"),
                error: MediaError::Connection("media connection Failed".into()),
            },
            Problem::Request {
                request: RequestKind::RenewToken,
                error: RoomError::Token(TokenError::Refused {
                    url: "http://h:80/v1/dev/token".into(),
                    status: "HTTP/1.1 503".into(),
                }),
            },
            Problem::Request {
                request: RequestKind::SendMessage,
                error: RoomError::Refused(ErrorBody::new(ErrorCode::RateLimited, "too many requests")),
            },
            Problem::Retrying {
                error: RoomError::Unreachable {
                    url: "ws://10.0.0.1:7880/v1/ws".into(),
                    reason: "Connection refused (os error 111)".into(),
                },
                retry_in: std::time::Duration::from_secs(4),
            },
        ];
        for problem in &cases {
            let text = sentence(problem);
            assert!(text.ends_with('.'), "{text}");
            assert!(text.chars().next().is_some_and(char::is_uppercase), "{text}");
            for debug in ["DuplicateLogin", "Failed", "RoomFull", "RenewToken", "Some("] {
                assert!(!text.contains(debug), "{text}");
            }
        }
        assert_eq!(
            sentence(&cases[0]),
            "Your session ended because you joined from another window or device."
        );
        assert!(sentence(&cases[2]).starts_with("Can't reach the room server at ws://10.0.0.1:7880/v1/ws:"));
        assert_eq!(
            sentence(&cases[7]),
            "Can't reach the room server at ws://10.0.0.1:7880/v1/ws: Connection refused (os error 111). Retrying in 4 s."
        );
    }

    #[test]
    fn retry_is_offered_only_where_it_can_help() {
        assert!(!worth_retrying(&Problem::Kickout(KickoutReason::DuplicateLogin)));
        assert!(worth_retrying(&Problem::Room(RoomError::Timeout)));
        assert!(!worth_retrying(&Problem::Room(RoomError::Refused(ErrorBody::new(
            ErrorCode::TokenInvalid,
            "bad"
        )))));
    }
}
