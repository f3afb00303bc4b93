# Holoroom: `make run` opens the desktop app with an embedded room server; `make test` runs every test.
# Both install what they need on Debian 12 (apt packages, the wasm32 target) first.

SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/holoroom-target

# Build: ALSA (cpal), bindgen (camera), NASM (openh264 SIMD), Opus, Wayland and xkbcommon (winit).
APT_BUILD := pkg-config libasound2-dev libclang-dev nasm libopus-dev libwayland-dev libxkbcommon-dev
# Tests: a virtual display and Mesa's software Vulkan for the window test.
APT_TEST := xvfb xauth mesa-vulkan-drivers libvulkan1
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: deps run server bots test bench lint fmt

deps:
	@missing=""; for p in $(APT_BUILD) $(APT_TEST); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "Installing:$$missing"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	fi
	@command -v cargo >/dev/null || { echo "cargo not found: install Rust with rustup (https://rustup.rs)"; exit 1; }
	@rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown

## Desktop app with an embedded room server on loopback.
run: deps
	cargo run -p holoroom

## A standalone room server in dev mode on 127.0.0.1:7880.
server: deps
	cargo run -p holoroom-server -- serve --dev

## Two bots in the room of a local dev server (start `make server` first).
bots: deps
	cargo run -p holoroom -- bot --server ws://127.0.0.1:7880/v1/ws --room lobby --count 2

## Every test: unit, server and engine integration (real WebRTC over loopback), the app's
## headless tests, the window screenshot test under Xvfb, and the protocol built for wasm32.
test: deps
	xvfb-run -a -s "-screen 0 1280x720x24" cargo test --workspace
	cargo check -p holoroom-protocol --target wasm32-unknown-unknown

## Benchmarks; each prints ratios against a baseline measured in the same run. Media and SFU
## build in release; the render bench reuses the test build (dependencies optimised) and opens
## a window, so it runs under Xvfb.
bench: deps
	cargo bench -p holoroom-engine --bench media
	cargo bench -p holoroom-server --bench sfu
	xvfb-run -a -s "-screen 0 1280x720x24" cargo bench --profile dev -p holoroom --bench render

lint: deps
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all
