#!/bin/sh
# Makes the call bar's icons in assets/icons/ from Lucide's SVGs (ISC licence, see
# assets/LICENSES.md): white strokes on transparency, 48x48, tinted by the app.
# Needs npm and rsvg-convert (Debian: librsvg2-bin).
set -eu
version=1.62.0
out=$(cd "$(dirname "$0")/.." && pwd)/assets/icons
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "lucide-static@$version" >/dev/null && tar xzf "lucide-static-$version.tgz")
mkdir -p "$out"
cp "$work/package/LICENSE" "$out/LICENSE-lucide.txt"
# name in the app = Lucide's name
for pair in microphone=mic microphone-off=mic-off camera=video camera-off=video-off \
    devices=settings participants=users chat=message-circle connection=signal \
    overview=map leave=phone-off; do
    name=${pair%%=*}
    source=${pair#*=}
    sed 's/currentColor/#ffffff/g' "$work/package/icons/$source.svg" > "$work/$name.svg"
    rsvg-convert -w 48 -h 48 "$work/$name.svg" -o "$out/$name.png"
done
