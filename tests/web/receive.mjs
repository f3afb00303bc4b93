// Plays one stream of a Holoroom room in headless Chromium with the browser's own WebRTC
// receiver (no Holoroom code in the page: signaling by hand, one RTCPeerConnection), for
// benchmarks that set Chromium's receiver beside Holoroom's. The room server must serve some
// page at / (its --web-root).
//
//   node receive.mjs WS_URL ROOM USER TOKEN STREAM
//
// Prints {"ready":true} once the first frame is decoded; then answers each line "snap" on
// standard input with one JSON line of the inbound video and audio stats so far (getStats).
// Ends on "quit" or at the end of the input.
import readline from 'node:readline';
import { launchChromium } from './chromium.mjs';

const [ws, room, user, token, stream] = process.argv.slice(2);

const browser = await launchChromium();
try {
  const page = await browser.newPage();
  page.on('pageerror', (e) => console.error('page error:', e.message));
  // A page of the room server's own (any page it serves): loopback pages may open loopback
  // sockets, where about:blank may not.
  await page.goto(ws.replace(/^ws/, 'http').replace(/\/v1\/ws$/, '/'));
  await page.evaluate(async ({ ws, room, user, token, stream }) => {
    const socket = new WebSocket(ws);
    await new Promise((ok, fail) => { socket.onopen = ok; socket.onerror = fail; });
    let next = 0;
    const pending = new Map();
    socket.onmessage = (m) => {
      const msg = JSON.parse(m.data);
      if (msg.type !== 'response') return;
      const waiting = pending.get(msg.id);
      pending.delete(msg.id);
      if (!waiting) return;
      if ('ok' in msg.result) waiting.ok(msg.result.ok);
      else waiting.fail(new Error(JSON.stringify(msg.result.error)));
    };
    const request = (body) => new Promise((ok, fail) => {
      next += 1;
      pending.set(next, { ok, fail });
      socket.send(JSON.stringify({ id: next, request: body }));
    });
    await request({
      type: 'login', protocol: 2, room_id: room, token,
      user: { user_id: user, user_name: user }, config: { user_update: false },
    });
    const pc = new RTCPeerConnection();
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    const video = document.createElement('video');
    video.autoplay = true;
    video.muted = true;
    document.body.appendChild(video);
    const media = new MediaStream();
    pc.ontrack = (e) => { media.addTrack(e.track); video.srcObject = media; };
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((ok) => {
      if (pc.iceGatheringState === 'complete') ok();
      pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === 'complete') ok(); };
    });
    const playing = await request({
      type: 'start_playing', stream_id: stream, sdp_offer: pc.localDescription.sdp,
    });
    await pc.setRemoteDescription({ type: 'answer', sdp: playing.sdp_answer });
    window.snap = async () => {
      const out = { at: performance.now() };
      (await pc.getStats()).forEach((s) => {
        if (s.type !== 'inbound-rtp') return;
        if (s.kind === 'video') {
          Object.assign(out, {
            framesDecoded: s.framesDecoded || 0,
            framesReceived: s.framesReceived || 0,
            freezeCount: s.freezeCount || 0,
            totalFreezesDuration: s.totalFreezesDuration || 0,
            jitterBufferDelay: s.jitterBufferDelay || 0,
            jitterBufferEmittedCount: s.jitterBufferEmittedCount || 0,
            videoPacketsLost: s.packetsLost || 0,
            nackCount: s.nackCount || 0,
            pliCount: s.pliCount || 0,
          });
        } else {
          Object.assign(out, {
            concealedSamples: s.concealedSamples || 0,
            totalSamplesReceived: s.totalSamplesReceived || 0,
          });
        }
      });
      return out;
    };
    for (;;) {
      const s = await window.snap();
      if (s.framesDecoded > 0) break;
      await new Promise((ok) => setTimeout(ok, 50));
    }
  }, { ws, room, user, token, stream });
  console.log(JSON.stringify({ ready: true }));
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (line.trim() !== 'snap') break;
    console.log(JSON.stringify(await page.evaluate(() => window.snap())));
  }
} finally {
  await browser.close();
}
