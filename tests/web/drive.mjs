// Opens the Holoroom page in headless Chromium (Debian's, with a fake camera and microphone),
// waits until the room shows what `wait` asks, keeps the page open for `hold` seconds (so the
// other side can check what it receives), saves a screenshot and prints the page's state as
// one JSON line.
//
//   node drive.mjs URL SCREENSHOT.png '{"liveFeeds":1}' HOLD_SECONDS ['{"reconnects":1}']
//
// The optional last argument is waited for after the hold (e.g. the page came back after the
// test cut its connection). A `say` in the first is typed into the room's chat once the page
// is ready, as a person would: C opens the chat, the text, Enter.
import { launchChromium } from './chromium.mjs';

const [url, screenshot, waitJson, holdSeconds, afterJson] = process.argv.slice(2);
const wait = JSON.parse(waitJson || '{}');
const after = afterJson ? JSON.parse(afterJson) : null;
const hold = Number(holdSeconds || 0);

const state = () => {
  const b = document.body;
  const n = (name) => Number(b.getAttribute(name) || 0);
  return {
    state: b.getAttribute('data-holoroom-state'),
    participants: n('data-holoroom-participants'),
    liveFeeds: n('data-holoroom-live-feeds'),
    frames: n('data-holoroom-frames'),
    codes: b.getAttribute('data-holoroom-codes') || '',
    panel: b.getAttribute('data-holoroom-panel') || '',
    speaking: n('data-holoroom-speaking'),
    quality: b.getAttribute('data-holoroom-quality') || '',
    reconnects: n('data-holoroom-reconnects'),
    chat: String(n('data-holoroom-chat')),
    // The page's loading indicator, which must be gone once the app runs.
    loading: document.getElementById('loading') !== null,
    // What the app remembers for next time (its local storage).
    rememberedRoom: (() => {
      try { return JSON.parse(localStorage.getItem('holoroom.settings') || '{}').room || ''; } catch { return ''; }
    })(),
  };
};

const ready = ({ wait }) => {
  const b = document.body;
  const n = (name) => Number(b.getAttribute(name) || 0);
  return b.getAttribute('data-holoroom-state') === 'InCall'
    && document.getElementById('loading') === null
    && n('data-holoroom-participants') >= (wait.participants || 0)
    && n('data-holoroom-live-feeds') >= (wait.liveFeeds || 0)
    && n('data-holoroom-frames') >= (wait.frames || 0)
    && n('data-holoroom-speaking') >= (wait.speaking || 0)
    && n('data-holoroom-reconnects') >= (wait.reconnects || 0)
    && n('data-holoroom-chat') >= (wait.chat || 0)
    && (!wait.quality || (b.getAttribute('data-holoroom-quality') || '0/0') === wait.quality)
    && (!wait.code || (b.getAttribute('data-holoroom-codes') || '') !== '');
};

const browser = await launchChromium([
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
]);
const page = await browser.newPage({ viewport: { width: 960, height: 540 } });
page.on('console', (m) => { if (m.type() === 'error') console.error('page:', m.text()); });
page.on('pageerror', (e) => console.error('page error:', e.message));
let result;
try {
  await page.goto(url);
  await page.waitForFunction(ready, { wait }, { timeout: 120_000, polling: 250 });
  const first = await page.evaluate(state);
  if (wait.say) {
    // The keyboard goes to the app's canvas; a click on the wall (top left) gives it focus.
    await page.click('canvas', { position: { x: 8, y: 8 } });
    await page.keyboard.press('c');
    await page.waitForTimeout(500);
    await page.keyboard.type(wait.say, { delay: 40 });
    await page.keyboard.press('Enter');
  }
  await page.waitForTimeout(hold * 1000);
  if (after) {
    // Frames must keep coming, too: ten more than are shown now.
    const now = await page.evaluate(state);
    const more = { ...after, frames: now.frames + 10 };
    await page.waitForFunction(ready, { wait: more }, { timeout: 120_000, polling: 250 });
  }
  // The panel's place and the screenshot belong together: read one right before the other.
  await page.screenshot({ path: screenshot });
  const last = await page.evaluate(state);
  result = { ok: true, first, last };
} catch (e) {
  result = { ok: false, error: String(e), last: await page.evaluate(state).catch(() => null) };
  await page.screenshot({ path: screenshot }).catch(() => {});
}
console.log(JSON.stringify(result));
await browser.close();
process.exit(result.ok ? 0 : 1);
