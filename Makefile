# Holoroom: `make run` opens the desktop app with an embedded room server; `make test` runs every test.
# Both install what they need on Debian 12 (apt packages, the wasm32 target) first.

SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/holoroom-target

# Build: ALSA (cpal), bindgen (camera), NASM (openh264 SIMD), Opus, OpenSSL (the relay's DTLS),
# Wayland and xkbcommon (winit).
APT_BUILD := pkg-config libasound2-dev libclang-dev nasm libopus-dev libssl-dev libwayland-dev libxkbcommon-dev
# Tests: a virtual display and Mesa's software Vulkan for the window test; Chromium and Node
# (playwright-core drives the browser) for the browser test; GStreamer's webrtcbin with x264,
# libav and Python bindings for the test with another WebRTC stack.
APT_TEST := xvfb xauth mesa-vulkan-drivers libvulkan1 chromium \
	python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 gir1.2-gst-plugins-bad-1.0 gir1.2-nice-0.1 \
	gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly \
	gstreamer1.0-libav gstreamer1.0-nice
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# wasm-bindgen's CLI must match the wasm-bindgen crate in Cargo.lock.
WASM_BINDGEN_VERSION := 0.2.130
TOOLS := $(HOME)/.cache/holoroom-tools
WASM_BINDGEN := $(TOOLS)/bin/wasm-bindgen
# The browser app, ready to serve.
WEB_DIR := $(CARGO_TARGET_DIR)/www
# How to build for wasm32: rustup's target, or else Debian's rustc-web with std built from source.
RUSTUP_WASM = rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown
WASM_CARGO = if $(RUSTUP_WASM); then cargo $(1); else RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 /usr/bin/cargo $(1) -Z build-std=std,panic_abort; fi

.PHONY: deps run server bots web test bench fuzz chaos lint fmt

deps:
	@missing=""; for p in $(APT_BUILD) $(APT_TEST); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "Installing:$$missing"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	fi
	@# Node (with npm) from Debian unless one is installed already (some bundle npm).
	@command -v npm >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm; }
	@command -v cargo >/dev/null || { echo "cargo not found: install Rust with rustup (https://rustup.rs)"; exit 1; }
	@# The wasm32 target from rustup; if rustup cannot fetch it, Debian's rustc-web builds std
	@# from source instead (see WASM_CARGO).
	@rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown || \
		[ -x /usr/bin/rust-lld ] || { \
		echo "rustup cannot add wasm32-unknown-unknown: using Debian's rustc-web"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rustc-web cargo-web rust-web-src rust-web-llvm lld-22; }

## Desktop app with an embedded room server on loopback.
run: deps
	cargo run -p holoroom

## A standalone room server in dev mode on 127.0.0.1:7880 (serving the browser app at / once
## `make web` has built it).
server: deps
	cargo run -p holoroom-server -- serve --dev $$([ -f $(WEB_DIR)/index.html ] && echo --web-root $(WEB_DIR))

## The browser app (wasm32, WebGL2) with its JS bindings and page, in $(WEB_DIR).
web: deps $(WASM_BINDGEN)
	$(call WASM_CARGO,build -p holoroom --bin holoroom --target wasm32-unknown-unknown --profile web)
	$(WASM_BINDGEN) --target web --no-typescript --remove-name-section --remove-producers-section \
		--out-dir $(WEB_DIR)/pkg $(CARGO_TARGET_DIR)/wasm32-unknown-unknown/web/holoroom.wasm
	cp web/index.html $(WEB_DIR)/index.html
	@# The room's textures and other assets, fetched by the app from beside the page.
	rm -rf $(WEB_DIR)/assets && cp -r assets $(WEB_DIR)/assets
	@# Gzipped copies beside them: the server sends these to browsers that take gzip.
	gzip -9 -k -f $(WEB_DIR)/pkg/holoroom_bg.wasm $(WEB_DIR)/pkg/holoroom.js
	@echo "Browser app in $(WEB_DIR): run 'make server' and open http://127.0.0.1:7880/?room=lobby"

$(WASM_BINDGEN):
	cargo install wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION) --root $(TOOLS)

tests/web/node_modules: tests/web/package.json tests/web/package-lock.json
	cd tests/web && npm ci --no-audit --no-fund
	touch $@

## Two bots in the room of a local dev server (start `make server` first).
bots: deps
	cargo run -p holoroom -- bot --server ws://127.0.0.1:7880/v1/ws --room lobby --count 2

## Every test: unit, server and engine integration (real WebRTC over loopback), the app's
## headless tests, the window screenshot test under Xvfb, the browser app in headless
## Chromium with a native bot, and clippy on the wasm32 build.
test: deps web tests/web/node_modules
	HOLOROOM_WEB_DIR=$(WEB_DIR) xvfb-run -a -s "-screen 0 1280x720x24" cargo test --workspace
	@# Lints for wasm32 need rustup's clippy; the rustc-web fallback has none.
	if $(RUSTUP_WASM); then \
		cargo clippy -p holoroom -p holoroom-engine -p holoroom-protocol --target wasm32-unknown-unknown --profile web -- -D warnings; \
	else echo "clippy for wasm32 skipped: built with Debian's rustc-web"; fi

## Benchmarks; each prints ratios against a baseline measured in the same run. Media and SFU
## build in release; the network bench (the desktop player beside Chromium's receiver through
## the impairment relay) and the render bench reuse the test build (dependencies optimised);
## the render bench opens a window, so it runs under Xvfb; the swarm bench (25 and 49 publishers,
## one viewer: what the view's choice of layers saves) reuses the test build too.
bench: deps tests/web/node_modules
	cargo bench -p holoroom-engine --bench media
	cargo bench --profile dev -p holoroom-engine --bench network
	cargo bench -p holoroom-server --bench sfu
	xvfb-run -a -s "-screen 0 1280x720x24" cargo bench --profile dev -p holoroom --bench render
	cargo bench --profile dev -p holoroom --bench swarm

## Chaos and soak: up to 20 bots joining, leaving, publishing and playing at random through the
## impairment relay (2% loss, jitter, blackouts) against a server process, then the same with the
## server killed every 30 s; CHAOS_SECONDS per part. Reuses the test build.
CHAOS_SECONDS ?= 120
chaos: deps
	cargo bench --profile dev -p holoroom-server --bench chaos -- --seconds $(CHAOS_SECONDS) --bots 20 --restart-every 30

## Fuzzing: each target in fuzz/ (libFuzzer with AddressSanitizer, on the stable toolchain) for
## FUZZ_SECONDS, starting from its kept inputs (crates/fuzzing/regressions/<target>, replayed by
## `make test`); a crash stops the run and leaves its input in fuzz/artifacts/<target>/.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := signaling token offer capture_time h264_receive y4m camera sfu
CARGO_FUZZ := $(TOOLS)/bin/cargo-fuzz
fuzz: deps $(CARGO_FUZZ)
	@for target in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/corpus/$$target crates/fuzzing/regressions/$$target; \
		echo "== $$target ($(FUZZ_SECONDS) s)"; \
		RUSTC_BOOTSTRAP=1 PATH=$(TOOLS)/bin:$$PATH cargo fuzz run --fuzz-dir fuzz -O $$target \
			fuzz/corpus/$$target crates/fuzzing/regressions/$$target -- \
			-max_total_time=$(FUZZ_SECONDS) -max_len=4096 -rss_limit_mb=4096 -print_final_stats=1 || exit 1; \
	done

$(CARGO_FUZZ):
	cargo install cargo-fuzz --locked --version 0.13.2 --root $(TOOLS)

lint: deps
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all
