//! The browser app's files, served at `/` from a directory (what `make web` builds), so that
//! opening the server's address joins a room. Only regular, non-hidden files that really are
//! under that directory (links followed) are served; anything else is 404.
//!
//! A file with a gzipped copy beside it (`x.wasm.gz`, which `make web` writes) is sent
//! compressed to browsers that accept gzip. Every answer carries an ETag from the file's size and
//! time and `Cache-Control: no-cache`, so a browser keeps the 60 MB app and only asks whether
//! it changed (304 when it did not).

use std::path::{Component, Path, PathBuf};

use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

/// The file under `root` that `uri` names (`/` is `index.html`), if the path stays inside
/// and names nothing hidden (no part starts with a dot).
pub fn resolve(root: &Path, uri: &Uri) -> Option<PathBuf> {
    let path = uri.path().trim_start_matches('/');
    let path = if path.is_empty() { "index.html" } else { path };
    let relative = Path::new(path);
    let plain = |c: Component<'_>| matches!(c, Component::Normal(name) if !name.to_string_lossy().starts_with('.'));
    if !relative.components().all(plain) {
        return None;
    }
    Some(root.join(relative))
}

/// `path` if it is a regular file that, links followed, is still under `root`.
fn inside(root: &Path, path: &Path) -> Option<PathBuf> {
    let root = root.canonicalize().ok()?;
    let real = path.canonicalize().ok()?;
    (real.starts_with(&root) && real.is_file()).then_some(real)
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("css") => "text/css; charset=utf-8",
        Some("png") => "image/png",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// Whether the request says it takes gzip.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let refused = parts.any(|p| p.replace(' ', "") == "q=0");
            name.eq_ignore_ascii_case("gzip") && !refused
        })
}

/// A file to send: its bytes (none when the browser's copy is current), whether they are
/// gzipped, and its ETag.
struct Found {
    bytes: Option<Vec<u8>>,
    gzipped: bool,
    etag: String,
}

fn modified_nanos(meta: &std::fs::Metadata) -> u128 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos())
}

/// Reads `path` (or its gzipped copy, when `gzip` and one at least as new exists) if it is a
/// file under `root`; not at all when its ETag is `cached`.
fn read(root: &Path, path: &Path, gzip: bool, cached: Option<&[u8]>) -> Option<Found> {
    let real = inside(root, path)?;
    let original = std::fs::metadata(&real).ok()?;
    let compressed = gzip
        .then(|| inside(root, &PathBuf::from(format!("{}.gz", path.display()))))
        .flatten()
        .and_then(|gz| Some((std::fs::metadata(&gz).ok()?, gz)))
        .filter(|(meta, _)| modified_nanos(meta) >= modified_nanos(&original));
    let (file, meta, gzipped) = match compressed {
        Some((meta, gz)) => (gz, meta, true),
        None => (real, original, false),
    };
    let etag = format!(
        "\"{:x}-{:x}{}\"",
        meta.len(),
        modified_nanos(&meta),
        if gzipped { "-gz" } else { "" }
    );
    let bytes = if cached == Some(etag.as_bytes()) {
        None
    } else {
        Some(std::fs::read(&file).ok()?)
    };
    Some(Found { bytes, gzipped, etag })
}

/// Answers a GET for a file of the web app.
pub async fn serve(root: PathBuf, uri: Uri, headers: HeaderMap) -> Response {
    let Some(path) = resolve(&root, &uri) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let kind = content_type(&path);
    let gzip = accepts_gzip(&headers);
    let cached = headers.get(header::IF_NONE_MATCH).map(|v| v.as_bytes().to_vec());
    let found = tokio::task::spawn_blocking(move || read(&root, &path, gzip, cached.as_deref())).await;
    let Ok(Some(found)) = found else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let mut response = match found.bytes {
        Some(bytes) => ([(header::CONTENT_TYPE, kind)], bytes).into_response(),
        None => StatusCode::NOT_MODIFIED.into_response(),
    };
    let out = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&found.etag) {
        out.insert(header::ETAG, etag);
    }
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    out.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if found.gzipped {
        out.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(path: &str) -> Uri {
        path.parse().expect("a URI")
    }

    #[test]
    fn paths_stay_inside_the_root() {
        let root = Path::new("/srv/web");
        assert_eq!(resolve(root, &uri("/")), Some(root.join("index.html")));
        assert_eq!(
            resolve(root, &uri("/pkg/holoroom_bg.wasm")),
            Some(root.join("pkg/holoroom_bg.wasm"))
        );
        assert_eq!(resolve(root, &uri("/../etc/passwd")), None);
        assert_eq!(resolve(root, &uri("/pkg/../../x")), None);
        // Extra slashes cannot reach outside either.
        assert_eq!(resolve(root, &uri("//etc/passwd")), Some(root.join("etc/passwd")));
        assert_eq!(resolve(root, &uri("/.git/config")), None, "nothing hidden");
        assert_eq!(content_type(Path::new("a.wasm")), "application/wasm");
        let accept = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(value));
            accepts_gzip(&headers)
        };
        assert!(accept("gzip, deflate, br"));
        assert!(accept("br;q=1.0, GZIP;q=0.5"));
        assert!(!accept("gzip;q=0, br"));
        assert!(!accept("identity"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn links_out_of_the_root_and_directories_are_not_served() {
        let base = std::env::temp_dir().join(format!("holoroom-web-{}", std::process::id()));
        let root = base.join("www");
        std::fs::create_dir_all(root.join("pkg")).expect("dirs");
        std::fs::write(root.join("index.html"), "hi").expect("file");
        std::fs::write(base.join("secret"), "no").expect("file");
        assert!(inside(&root, &root.join("index.html")).is_some());
        assert!(inside(&root, &root.join("pkg")).is_none(), "a directory");
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(base.join("secret"), root.join("leak")).expect("link");
            assert!(inside(&root, &root.join("leak")).is_none(), "a link out of the root");
        }
        let _ = std::fs::remove_dir_all(&base);
    }
}
