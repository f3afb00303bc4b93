//! `holoroom`: the client. On the desktop it takes its settings from the command line (and
//! starts an embedded room server without `--server`); in a browser (wasm32) from the page's
//! address, and it talks to the server that served the page.

#[cfg(target_arch = "wasm32")]
mod browser;
#[cfg(not(target_arch = "wasm32"))]
mod desktop;

#[cfg(not(target_arch = "wasm32"))]
fn main() -> anyhow::Result<()> {
    desktop::main()
}

#[cfg(target_arch = "wasm32")]
fn main() {
    browser::main();
}
