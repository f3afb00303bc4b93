//! The browser app's files as the server sends them: gzipped to browsers that take it (from
//! the `.gz` copy `make web` writes), with an ETag and `no-cache`, and 304 when unchanged.

mod common;

use std::path::PathBuf;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A GET with `headers`: the status, the response's header lines and its body.
async fn get(server: &holoroom_server::Server, path: &str, headers: &str) -> (u16, String, Vec<u8>) {
    let mut tcp = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .expect("connects");
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{headers}\r\n");
    tcp.write_all(request.as_bytes()).await.expect("writes");
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.expect("reads");
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
    let head = String::from_utf8_lossy(&response[..split]).to_lowercase();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head, response[split..].to_vec())
}

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

    let (status, head, body) = get(&server, "/pkg/app.wasm", "Accept-Encoding: gzip, br\r\n").await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(header(&head, "content-encoding").as_deref(), Some("gzip"));
    assert_eq!(header(&head, "content-type").as_deref(), Some("application/wasm"));
    assert_eq!(body, b"pretend-gzip");
    let (status, head, body) = get(&server, "/pkg/app.wasm", "").await;
    assert_eq!(status, 200);
    assert_eq!(header(&head, "content-encoding"), None, "{head}");
    assert_eq!(body.len(), 4096);
    assert_eq!(header(&head, "cache-control").as_deref(), Some("no-cache"));
    let etag = header(&head, "etag").expect("an etag");

    let (status, _, body) = get(&server, "/pkg/app.wasm", &format!("If-None-Match: {etag}\r\n")).await;
    assert_eq!(status, 304);
    assert!(body.is_empty());
    let (status, _, _) = get(&server, "/", "").await;
    assert_eq!(status, 200);
    let (status, _, _) = get(&server, "/pkg/missing.wasm", "Accept-Encoding: gzip\r\n").await;
    assert_eq!(status, 404);
    let _ = std::fs::remove_dir_all(&root);
}
