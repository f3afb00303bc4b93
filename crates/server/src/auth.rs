//! Access tokens: HS256 JWTs signed and verified with the server's keys.
//!
//! The algorithm is pinned: a token whose header names anything but `HS256` is
//! refused before any key is touched. Every token must name its key with `kid`,
//! so keys can rotate: one key signs, older ones may still verify.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use holoroom_protocol::{ErrorBody, ErrorCode, TOKEN_AUDIENCE, TokenClaims, UserId, VideoGrant};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The longest token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// The only algorithm accepted.
const ALG: &str = "HS256";

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed: {0}")]
    Malformed(String),
    #[error("token algorithm {0:?} is not accepted; only HS256 is")]
    Algorithm(String),
    #[error("token names no key (kid)")]
    MissingKeyId,
    #[error("token is signed with an unknown key {0:?}")]
    UnknownKey(String),
    #[error("token signature does not match")]
    BadSignature,
    #[error("token is for audience {0:?}, not holoroom")]
    Audience(String),
    #[error("token is issued by {0:?}, which this server does not trust")]
    Issuer(String),
    #[error("token expired at {exp} (now {now})")]
    Expired { exp: u64, now: u64 },
    #[error("token is not valid before {nbf} (now {now})")]
    NotYetValid { nbf: u64, now: u64 },
    #[error("token requires header extensions this server does not know: {0}")]
    CriticalExtension(String),
}

impl TokenError {
    pub fn code(&self) -> ErrorCode {
        match self {
            TokenError::Expired { .. } => ErrorCode::TokenExpired,
            TokenError::NotYetValid { .. } => ErrorCode::TokenNotYetValid,
            _ => ErrorCode::TokenInvalid,
        }
    }
}

impl From<TokenError> for ErrorBody {
    fn from(err: TokenError) -> Self {
        ErrorBody::new(err.code(), err.to_string())
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One HMAC key with its ID.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    secret: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    pub fn new(kid: impl Into<String>, secret: impl Into<Vec<u8>>) -> Self {
        Self {
            kid: kid.into(),
            secret: secret.into(),
        }
    }

    /// A fresh random 32-byte key, for dev mode.
    pub fn generate(kid: impl Into<String>) -> Self {
        let mut secret = vec![0u8; 32];
        rand::rng().fill(&mut secret[..]);
        Self::new(kid, secret)
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.secret).expect("HMAC accepts keys of any length")
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    /// Extensions the token says must be understood (RFC 7515 §4.1.11); this server knows none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    crit: Option<serde_json::Value>,
}

/// Signs new tokens and verifies presented ones.
#[derive(Debug, Clone)]
pub struct TokenKeys {
    /// The key new tokens are signed with.
    signing: SigningKey,
    /// Older keys still accepted for verification.
    previous: Vec<SigningKey>,
    issuer: String,
    /// Allowed clock skew, in seconds (at most 60).
    leeway: u64,
}

impl TokenKeys {
    pub const DEFAULT_ISSUER: &'static str = "holoroom";
    pub const MAX_LEEWAY: u64 = 60;

    pub fn new(signing: SigningKey) -> Self {
        Self {
            signing,
            previous: Vec::new(),
            issuer: Self::DEFAULT_ISSUER.into(),
            leeway: 30,
        }
    }

    pub fn with_previous(mut self, keys: impl IntoIterator<Item = SigningKey>) -> Self {
        self.previous.extend(keys);
        self
    }

    pub fn with_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = issuer.into();
        self
    }

    /// Clock skew allowed on `exp`, `nbf` and `iat`, capped at [`Self::MAX_LEEWAY`].
    pub fn with_leeway(mut self, seconds: u64) -> Self {
        self.leeway = seconds.min(Self::MAX_LEEWAY);
        self
    }

    pub fn leeway(&self) -> u64 {
        self.leeway
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Claims for `user` in `room` valid from now for `ttl_secs`.
    pub fn claims(&self, grant: VideoGrant, user: &UserId, name: Option<String>, ttl_secs: u64) -> TokenClaims {
        self.claims_at(unix_now(), grant, user, name, ttl_secs)
    }

    /// Claims issued at `now` (unix seconds): for a server whose clock is not the machine's.
    pub fn claims_at(
        &self,
        now: u64,
        grant: VideoGrant,
        user: &UserId,
        name: Option<String>,
        ttl_secs: u64,
    ) -> TokenClaims {
        let mut jti = [0u8; 12];
        rand::rng().fill(&mut jti);
        TokenClaims {
            iss: self.issuer.clone(),
            aud: TOKEN_AUDIENCE.into(),
            sub: user.to_string(),
            name,
            iat: now,
            nbf: now,
            exp: now.saturating_add(ttl_secs),
            jti: URL_SAFE_NO_PAD.encode(jti),
            video: grant,
        }
    }

    /// Signs `claims` with the current key.
    pub fn sign(&self, claims: &TokenClaims) -> String {
        let header = Header {
            alg: ALG.into(),
            kid: Some(self.signing.kid.clone()),
            typ: Some("JWT".into()),
            crit: None,
        };
        let header = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).expect("header serializes"));
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialize"));
        let signing_input = format!("{header}.{payload}");
        let mut mac = self.signing.mac();
        mac.update(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{signature}")
    }

