import { test } from 'node:test';
import assert from 'node:assert/strict';

import { createKit, memoryStorage, wavMinutes, CaptionsError, InsufficientCreditsError } from '../kit.js';
import { setup, signedIn, FakePcmSource } from './fakes.js';

async function live({ credits = 1000, backend: backendOptions, options = {} } = {}) {
  const world = await signedIn({ backend: backendOptions });
  const { kit, user } = world;
  user.credits_balance = credits;
  const source = new FakePcmSource();
  const events = { partial: [], final: [], started: [], renewed: [], ended: [], stopped: [], errors: [], balances: [] };
  kit.onBalanceChanged((b) => events.balances.push(b));
  const callbacks = {
    onPartial: (t) => events.partial.push(t), onFinal: (t) => events.final.push(t),
    onStarted: (e) => events.started.push(e), onRenewed: (e) => events.renewed.push(e),
    onEnded: (e) => events.ended.push(e), onStopped: (b) => events.stopped.push(b), onError: (e) => events.errors.push(e),
  };
  const starting = kit.startCaptions(source, callbacks, options);
  await world.clock.advance(0);
  const captions = await starting;
  /** Real-time audio: one 100 ms frame per 100 ms of clock. */
  const speak = async (seconds) => {
    for (let i = 0; i < seconds * 10; i += 1) { source.push(1); await world.clock.advance(100); }
  };
  return { ...world, kit, user, source, events, captions, speak };
}

const streamCalls = (backend, action) => backend.requests.filter((r) => r.path === '/transcription/stream' && (!action || r.body.action === action));

/** Every frame the service received, in socket order, as the sequence numbers the source wrote. */
function received(streaming) {
  return streaming.sockets.flatMap((socket) => socket.frames.map((frame) => frame[0]));
}

function assertNoGap(streaming, source) {
  const sequence = received(streaming);
  assert.equal(sequence.length, source.sequence, 'every frame reached the service exactly once');
  sequence.forEach((value, i) => assert.equal(value, i + 1, `frame ${i + 1} in order`));
}

test('start opens the token\'s socket and turns arrive as partials, then one final each', async () => {
  const { backend, streaming, events, speak, captions } = await live();
  const [start] = streamCalls(backend, 'start');
  assert.deepEqual(start.body, { action: 'start', renewable: true, sample_rate: 16000 });
  assert.ok(start.headers['Idempotency-Key']);
  assert.equal(streaming.sockets.length, 1);
  assert.ok(backend.sessions.has(captions.sessionId));
  assert.match(streaming.sockets[0].url, /token=tmp-1/);
  assert.equal(events.started[0].balance, 1000);
  assert.equal(events.started[0].held, 100);

  await speak(7);
  assert.equal(streaming.sockets[0].frames[0].length, 1600, '100 ms frames of 16 kHz PCM16');
  // The fake names each second of audio after the frame that completed it (frames 10, 20, ...).
  assert.deepEqual(events.final.map((t) => t.text), ['W10 w20 w30.', 'W40 w50 w60.']);
  assert.deepEqual(events.final.map((t) => t.turn), [0, 1]);
  assert.deepEqual(events.partial.filter((t) => t.turn === 0).map((t) => t.text), ['w10', 'w10 w20', 'w10 w20 w30']);
});

test('a 45-minute session renews four times with no gap and is billed 45 minutes', async () => {
  const { backend, streaming, source, events, speak, captions, user } = await live({ credits: 1000 });
  let maxOpen = 1;
  const realPush = source.push.bind(source);
  source.push = (n) => { realPush(n); maxOpen = Math.max(maxOpen, streaming.open.length); };

  await speak(45 * 60);
  const bill = await captions.stop();

  assert.equal(events.renewed.length, 4);
  assert.equal(streaming.sockets.length, 5);
  assertNoGap(streaming, source);
  assert.ok(maxOpen <= 2, 'at most the old and the new socket at once');
  for (const socket of streaming.sockets) {
    assert.equal(socket.closeCode, 1000, 'every socket ended by Terminate, none ran out (3008)');
    assert.ok(socket.sent.some((m) => m === JSON.stringify({ type: 'Terminate' })));
  }
  // the renew was asked renew_in_seconds (555 s) after each token arrived
  const renews = streamCalls(backend, 'renew');
  assert.deepEqual(renews.map((r) => r.body.token_number), [1, 2, 3, 4]);
  const start = streamCalls(backend, 'start')[0];
  assert.ok(Math.abs(renews[0].at - start.at - 555_000) <= 100);
  assert.equal(streamCalls(backend).length, 6, 'start + 4 renews + stop: no heartbeats, no polling');
  assert.equal(bill.duration_minutes, 45);
  assert.equal(bill.credits_used, 450);
  assert.equal(user.credits_balance, 550);
  assert.equal(user.credits_held, 0);
  assert.equal(events.balances.at(-1), 550);
  assert.equal(events.errors.length, 0);
  assert.equal(events.final.length, Math.floor(45 * 60 / 3), 'a final for every turn, none lost at the switches');
});

