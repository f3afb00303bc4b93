//! Where a participant's access token comes from. The engine asks its source for a token at
//! login, again before the token expires (the server's `TokenWillExpire`), and when a
//! reconnect is refused because the token ran out.

use std::sync::Arc;

use holoroom_protocol::{RoomId, UserInfo};

/// Who a token is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    pub room_id: RoomId,
    pub user: UserInfo,
}

/// Mints a token for a request, with keys this process holds.
pub type MintToken = Arc<dyn Fn(&TokenRequest) -> Result<String, String> + Send + Sync>;

/// How the engine gets (and renews) its token.
#[derive(Clone)]
pub enum TokenSource {
    /// A token handed over once (from the command line or an app's own backend); it is not
    /// renewed by itself, though [`crate::Engine::renew_token`] can replace it.
    Fixed(String),
    /// Minted here with keys this process holds (an embedded or development server).
    Mint(MintToken),
    /// A development server's guest endpoint (`/v1/dev/token`), asked over HTTP next to the
    /// signaling URL (`ws://` asks `http://`, `wss://` asks `https://`, default ports).
    Guest { server_url: String, spectator: bool },
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Fixed(_) => f.write_str("TokenSource::Fixed"),
            TokenSource::Mint(_) => f.write_str("TokenSource::Mint"),
            TokenSource::Guest { server_url, spectator } => f
                .debug_struct("TokenSource::Guest")
                .field("server_url", server_url)
                .field("spectator", spectator)
                .finish(),
        }
    }
}

impl From<String> for TokenSource {
    fn from(token: String) -> Self {
        TokenSource::Fixed(token)
    }
}

impl From<&str> for TokenSource {
    fn from(token: &str) -> Self {
        TokenSource::Fixed(token.to_owned())
    }
}

impl TokenSource {
    /// A source that mints with `mint`.
    pub fn mint(mint: impl Fn(&TokenRequest) -> Result<String, String> + Send + Sync + 'static) -> TokenSource {
        TokenSource::Mint(Arc::new(mint))
    }

    /// Whether asking again gives a fresh token.
    pub fn renews(&self) -> bool {
        !matches!(self, TokenSource::Fixed(_))
    }

    /// The token at once, for the sources that need no IO (None for the guest endpoint).
    pub(crate) fn ready(&self, request: &TokenRequest) -> Option<Result<String, TokenError>> {
        match self.obtain(request) {
            Obtain::Ready(result) => Some(result),
            Obtain::Ask(_) => None,
        }
    }

    /// How a driver gets the token for `request`: at once, or by asking a guest endpoint.
    pub(crate) fn obtain(&self, request: &TokenRequest) -> Obtain {
        match self {
            TokenSource::Fixed(token) => Obtain::Ready(Ok(token.clone())),
            TokenSource::Mint(mint) => Obtain::Ready(mint(request).map_err(TokenError::Mint)),
            TokenSource::Guest { server_url, spectator } => match GuestUrl::new(server_url, request, *spectator) {
                Ok(url) => Obtain::Ask(url),
                Err(error) => Obtain::Ready(Err(error)),
            },
        }
    }
}

/// A token now, or the guest endpoint that gives one.
#[derive(Debug)]
pub(crate) enum Obtain {
    Ready(Result<String, TokenError>),
    Ask(GuestUrl),
}

/// Why no token could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("can't mint a token: {0}")]
    Mint(String),
    #[error("{0} is not a ws:// or wss:// URL")]
    BadUrl(String),
    #[error("can't reach the token endpoint at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the token endpoint at {url} refused: {status}")]
    Refused { url: String, status: String },
    #[error("the token endpoint sent something unreadable: {0}")]
    Unreadable(String),
}

/// Where a guest endpoint is: scheme, host, port, and the request's path with its query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GuestUrl {
    pub secure: bool,
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl GuestUrl {
    /// The guest endpoint beside signaling URL `server_url`, asked for `request`.
    pub fn new(server_url: &str, request: &TokenRequest, spectator: bool) -> Result<GuestUrl, TokenError> {
        let bad = || TokenError::BadUrl(server_url.to_owned());
        let (scheme, rest) = server_url.split_once("://").ok_or_else(bad)?;
        let secure = match scheme {
            "ws" | "http" => false,
            "wss" | "https" => true,
            _ => return Err(bad()),
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let (host, port) = match authority.rsplit_once(':') {
            // An IPv6 literal without a port has colons only inside its brackets.
            Some((host, port)) if !port.contains(']') => (host, Some(port.parse::<u16>().map_err(|_| bad())?)),
            _ => (authority, None),
        };
        if host.is_empty() {
            return Err(bad());
        }
        let port = port.unwrap_or(if secure { 443 } else { 80 });
        let path = format!(
            "/v1/dev/token?room={}&user={}&name={}&spectator={spectator}",
            percent_encode(request.room_id.as_str()),
            percent_encode(request.user.user_id.as_str()),
            percent_encode(&request.user.user_name),
        );
        Ok(GuestUrl {
            secure,
            host: host.to_owned(),
            port,
            path,
        })
    }

    /// `http(s)://host:port/path?query`.
    pub fn full(&self) -> String {
        let scheme = if self.secure { "https" } else { "http" };
        format!("{scheme}://{}:{}{}", self.host, self.port, self.path)
    }

    /// Reads the token out of the endpoint's JSON answer.
    pub fn token_from(body: &str) -> Result<String, TokenError> {
        let json: serde_json::Value = serde_json::from_str(body).map_err(|e| TokenError::Unreadable(e.to_string()))?;
        json["token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| TokenError::Unreadable("no token in the answer".into()))
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub(crate) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(user: &str, name: &str) -> TokenRequest {
        TokenRequest {
            room_id: RoomId::new("room-1").expect("valid"),
            user: UserInfo {
                user_id: holoroom_protocol::UserId::new(user).expect("valid"),
                user_name: name.into(),
            },
        }
    }

    #[test]
    fn guest_urls_take_default_ports_secure_schemes_and_encode_the_query() {
        let plain = GuestUrl::new("ws://example.org/v1/ws", &request("a+b", "Zoë & co"), false).expect("url");
        assert_eq!(
            plain.full(),
            "http://example.org:80/v1/dev/token?room=room-1&user=a%2Bb&name=Zo%C3%AB%20%26%20co&spectator=false"
        );
        let secure = GuestUrl::new("wss://example.org/v1/ws", &request("u", "U"), true).expect("url");
        assert_eq!((secure.secure, secure.port), (true, 443));
        let v6 = GuestUrl::new("ws://[::1]:7880/v1/ws", &request("u", "U"), false).expect("url");
        assert_eq!((v6.host.as_str(), v6.port), ("[::1]", 7880));
        let v6_default = GuestUrl::new("wss://[::1]/v1/ws", &request("u", "U"), false).expect("url");
        assert_eq!((v6_default.host.as_str(), v6_default.port), ("[::1]", 443));
        for bad in ["ftp://x/", "ws://", "ws://host:port/", "nothing"] {
            assert!(GuestUrl::new(bad, &request("u", "U"), false).is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_are_read_from_the_answer_or_refused_clearly() {
        assert_eq!(GuestUrl::token_from(r#"{"token":"t"}"#), Ok("t".into()));
        assert!(matches!(GuestUrl::token_from("{}"), Err(TokenError::Unreadable(_))));
        assert!(matches!(GuestUrl::token_from("<html>"), Err(TokenError::Unreadable(_))));
    }
}
