//! The browser app's files, served at `/` from a directory (what `make web` builds), so that
//! opening the server's address joins a room. Only plain files under that directory are
//! served; anything else is 404.

use std::path::{Component, Path, PathBuf};

use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

/// The file under `root` that `uri` names (`/` is `index.html`), if the path stays inside.
pub fn resolve(root: &Path, uri: &Uri) -> Option<PathBuf> {
    let path = uri.path().trim_start_matches('/');
    let path = if path.is_empty() { "index.html" } else { path };
    let relative = Path::new(path);
    if !relative.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(root.join(relative))
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
    match tokio::task::spawn_blocking(move || std::fs::read(path)).await {
        Ok(Ok(bytes)) => ([(header::CONTENT_TYPE, kind)], bytes).into_response(),
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
        assert_eq!(content_type(Path::new("a.wasm")), "application/wasm");
    }
}
