// Debian's headless Chromium as the tests and benches run it: no GPU, nothing fetched in the
// background, WebRTC allowed on loopback, sound without a gesture. `extra` adds flags.
import { chromium } from 'playwright-core';

export function launchChromium(extra = []) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--allow-loopback-in-peer-connection', '--disable-features=WebRtcHideLocalIpsWithMdns',
      '--autoplay-policy=no-user-gesture-required',
      ...extra,
    ],
  });
}
