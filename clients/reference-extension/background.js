// The service worker: runs what must outlive the popup (Checkout, live captions, catch-up)
// with the kit, and tells the popup and the captioned tab what happens. The popup talks to
// it with chrome.runtime.sendMessage({type, ...}); the state it shows is in
// chrome.storage.session under LIVE_STATE.
import { kit, LIVE_STATE } from './shared.js';
import { AUDIO_PORT, base64ToPcm } from './audio-port.js';

const TRANSCRIPT_CHARS = 50_000;
const RECENT_AUDIO_SECONDS = 10 * 60;

let captions = null; // the running CaptionSession
let lastRun = null; // the latest one, running or stopped: its audio feeds catch-up
let captionTab = null;
let captionUrl = null; // the captioned page, for catch-up's stream_url
let state = { running: false, partial: '', finals: [], transcript: '', renewals: 0, bill: null, catchup: null, error: null };
let audioPortWaiter = null;

// A purchase whose popup closed (the Checkout tab took the focus) still ends in onPaid.
kit.resumePurchases().catch(() => {});

async function publish(changes) {
  state = { ...state, ...changes };
  await chrome.storage.session.set({ [LIVE_STATE]: state });
}

function describe(error) {
  return {
    name: error?.name, code: error?.code, message: error?.message || String(error),
    balance: error?.balance ?? null, required: error?.required ?? null, retryAfter: error?.retryAfter ?? null,
  };
}

const handlers = {
  'captions.start': ({ tabId }) => startCaptions(tabId),
  'captions.stop': () => stopCaptions(),
  buy: ({ packageId }) => kit.buy(packageId),
  subscribe: ({ planId }) => kit.subscribe(planId),
  portal: () => kit.openBillingPortal(),
  catchup: () => catchUp(),
};

chrome.runtime.onMessage.addListener((message, sender, reply) => {
  const handler = handlers[message?.type];
  if (!handler || sender.id !== chrome.runtime.id) return false;
  handler(message).then((value) => reply({ ok: true, value }), (error) => reply({ ok: false, error: describe(error) }));
  return true; // the reply comes later
});

chrome.runtime.onConnect.addListener((port) => {
  if (port.name === AUDIO_PORT && audioPortWaiter) audioPortWaiter(port);
});

kit.onSignedOut(() => { if (captions) stopCaptions().catch(() => {}); });

// ---- live captions ----

/** Tab audio, captured in an offscreen document, as a PcmSource for the kit. */
async function tabAudio(tabId) {
  const streamId = await chrome.tabCapture.getMediaStreamId({ targetTabId: tabId });
  if ((await chrome.runtime.getContexts({ contextTypes: ['OFFSCREEN_DOCUMENT'] })).length) await chrome.offscreen.closeDocument();
  const connected = new Promise((resolve) => { audioPortWaiter = resolve; });
  await chrome.offscreen.createDocument({ url: 'offscreen.html', reasons: ['USER_MEDIA'], justification: 'Captions of the tab\'s audio' });
  const port = await connected;
  const ready = await new Promise((resolve, reject) => {
    const first = (message) => {
      if (message.type === 'ready') { port.onMessage.removeListener(first); resolve(message); }
      if (message.type === 'failed') { port.onMessage.removeListener(first); reject(new Error(message.message)); }
    };
    port.onMessage.addListener(first);
    port.postMessage({ type: 'capture', streamId });
  });
  let listener = null;
  return {
    sampleRate: ready.sampleRate,
    start(onChunk) {
      listener = (message) => { if (message.type === 'pcm') onChunk(base64ToPcm(message.data)); };
      port.onMessage.addListener(listener);
    },
    stop() {
      if (listener) port.onMessage.removeListener(listener);
      port.postMessage({ type: 'stop' });
    },
  };
}

async function toOverlay(message) {
  if (captionTab !== null) await chrome.tabs.sendMessage(captionTab, message).catch(() => {});
}

async function caption(turn, final) {
  await toOverlay({ type: 'overlay.caption', text: turn.text, final });
  if (!final) { await publish({ partial: turn.text }); return; }
  await publish({
    partial: '',
    finals: [...state.finals, turn.text].slice(-20),
    transcript: `${state.transcript} ${turn.text}`.trim().slice(-TRANSCRIPT_CHARS),
  });
}

async function startCaptions(tabId) {
  if (captions) return state;
  const tab = await chrome.tabs.get(tabId);
  await chrome.scripting.insertCSS({ target: { tabId }, files: ['overlay.css'] }).catch(() => {});
  await chrome.scripting.executeScript({ target: { tabId }, files: ['overlay.js'] }).catch(() => {});
  captionTab = tabId;
  captionUrl = /^https?:\/\//.test(tab.url || '') ? tab.url.slice(0, 2048) : null;
  await publish({ running: true, starting: true, partial: '', finals: [], transcript: '', renewals: 0, bill: null, error: null });
  try {
    const source = await tabAudio(tabId);
    captions = await kit.startCaptions(source, {
      onPartial: (turn) => caption(turn, false),
      onFinal: (turn) => caption(turn, true),
      onRenewed: ({ renewals }) => publish({ renewals }),
      onError: (error) => publish({ error: describe(error) }),
      onEnded: ({ reason, bill }) => finished(bill, reason),
    }, { keepAudioSeconds: RECENT_AUDIO_SECONDS, title: (tab.title || '').slice(0, 200) || undefined });
    lastRun = captions;
    await publish({ starting: false });
    return state;
  } catch (error) {
    await closeOffscreen();
    await publish({ running: false, starting: false, error: describe(error) });
    throw error;
  }
}

async function stopCaptions() {
  if (!captions) return state.bill;
  const bill = await captions.stop();
  return finished(bill, 'stopped');
}

async function finished(bill, reason) {
  captions = null;
  await toOverlay({ type: 'overlay.hide' });
  await closeOffscreen();
  await publish({ running: false, partial: '', bill, ended: reason });
  return bill;
}

async function closeOffscreen() {
  if ((await chrome.runtime.getContexts({ contextTypes: ['OFFSCREEN_DOCUMENT'] })).length) await chrome.offscreen.closeDocument().catch(() => {});
}

// ---- catch-up ----

async function catchUp() {
  if (!lastRun) throw new Error('Start captions first: catch-up summarises the tab audio heard since then.');
  if (!captionUrl) throw new Error('Catch-up needs a web page (http or https) as the stream.');
  await publish({ catchup: { status: 'uploading' } });
  try {
    const job = await kit.catchUp({
      audio: lastRun.recentAudio(),
      streamUrl: captionUrl,
      onStatus: (status) => publish({ catchup: { status } }),
    });
    await publish({ catchup: { status: 'completed', result: job.result, creditsUsed: job.credits_used } });
    return job;
  } catch (error) {
    await publish({ catchup: { status: 'failed', error: describe(error) } });
    throw error;
  }
}