test('stop sends Terminate, delivers the last turn, then settles', async () => {
  const { backend, streaming, source, events, speak, captions } = await live();
  await speak(4);
  const bill = await captions.stop();
  const socket = streaming.sockets[0];
  assert.equal(socket.sent.at(-1), JSON.stringify({ type: 'Terminate' }));
  assert.deepEqual(events.final.map((t) => t.text), ['W10 w20 w30.', 'W40.']);
  assert.equal(bill.duration_minutes, 1);
  assert.equal(bill.credits_used, 10);
  assert.deepEqual(events.stopped, [bill]);
  assert.equal(source.stopped, true);
  assert.equal(await captions.stop(), bill, 'stopping twice is the same stop');
  assert.equal(streamCalls(backend, 'stop').length, 1);
});

test('a renewal that fails for a while is retried, paid once, and the held audio is delivered', async () => {
  const { backend, streaming, source, events, speak, captions, user } = await live({ backend: { tokenMinutes: 2 } });
  backend.failNext('POST', '/transcription/stream', 503, { code: 'provider_busy' }, {}, { times: 6, when: (b) => b.action === 'renew' });
  await speak(4 * 60);
  assert.ok(streamCalls(backend, 'renew').length >= 7);
  assert.equal(streaming.sockets[0].closeCode, 3008, 'the first token ran out while AssemblyAI was busy');
  const bill = await captions.stop();
  assertNoGap(streaming, source);
  const { renews } = backend.sessions.get(captions.sessionId);
  assert.equal(events.renewed.length, renews);
  assert.equal(streaming.tokens.size, renews + 1, 'retries minted and paid no extra token');
  assert.equal(bill.duration_minutes, 4);
  assert.equal(user.credits_balance, 960);
});

test('a renew answer lost on the way is replayed: the same token, not paid twice', async () => {
  const { backend, streaming, source, speak, captions } = await live({ backend: { tokenMinutes: 2 } });
  backend.failNext('POST', '/transcription/stream', 'lost', {}, {}, { when: (b) => b.action === 'renew' });
  await speak(3 * 60);
  await captions.stop();
  const session = backend.sessions.get(captions.sessionId);
  assert.equal(streaming.tokens.size, session.renews + 1, 'the replayed renew minted nothing more');
  assert.equal(streaming.sockets.length, streaming.tokens.size);
  assertNoGap(streaming, source);
});

test('402 at renewal: captions run to the end of the paid token, then the session is settled', async () => {
  const { backend, streaming, events, speak, user } = await live({ credits: 30, backend: { tokenMinutes: 2 } });
  // 30 credits: a 2-minute token (20), and only 10 left: the next token is 1 minute, then nothing.
  await speak(4 * 60);
  assert.equal(events.ended.length, 1);
  assert.equal(events.ended[0].reason, 'insufficient_credits');
  assert.ok(events.errors.some((e) => e instanceof InsufficientCreditsError));
  assert.equal(events.ended[0].bill.duration_minutes, 3);
  assert.equal(user.credits_balance, 0);
  assert.equal(streaming.sockets.at(-1).closeCode, 3008);
  assert.equal(streamCalls(backend, 'stop').length, 1);
});

test('credits bought before the token ends resume the renewals', async () => {
  const { backend, kit, events, speak, user, captions, streaming, source } = await live({ credits: 20, backend: { tokenMinutes: 2 } });
  await speak(90);
  assert.ok(events.errors.some((e) => e instanceof InsufficientCreditsError));
  user.credits_balance += 500; // a purchase landed
  await kit.getBalance();
  await speak(60);
  assert.equal(events.renewed.length, 1);
  assert.equal(events.ended.length, 0);
  await captions.stop();
  assertNoGap(streaming, source);
});

