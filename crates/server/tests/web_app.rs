//! The browser app's files as the server sends them: gzipped to browsers that take it (from
//! the `.gz` copy `make web` writes), with an ETag and `no-cache`, and 304 when unchanged.

mod common;

use std::path::PathBuf;

fn header(head: &str, name: &str) -> Option<String> {
    head.lines()
        .find_map(|line| line.strip_prefix(&format!("{name}: ")))
        .map(|v| v.trim().to_owned())
}

#[tokio::test]
async fn the_app_is_sent_gzipped_when_taken_and_revalidated_by_etag() {
    let root: PathBuf = std::env::temp_dir().join(format!("holoroom-web-app-{}", std::process::id()));
    std::fs::create_dir_all(root.join("pkg")).expect("dirs");
    std::fs::write(root.join("index.html"), "<!doctype html>").expect("page");
    std::fs::write(root.join("pkg/app.wasm"), vec![7u8; 4096]).expect("wasm");
    std::fs::write(root.join("pkg/app.wasm.gz"), b"pretend-gzip").expect("gz");
    let mut config = common::config();
    config.web_root = Some(root.clone());
    let server = common::start(config).await;

    let (status, head, body) = common::http_get(&server, "/pkg/app.wasm", "Accept-Encoding: gzip, br\r\n").await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(header(&head, "content-encoding").as_deref(), Some("gzip"));
    assert_eq!(header(&head, "content-type").as_deref(), Some("application/wasm"));
    assert_eq!(body, b"pretend-gzip");
    let (status, head, body) = common::http_get(&server, "/pkg/app.wasm", "").await;
    assert_eq!(status, 200);
    assert_eq!(header(&head, "content-encoding"), None, "{head}");
    assert_eq!(body.len(), 4096);
    assert_eq!(header(&head, "cache-control").as_deref(), Some("no-cache"));
    let etag = header(&head, "etag").expect("an etag");

    let (status, _, body) = common::http_get(&server, "/pkg/app.wasm", &format!("If-None-Match: {etag}\r\n")).await;
    assert_eq!(status, 304);
    assert!(body.is_empty());
    let (status, _, _) = common::http_get(&server, "/", "").await;
    assert_eq!(status, 200);
    let (status, _, _) = common::http_get(&server, "/pkg/missing.wasm", "Accept-Encoding: gzip\r\n").await;
    assert_eq!(status, 404);
    let _ = std::fs::remove_dir_all(&root);
}
