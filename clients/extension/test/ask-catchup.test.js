import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  encodeWav, wavMinutes, CatchupFailedError, KitError, NotFoundError, UploadError,
} from '../kit.js';
import { signedIn } from './fakes.js';


function wavOfSeconds(seconds, sampleRate = 8000) {
  return encodeWav([new Int16Array(sampleRate * seconds)], sampleRate);
}

test('each question carries its own Idempotency-Key', async () => {
  const { kit, backend } = await signedIn();
  const first = await kit.ask('Who won?', 'A transcript');
  await kit.ask('Who won?', 'A transcript');
  const keys = backend.requests.filter((r) => r.path === '/transcription/ask').map((r) => r.headers['Idempotency-Key']);
  assert.equal(new Set(keys).size, 2);
  assert.equal(first.answer, 'Answer to: Who won?');
  assert.equal(backend.users.values().next().value.credits_balance, 190, 'two questions, two charges');
});

test('an answer lost on the way back is replayed, not charged again', async () => {
  const { kit, backend, clock } = await signedIn();
  const balances = [];
  kit.onBalanceChanged((b) => balances.push(b));
  backend.failNext('POST', '/transcription/ask', 'lost'); // the server charged, the answer never arrived
  const asking = kit.ask('Who won?', 'A transcript');
  await clock.advance(5_000);
  const answer = await asking;
  const sent = backend.requests.filter((r) => r.path === '/transcription/ask');
  assert.equal(sent.length, 2);
  assert.equal(sent[0].headers['Idempotency-Key'], sent[1].headers['Idempotency-Key']);
  assert.equal(answer.remaining_balance, 195);
  assert.equal(backend.users.values().next().value.credits_balance, 195, 'charged once');
  assert.deepEqual(balances, [195]);
});

test('wavMinutes reads a WAV header, rounding up', async () => {
  const bytes = async (blob) => new Uint8Array(await blob.arrayBuffer());
  assert.equal(wavMinutes(await bytes(wavOfSeconds(59))), 1);
  assert.equal(wavMinutes(await bytes(wavOfSeconds(61))), 2);
  assert.equal(wavMinutes(new Uint8Array(44)), null);
});

test('catchUp uploads to the presigned URL, submits once and polls with backoff to the result', async () => {
  const { kit, backend, clock } = await signedIn();
  const audio = wavOfSeconds(90);
  const statuses = [];
  let job = null;
  kit.catchUp({ audio, streamUrl: 'https://www.twitch.tv/somechannel', onStatus: (s) => statuses.push(s) }).then((j) => { job = j; });

  await clock.until(() => backend.jobs.size === 1);
  const put = backend.requests.find((r) => r.path.startsWith('s3:'));
  assert.equal(put.method, 'PUT');
  assert.equal(put.headers['Content-Type'], 'audio/wav');
  assert.equal(put.headers.Authorization, undefined, 'the access token never goes to S3');
  const ticket = backend.requests.find((r) => r.path === '/transcription/catchup/upload');
  assert.deepEqual(ticket.body, { content_type: 'audio/wav', file_size: audio.size });
  const submit = backend.requests.find((r) => r.path === '/transcription/catchup');
  assert.equal(submit.body.duration_minutes, 2);
  assert.equal(submit.body.stream_url, 'https://www.twitch.tv/somechannel');
  assert.match(submit.body.audio_key, /^uploads\//);
  assert.ok(submit.headers['Idempotency-Key']);

  const [jobId] = backend.jobs.keys();
  await clock.advance(60_000);
  assert.equal(job, null);
  backend.jobs.get(jobId).status = 'processing';
  await clock.advance(20_000);
  backend.finishJob(jobId);
  await clock.until(() => job !== null);

  assert.equal(job.status, 'completed');
  assert.equal(job.result.summary, 'They talked.');
  assert.deepEqual(statuses, ['uploading', 'queued', 'processing', 'completed']);
  const times = backend.jobs.get(jobId).pollTimes;
  const gaps = times.slice(1).map((t, i) => t - times[i]);
  assert.equal(gaps[0], 2000);
  assert.ok(gaps.every((gap, i) => i === 0 || gap >= gaps[i - 1]));
  assert.ok(gaps.at(-1) <= 10_000);
});

test('a failed job is a CatchupFailedError with the job', async () => {
  const { kit, backend, clock } = await signedIn();
  const failing = kit.catchUp({ audio: wavOfSeconds(30), channel: 'somechannel' });
  const checked = assert.rejects(failing, (error) => {
    assert.ok(error instanceof CatchupFailedError);
    assert.equal(error.code, 'transcription_failed');
    assert.equal(error.job.credits_used, 0);
    return true;
  });
  await clock.until(() => backend.jobs.size === 1);
  backend.finishJob([...backend.jobs.keys()][0], { failed: true });
  await clock.advance(15_000);
  await checked;
});

test('an upload S3 refuses is an UploadError and submits nothing', async () => {
  const { kit, backend } = await signedIn();
  backend.uploadAnswers = [403];
  await assert.rejects(kit.catchUp({ audio: wavOfSeconds(10), channel: 'x' }), (error) => error instanceof UploadError && error.status === 403);
  assert.equal(backend.jobs.size, 0);
  assert.equal(backend.requests.filter((r) => r.path.startsWith('s3:')).length, 1, 'a refusal is not retried');
});

test('an upload that S3 answers with 503 is retried', async () => {
  const { kit, backend, clock } = await signedIn();
  backend.uploadAnswers = [503];
  const uploading = kit.uploadAudio(wavOfSeconds(5));
  await clock.advance(3_000);
  assert.match(await uploading, /^uploads\//);
});

test('audio that is not WAV needs durationMinutes', async () => {
  const { kit } = await signedIn();
  const webm = new Blob([new Uint8Array(500)], { type: 'audio/webm' });
  await assert.rejects(kit.catchUp({ audio: webm, channel: 'x' }), (e) => e instanceof KitError && e.code === 'duration_required');
});

test('an unknown job is a NotFoundError; history pages pass limit and cursor', async () => {
  const { kit, backend } = await signedIn();
  await assert.rejects(kit.getCatchup('0'.repeat(32)), NotFoundError);
  await kit.ask('q', 't');
  const page = await kit.getHistory({ limit: 5, cursor: 'abc' });
  assert.equal(page.items[0].kind, 'ask');
  assert.deepEqual(backend.requests.at(-1).query, { limit: '5', cursor: 'abc' });
});

test('onBalanceChanged reports what the user owns while a job holds credits, then the charge', async () => {
  const { kit, backend, clock } = await signedIn();
  const seen = [];
  kit.onBalanceChanged((b) => seen.push(b));
  let job = null;
  kit.catchUp({ audio: wavOfSeconds(30), channel: 'somechannel' }).then((j) => { job = j; });
  await clock.until(() => backend.jobs.size === 1);
  assert.deepEqual(seen, [], 'the submit answer (what is left to spend) is not reported as the balance');
  backend.finishJob([...backend.jobs.keys()][0]);
  await clock.until(() => job !== null);
  await clock.advance(0);
  assert.deepEqual(seen, [190]);
});
