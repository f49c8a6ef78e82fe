// The kit against a running API (`make run`, or tests/clients/test_kit_e2e.py's server):
// real HTTP, the sandbox's real AssemblyAI socket, the sandbox's Stripe Checkout. Node 20
// needs `--experimental-websocket` for its WebSocket.
//
//   node --experimental-websocket clients/extension/e2e/against-api.mjs http://127.0.0.1:8000
//
// It registers, buys a pack (paying on the sandbox Checkout page, as a user would), streams
// real-time audio into live captions until the session has renewed at least twice, asks a
// question during the session, stops, catches up on the audio it captured, and reads the
// history. The last line of its output is a JSON report the pytest side checks.
import { createKit, memoryStorage } from '../kit.js';

const API = process.argv[2];
const MIN_RENEWALS = Number(process.env.KIT_E2E_RENEWALS || 2);
const SAMPLE_RATE = 16000;
const log = (...args) => console.error('[kit-e2e]', ...args);

/** Tabs the way a user uses them: Checkout opens, the user presses Pay a moment later. */
function payingTabs(report) {
  let next = 1;
  return {
    async open(url) {
      report.opened.push(url);
      const id = next++;
      if (url.includes('/checkout/')) {
        setTimeout(async () => {
          const paid = await fetch(`${url}/pay`, { method: 'POST', redirect: 'manual', body: new URLSearchParams() });
          report.payStatus = paid.status;
        }, 1500);
      }
      return { id };
    },
    onClosed() { return () => {}; },
  };
}

/** Real-time 16 kHz PCM (a quiet tone), 100 ms at a time, counting every sample handed over. */
function realTimeSource(report) {
  let timer = null;
  let phase = 0;
  return {
    sampleRate: SAMPLE_RATE,
    start(onChunk) {
      timer = setInterval(() => {
        const chunk = new Int16Array(SAMPLE_RATE / 10);
        for (let i = 0; i < chunk.length; i += 1) chunk[i] = Math.round(3000 * Math.sin((phase += (2 * Math.PI * 220) / SAMPLE_RATE)));
        report.samplesSent += chunk.length;
        onChunk(chunk);
      }, 100);
    },
    stop() { clearInterval(timer); },
  };
}

const until = async (predicate, ms, what) => {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
};

async function main() {
  const report = { opened: [], samplesSent: 0, balances: [], finals: [], partials: 0, renewals: [], errors: [] };
  const kit = createKit({ baseUrl: API, storage: memoryStorage(), tabs: payingTabs(report) });
  kit.onBalanceChanged((balance) => report.balances.push(balance));
  kit.onPaid((payment) => { report.paid = payment; });

  const email = `kit-e2e-${Date.now()}-${Math.floor(Math.random() * 1e6)}@example.com`;
  report.user = await kit.register({ email, password: 'correct horse battery staple' });
  log('registered', email);

  report.payment = await kit.buy('starter', { timeoutMs: 60_000 });
  log('paid', report.payment);

  const captions = await kit.startCaptions(realTimeSource(report), {
    onPartial: () => { report.partials += 1; },
    onFinal: (turn) => report.finals.push(turn.text),
    onStarted: (credits) => { report.started = credits; },
    onRenewed: (event) => { report.renewals.push({ ...event, at: Date.now() }); log('renewed', event.tokenNumber); },
    onError: (error) => report.errors.push({ name: error.name, code: error.code, message: error.message }),
    onEnded: (event) => { report.ended = event.reason; },
  }, { keepAudioSeconds: 60, title: 'Kit e2e' });
  report.captionsStartedAt = Date.now();
  log('captions started', captions.sessionId);

  await until(() => report.finals.length >= 1, 30_000, 'a final caption');
  report.answer = await kit.ask('What did they just say?', report.finals.join(' '));
  log('asked during the session');

  await until(() => report.renewals.length >= MIN_RENEWALS, 120_000, `${MIN_RENEWALS} renewals`);
  await new Promise((resolve) => setTimeout(resolve, 3000)); // captions after the last switch
  report.bill = await captions.stop();
  report.captionsStoppedAt = Date.now();
  report.sessionId = captions.sessionId;
  log('stopped', report.bill);

  const statuses = [];
  report.job = await kit.catchUp({
    audio: captions.recentAudio(),
    streamUrl: 'https://www.twitch.tv/kit_e2e',
    onStatus: (status) => statuses.push(status),
    timeoutMs: 120_000,
  });
  report.catchupStatuses = statuses;
  log('caught up', report.job.status);

  report.history = (await kit.getHistory({ limit: 20 })).items.map((item) => item.kind);
  report.finalBalance = (await kit.getBalance()).balance;
  await kit.logout();
  console.log(JSON.stringify(report));
}

main().catch((error) => {
  console.error('[kit-e2e] failed:', error?.name, error?.code, error?.message, error?.body ?? '');
  process.exit(1);
});
