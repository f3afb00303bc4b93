//! Room, user and stream IDs: the one place where their rules are checked.
//!
//! An ID is 1 to N bytes of `A-Z a-z 0-9` and `- _ . ~ @ : + =`. Every ID that
//! crosses the wire is parsed through [`RoomId`], [`UserId`] or [`StreamId`], so a
//! value of one of these types is valid by construction.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a string is not a valid ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} ID is empty")]
    Empty { kind: IdKind },
    #[error("{kind} ID is {len} bytes long; the limit is {max}")]
    TooLong { kind: IdKind, len: usize, max: usize },
    #[error(
        "{kind} ID has a character that is not allowed ({found:?}) at byte {index}; use A-Z a-z 0-9 - _ . ~ @ : + ="
    )]
    InvalidChar { kind: IdKind, found: char, index: usize },
}

/// Which kind of ID an [`IdError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdKind {
    Room,
    User,
    Stream,
}

impl IdKind {
    /// The longest ID of this kind, in bytes.
    pub const fn max_len(self) -> usize {
        match self {
            IdKind::Room => 128,
            IdKind::User => 64,
            IdKind::Stream => 256,
        }
    }
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdKind::Room => "room",
            IdKind::User => "user",
            IdKind::Stream => "stream",
        })
    }
}

/// Whether `byte` may appear in an ID.
pub const fn is_id_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~' | b'@' | b':' | b'+' | b'=')
}

/// Checks `value` against the rules for `kind`.
pub fn validate_id(kind: IdKind, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if value.len() > kind.max_len() {
        return Err(IdError::TooLong {
            kind,
            len: value.len(),
            max: kind.max_len(),
        });
    }
    if let Some((index, found)) = value
        .char_indices()
        .find(|&(_, c)| !c.is_ascii() || !is_id_byte(c as u8))
    {
        return Err(IdError::InvalidChar { kind, found, index });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident, $kind:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const KIND: IdKind = $kind;

            /// Parses and validates an ID.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                validate_id(Self::KIND, &value)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(value: &str) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(value: &str) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A room, chosen by the app; at most 128 bytes.
    RoomId,
    IdKind::Room
);
id_type!(
    /// A user, unique across the server; at most 64 bytes.
    UserId,
    IdKind::User
);
id_type!(
    /// A published stream, owned by its publisher; at most 256 bytes.
    StreamId,
    IdKind::Stream
);

#[cfg(test)]
mod tests {
    use super::*;

    fn check(kind: IdKind, input: &str, expect: Result<(), IdError>) {
        assert_eq!(validate_id(kind, input), expect, "input {input:?}");
    }

    #[test]
    fn accepts_the_allowed_set_up_to_the_limit() {
        check(IdKind::User, "alice", Ok(()));
        check(IdKind::User, "a-b_c.d~e@f:g+h=i", Ok(()));
        check(IdKind::User, &"u".repeat(64), Ok(()));
        check(IdKind::Room, &"r".repeat(128), Ok(()));
        check(IdKind::Stream, &"s".repeat(256), Ok(()));
    }

    #[test]
    fn rejects_empty_long_and_foreign_characters() {
        check(IdKind::User, "", Err(IdError::Empty { kind: IdKind::User }));
        check(
            IdKind::User,
            &"u".repeat(65),
            Err(IdError::TooLong {
                kind: IdKind::User,
                len: 65,
                max: 64,
            }),
        );
        check(
            IdKind::Room,
            "lobby 1",
            Err(IdError::InvalidChar {
                kind: IdKind::Room,
                found: ' ',
                index: 5,
            }),
        );
        check(
            IdKind::Stream,
            "cam\u{0}",
            Err(IdError::InvalidChar {
                kind: IdKind::Stream,
                found: '\u{0}',
                index: 3,
            }),
        );
        check(
            IdKind::User,
            "zoë",
            Err(IdError::InvalidChar {
                kind: IdKind::User,
                found: 'ë',
                index: 2,
            }),
        );
    }

    #[test]
    fn deserializing_validates() {
        let ok: UserId = serde_json::from_str("\"bob\"").expect("valid id");
        assert_eq!(ok.as_str(), "bob");
        let err = serde_json::from_str::<UserId>("\"bo b\"").expect_err("space is not allowed");
        assert!(err.to_string().contains("not allowed"), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn valid_ids_round_trip(s in "[A-Za-z0-9_.~@:+=-]{1,64}") {
            let id = UserId::new(s.clone()).expect("generated from the allowed set");
            let json = serde_json::to_string(&id).expect("serialize");
            let back: UserId = serde_json::from_str(&json).expect("deserialize");
            proptest::prop_assert_eq!(back.as_str(), s.as_str());
        }

        #[test]
        fn arbitrary_strings_never_panic(s in ".*") {
            let _ = StreamId::new(s);
        }
    }
}
