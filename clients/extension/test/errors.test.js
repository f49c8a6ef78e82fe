import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  errorFromResponse, ApiError, ConflictError, InsufficientCreditsError,
  NetworkError, NotFoundError, PayloadTooLargeError, RateLimitError, ServiceError, ValidationError,
} from '../kit.js';
import { signedIn } from './fakes.js';


test('402 is an InsufficientCreditsError carrying balance and required', async () => {
  const { kit, backend } = await signedIn();
  backend.users.values().next().value.credits_balance = 3;
  await assert.rejects(kit.ask('What did they say?', 'hello'), (error) => {
    assert.ok(error instanceof InsufficientCreditsError);
    assert.ok(error instanceof ApiError);
    assert.equal(error.status, 402);
    assert.equal(error.code, 'insufficient_credits');
    assert.equal(error.balance, 3);
    assert.equal(error.required, 5);
    assert.equal(error.message, 'Insufficient credits');
    return true;
  });
});

test('429 is a RateLimitError with retryAfter, and is not retried by the kit', async () => {
  const { kit, backend } = await signedIn();
  backend.failNext('GET', '/credits/balance', 429, { code: 'rate_limited', message: 'Too many requests', retry_after: 37 }, { 'Retry-After': '37' });
  const sent = backend.requests.length;
  await assert.rejects(kit.getBalance(), (error) => {
    assert.ok(error instanceof RateLimitError);
    assert.equal(error.retryAfter, 37);
    return true;
  });
  assert.equal(backend.requests.length, sent + 1);
});

test('retryAfter falls back to the body when the header is not exposed', () => {
  const error = errorFromResponse(429, { error: 'Slow down', message: 'Slow down', code: 'rate_limited', retry_after: 12 }, new Headers());
  assert.ok(error instanceof RateLimitError);
  assert.equal(error.retryAfter, 12);
});

test('each status maps to its class, and the envelope details stay on the error', () => {
  const cases = [
    [400, ValidationError, 'invalid_json'], [404, NotFoundError, 'job_not_found'], [409, ConflictError, 'too_many_sessions'],
    [413, PayloadTooLargeError, 'payload_too_large'], [422, ValidationError, 'validation_error'], [502, ServiceError, 'upstream_error'],
    [503, ServiceError, 'provider_busy'], [418, ApiError, 'teapot'],
  ];
  for (const [status, Type, code] of cases) {
    const error = errorFromResponse(status, { error: 'text', message: 'text', code, field: 'question' }, new Headers({ 'X-Request-Id': 'r-1' }));
    assert.ok(error instanceof Type, `${status} -> ${Type.name}`);
    assert.equal(error.code, code);
    assert.equal(error.requestId, 'r-1');
  }
  assert.equal(errorFromResponse(422, { message: 'bad', code: 'validation_error', field: 'duration_minutes' }).field, 'duration_minutes');
});

test('a body that is not the envelope (a proxy page) still gives a typed error', async () => {
  const { kit, backend } = await signedIn();
  backend.failNext('GET', '/auth/user', 502, '<html>Bad Gateway</html>', { 'Content-Type': 'text/html' });
  await assert.rejects(kit.getUser(), (error) => {
    assert.ok(error instanceof ServiceError);
    assert.equal(error.code, 'http_502');
    assert.equal(error.message, 'HTTP 502');
    return true;
  });
});

test('a GET is retried after a network failure and a short 503', async () => {
  const { kit, backend, clock } = await signedIn();
  backend.failNext('GET', '/credits/balance', 'network');
  backend.failNext('GET', '/credits/balance', 503, { code: 'service_unavailable' }, { 'Retry-After': '1' });
  const pending = kit.getBalance();
  await clock.advance(5_000);
  assert.equal((await pending).balance, 200);
  assert.equal(backend.requests.filter((r) => r.path === '/credits/balance').length, 3);
});

test('a POST without an Idempotency-Key is never repeated', async () => {
  const { kit, backend } = await signedIn();
  backend.failNext('POST', '/transcription/catchup/upload', 'network');
  await assert.rejects(kit.uploadAudio(new Blob([new Uint8Array(100)], { type: 'audio/wav' })), NetworkError);
  assert.equal(backend.requests.filter((r) => r.path === '/transcription/catchup/upload').length, 1);
});

test('a long Retry-After is left to the caller', async () => {
  const { kit, backend } = await signedIn();
  backend.failNext('GET', '/credits/balance', 503, { code: 'ledger_busy' }, { 'Retry-After': '30' });
  await assert.rejects(kit.getBalance(), (error) => error instanceof ServiceError && error.retryAfter === 30);
});