    /// Mints a token in one step.
    pub fn mint(&self, grant: VideoGrant, user: &UserId, name: Option<String>, ttl_secs: u64) -> String {
        self.sign(&self.claims(grant, user, name, ttl_secs))
    }

    /// Mints a token issued at `now` (unix seconds, as a [`crate::Clock`] tells it).
    pub fn mint_at(&self, now: u64, grant: VideoGrant, user: &UserId, name: Option<String>, ttl_secs: u64) -> String {
        self.sign(&self.claims_at(now, grant, user, name, ttl_secs))
    }

    /// Verifies signature, algorithm, key, audience, issuer and times against `now` (unix seconds).
    pub fn verify(&self, token: &str, now: u64) -> Result<TokenClaims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed(format!(
                "{} bytes long; the limit is {MAX_TOKEN_BYTES}",
                token.len()
            )));
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed("not three dot-separated parts".into()));
        };
        let decode = |part: &str, what: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|e| TokenError::Malformed(format!("{what} is not base64url: {e}")))
        };
        let header: Header = serde_json::from_slice(&decode(header_b64, "header")?)
            .map_err(|e| TokenError::Malformed(format!("header is not readable: {e}")))?;
        if header.alg != ALG {
            return Err(TokenError::Algorithm(header.alg));
        }
        if let Some(crit) = header.crit {
            return Err(TokenError::CriticalExtension(crit.to_string()));
        }
        let kid = header.kid.ok_or(TokenError::MissingKeyId)?;
        let key = std::iter::once(&self.signing)
            .chain(&self.previous)
            .find(|k| k.kid == kid)
            .ok_or(TokenError::UnknownKey(kid))?;
        let signature = decode(signature_b64, "signature")?;
        let mut mac = key.mac();
        mac.update(header_b64.as_bytes());
        mac.update(b".");
        mac.update(payload_b64.as_bytes());
        mac.verify_slice(&signature).map_err(|_| TokenError::BadSignature)?;

        let claims: TokenClaims = serde_json::from_slice(&decode(payload_b64, "payload")?)
            .map_err(|e| TokenError::Malformed(format!("claims are not readable: {e}")))?;
        if claims.aud != TOKEN_AUDIENCE {
            return Err(TokenError::Audience(claims.aud));
        }
        if claims.iss != self.issuer {
            return Err(TokenError::Issuer(claims.iss));
        }
        if claims.exp.saturating_add(self.leeway) <= now {
            return Err(TokenError::Expired { exp: claims.exp, now });
        }
        let not_before = claims.nbf.max(claims.iat);
        if not_before > now.saturating_add(self.leeway) {
            return Err(TokenError::NotYetValid { nbf: not_before, now });
        }
        Ok(claims)
    }

    /// When a verified token stops being accepted, unix seconds (its `exp` plus the leeway).
    pub fn expires_at(&self, claims: &TokenClaims) -> u64 {
        claims.exp.saturating_add(self.leeway)
    }
}

/// Parses a `kid=secret` pair as given on the command line.
pub fn parse_key(text: &str) -> Result<SigningKey, String> {
    let (kid, secret) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not KID=SECRET"))?;
    if kid.is_empty() || secret.len() < 16 {
        return Err("a key needs a non-empty ID and a secret of at least 16 bytes".into());
    }
    Ok(SigningKey::new(kid, secret.as_bytes().to_vec()))
}

/// A guest user ID (`guest-` and 8 hex digits) for dev mode.
pub fn guest_user_id() -> UserId {
    let n: u32 = rand::rng().random();
    UserId::new(format!("guest-{n:08x}")).expect("guest IDs use allowed characters")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new(SigningKey::new("k1", b"0123456789abcdef0123".to_vec())).with_leeway(0)
    }

    #[test]
    fn minted_tokens_verify() {
        let keys = keys();
        let user = UserId::new("alice").expect("valid");
        let token = keys.mint(VideoGrant::participant("lobby"), &user, Some("Alice".into()), 60);
        let claims = keys.verify(&token, unix_now()).expect("fresh token verifies");
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.video.room, "lobby");
    }

    #[test]
    fn rotated_keys_still_verify() {
        let old = keys();
        let user = UserId::new("bob").expect("valid");
        let token = old.mint(VideoGrant::participant("r"), &user, None, 60);
        let new = TokenKeys::new(SigningKey::new("k2", b"another-secret-of-length".to_vec()))
            .with_previous([SigningKey::new("k1", b"0123456789abcdef0123".to_vec())]);
        assert!(new.verify(&token, unix_now()).is_ok());
        let stranger = TokenKeys::new(SigningKey::new("k2", b"another-secret-of-length".to_vec()));
        assert_eq!(
            stranger.verify(&token, unix_now()),
            Err(TokenError::UnknownKey("k1".into()))
        );
    }

    #[test]
    fn times_are_checked_with_leeway() {
        let keys = keys().with_leeway(10);
        let user = UserId::new("carol").expect("valid");
        let claims = keys.claims(VideoGrant::participant("r"), &user, None, 5);
        let token = keys.sign(&claims);
        assert!(keys.verify(&token, claims.exp + 9).is_ok());
        assert!(matches!(
            keys.verify(&token, claims.exp + 10),
            Err(TokenError::Expired { .. })
        ));
        assert!(matches!(
            keys.verify(&token, claims.nbf - 11),
            Err(TokenError::NotYetValid { .. })
        ));
    }
}
