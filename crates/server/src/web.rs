//! The browser app's files, served at `/` from a directory (what `make web` builds), so that
//! opening the server's address joins a room. Only regular, non-hidden files that really are
//! under that directory (links followed) are served; anything else is 404.

use std::path::{Component, Path, PathBuf};

use axum::http::{StatusCode, Uri, header};
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

/// Answers a GET for a file of the web app.
pub async fn serve(root: PathBuf, uri: Uri) -> Response {
    let Some(path) = resolve(&root, &uri) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let kind = content_type(&path);
    let read = move || inside(&root, &path).map(std::fs::read);
    match tokio::task::spawn_blocking(read).await {
        Ok(Some(Ok(bytes))) => ([(header::CONTENT_TYPE, kind)], bytes).into_response(),
        _ => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
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