test('at the session\'s longest time a new session carries on without a gap', async () => {
  const { backend, streaming, source, events, speak, captions } = await live({ backend: { tokenMinutes: 2, sessionMaxMinutes: 4 } });
  await speak(7 * 60);
  const bill = await captions.stop();
  const starts = streamCalls(backend, 'start').length;
  assert.ok(starts >= 2);
  assert.equal(events.renewed.filter((e) => e.newSession).length, starts - 1);
  assertNoGap(streaming, source);
  assert.equal(bill.sessions.length, starts);
  assert.equal(bill.duration_minutes, bill.sessions.reduce((sum, b) => sum + b.duration_minutes, 0));
  assert.ok(bill.duration_minutes >= 7 && bill.duration_minutes <= 7 + starts - 1, 'rounded up once per session');
  assert.equal(bill.credits_used, bill.duration_minutes * 10);
  assert.equal([...backend.sessions.values()].every((s) => s.state === 'stopped'), true);
});

test('a connection lost mid-token is replaced by a new session, with the audio held meanwhile', async () => {
  const { backend, streaming, source, events, speak, captions } = await live();
  await speak(60);
  streaming.close(streaming.sockets[0], 1006, 'abnormal');
  await speak(60);
  assert.ok(events.errors.some((e) => e instanceof CaptionsError && e.code === 'socket_closed'));
  assert.equal(streamCalls(backend, 'start').length, 2);
  await captions.stop();
  const sequence = received(streaming);
  assert.deepEqual(sequence, [...new Set(sequence)], 'no frame twice');
  assert.ok(source.sequence - sequence.length <= 1, 'at most the frame in flight when the socket dropped is lost');
});

test('a refused socket fails the start and settles the session', async () => {
  const world = setup();
  const kit = createKit({ ...world.options, storage: memoryStorage() });
  await kit.register({ email: 'ada@example.com', password: 'correct horse battery' });
  world.streaming.refuseAll = true;
  const source = new FakePcmSource();
  const starting = kit.startCaptions(source, {});
  const checked = assert.rejects(starting, (e) => e instanceof CaptionsError && e.code === 'socket_refused' && e.status === 1008);
  await world.clock.advance(0);
  await checked;
  assert.equal(source.stopped, true);
  assert.equal(streamCalls(world.backend, 'stop').length, 1, 'the session is stopped, its credits come back');
});

test('402 at start: no socket, the source is released', async () => {
  const { options, streaming, backend } = setup();
  const kit = createKit({ ...options, storage: memoryStorage() });
  await kit.register({ email: 'ada@example.com', password: 'correct horse battery' });
  backend.users.values().next().value.credits_balance = 5;
  const source = new FakePcmSource();
  await assert.rejects(kit.startCaptions(source, {}), (e) => e instanceof InsufficientCreditsError && e.balance === 5 && e.required === 10);
  assert.equal(streaming.sockets.length, 0);
  assert.equal(source.stopped, true);
});

test('Ask works during a session and the balance follows', async () => {
  const { kit, events, speak, captions } = await live({ credits: 200 });
  await speak(3);
  const answer = await kit.ask('What was said?', events.final.map((t) => t.text).join(' '));
  assert.equal(answer.remaining_balance, 195);
  await captions.stop();
  assert.equal(events.balances.at(-1), 185);
});

test('recentAudio hands the last seconds to catch-up as WAV', async () => {
  const { speak, captions } = await live({ options: { keepAudioSeconds: 5 } });
  await speak(8);
  const wav = captions.recentAudio();
  assert.equal(wav.type, 'audio/wav');
  assert.equal(wav.size, 44 + 5 * 16000 * 2);
  const bytes = new Uint8Array(await wav.arrayBuffer());
  assert.equal(new Int16Array(bytes.buffer.slice(44, 46))[0], 31, 'the oldest frame kept is 5 s back');
  assert.equal(wavMinutes(bytes), 1);
  await captions.stop();
});

test('the last bit of audio at stop is padded to the 50 ms AssemblyAI requires', async () => {
  const { streaming, source, speak, captions } = await live();
  await speak(1);
  source.onChunk(new Int16Array(480).fill(7)); // 30 ms
  await captions.stop();
  const frames = streaming.sockets[0].frames;
  assert.equal(frames.at(-1).length, 800);
  assert.deepEqual([...frames.at(-1).subarray(478, 482)], [7, 7, 0, 0]);
  assert.ok(frames.slice(0, -1).every((f) => f.length === 1600));
});

test('a session the server will not renew runs its token out, then a new session carries on', async () => {
  const { backend, streaming, source, speak, captions } = await live({ backend: { tokenMinutes: 1, renewable: false } });
  await speak(90);
  assert.equal(streamCalls(backend, 'renew').length, 1, 'one renew, refused with not_renewable, once the token ran out');
  assert.equal(streamCalls(backend, 'start').length, 2);
  assert.equal(streaming.sockets[0].closeCode, 3008);
  await captions.stop();
  assertNoGap(streaming, source);
});
