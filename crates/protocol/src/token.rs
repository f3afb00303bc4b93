//! Token claims: what a signed token says about who may enter which room with which rights.
//!
//! Tokens are JWTs (HS256) whose claims use LiveKit-compatible names, so existing
//! tooling reads them. Signing and verifying live in the server; this is the data.

use serde::{Deserialize, Serialize};

/// The `aud` every Holoroom token carries.
pub const TOKEN_AUDIENCE: &str = "holoroom";

/// The claims of a Holoroom access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    /// Issuer: the server (or tool) that signed it.
    pub iss: String,
    /// Audience: always [`TOKEN_AUDIENCE`].
    pub aud: String,
    /// Subject: the user ID; a login's user ID must equal it.
    pub sub: String,
    /// Display name; when present the room shows it instead of the name the client sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Issued at, unix seconds.
    pub iat: u64,
    /// Not before, unix seconds.
    pub nbf: u64,
    /// Expires at, unix seconds.
    pub exp: u64,
    /// Unique token ID.
    pub jti: String,
    pub video: VideoGrant,
}

/// What the token allows in its room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VideoGrant {
    /// The one room this token is for.
    pub room: String,
    #[serde(default)]
    pub room_join: bool,
    #[serde(default)]
    pub can_publish: bool,
    #[serde(default)]
    pub can_subscribe: bool,
    #[serde(default)]
    pub can_publish_data: bool,
    /// Sources this user may publish (`camera`, `screen_share`, `custom`); empty means all.
    #[serde(default)]
    pub can_publish_sources: Vec<String>,
    /// A spectator: never listed to others, may not publish.
    #[serde(default)]
    pub hidden: bool,
    #[serde(default)]
    pub room_admin: bool,
}

impl VideoGrant {
    /// A participant's grant: join, publish anything, subscribe, data.
    pub fn participant(room: impl Into<String>) -> Self {
        Self {
            room: room.into(),
            room_join: true,
            can_publish: true,
            can_subscribe: true,
            can_publish_data: true,
            can_publish_sources: Vec::new(),
            hidden: false,
            room_admin: false,
        }
    }

    /// A spectator's grant: join hidden and subscribe, nothing else.
    pub fn spectator(room: impl Into<String>) -> Self {
        Self {
            room: room.into(),
            room_join: true,
            can_publish: false,
            can_subscribe: true,
            can_publish_data: false,
            can_publish_sources: Vec::new(),
            hidden: true,
            room_admin: false,
        }
    }

    /// Whether publishing `source` is allowed (publishing at all, not hidden, and the source listed if a list is given).
    pub fn may_publish(&self, source: crate::StreamSource) -> bool {
        self.can_publish
            && !self.hidden
            && (self.can_publish_sources.is_empty()
                || self.can_publish_sources.iter().any(|s| s == source.grant_name()))
    }
}
