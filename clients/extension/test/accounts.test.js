import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  createKit, memoryStorage, AuthError, NotSignedInError, SessionExpiredError,
} from '../kit.js';
import { setup, signedIn, fakeLocks } from './fakes.js';


test('register keeps the session in storage and reports the user and the signup balance', async () => {
  const { storage, options, backend } = setup();
  const kit = createKit({ ...options, storage: storage ?? memoryStorage() });
  const seen = { users: [], balances: [] };
  kit.onSignedIn((user) => seen.users.push(user));
  kit.onBalanceChanged((balance) => seen.balances.push(balance));

  const user = await kit.register({ email: 'ada@example.com', password: 'correct horse battery', name: 'Ada' });

  assert.equal(user.email, 'ada@example.com');
  assert.equal(user.token, undefined, 'the access token is not handed out as part of the user');
  assert.deepEqual(seen.balances, [200]);
  assert.equal(seen.users.length, 1);
  assert.equal(await kit.isSignedIn(), true);
  assert.deepEqual(backend.requests[0].body, { email: 'ada@example.com', password: 'correct horse battery', name: 'Ada' });
  const me = await kit.getUser();
  assert.equal(me.credits_balance, 200);
  assert.match(backend.requests.at(-1).headers.Authorization, /^Bearer at-/);
});

test('a wrong password is an AuthError and signs no one in', async () => {
  const { options } = setup();
  const kit = createKit({ ...options, storage: memoryStorage() });
  await kit.register({ email: 'ada@example.com', password: 'correct horse battery' });
  await kit.logout();
  await assert.rejects(kit.login('ada@example.com', 'wrong password!'), (error) => {
    assert.ok(error instanceof AuthError);
    assert.equal(error.code, 'invalid_credentials');
    assert.equal(error.message, 'Invalid email or password');
    return true;
  });
  assert.equal(await kit.isSignedIn(), false);
  await assert.rejects(kit.getBalance(), NotSignedInError);
});

test('an access token close to expiry is rotated before the request, and the old refresh token is spent', async () => {
  const { kit, clock, backend, storage } = await signedIn();
  const before = await storage.get('transcriptionKit.session');
  await clock.advance(14.5 * 60_000); // 30 s left of 15 minutes: inside the refresh margin
  await kit.getBalance();
  const after = await storage.get('transcriptionKit.session');
  const calls = backend.requests.map((r) => `${r.method} ${r.path}`);
  assert.deepEqual(calls.slice(-2), ['POST /auth/refresh', 'GET /credits/balance']);
  assert.notEqual(after.refresh_token, before.refresh_token);
  assert.notEqual(after.token, before.token);
  assert.equal(backend.requests.at(-1).headers.Authorization, `Bearer ${after.token}`);
  assert.equal(backend.refreshTokens.get(before.refresh_token).used, true);
});

test('a token refused before its expiry is rotated once and the request repeated', async () => {
  const { kit, backend, storage } = await signedIn();
  const { token } = await storage.get('transcriptionKit.session');
  backend.accessTokens.get(token).revoked = true;
  const balance = await kit.getBalance();
  assert.equal(balance.balance, 200);
  const calls = backend.requests.map((r) => `${r.method} ${r.path}`).slice(-3);
  assert.deepEqual(calls, ['GET /credits/balance', 'POST /auth/refresh', 'GET /credits/balance']);
});

test('parallel calls with an expired token rotate it once', async () => {
  const { kit, clock, backend } = await signedIn();
  await clock.advance(16 * 60_000);
  await Promise.all([kit.getBalance(), kit.getUser(), kit.getHistory(), kit.listTransactions()]);
  assert.equal(backend.requests.filter((r) => r.path === '/auth/refresh').length, 1);
});

test('two contexts sharing the session never present one refresh token twice', async () => {
  const locks = fakeLocks();
  const { kit: popup, clock, backend, storage, options } = await signedIn({ kit: { locks } });
  const worker = createKit({ ...options, storage, locks });
  await clock.advance(16 * 60_000);
  const [a, b] = await Promise.all([popup.getBalance(), worker.getBalance()]);
  assert.equal(a.balance, 200);
  assert.equal(b.balance, 200);
  const refreshes = backend.requests.filter((r) => r.path === '/auth/refresh');
  assert.equal(refreshes.length, 1, 'the second context used the token the first one stored');
  assert.equal(backend.revokedFamilies.size, 0);
});

test('a reused refresh token signs the user out cleanly', async () => {
  const { kit, clock, backend, storage } = await signedIn();
  const reasons = [];
  kit.onSignedOut((reason) => reasons.push(reason));
  const stolen = (await storage.get('transcriptionKit.session')).refresh_token;
  // Someone else (a thief, a copied profile) rotated the token first.
  await backend.fetch(`${backend.baseUrl}/auth/refresh`, { method: 'POST', body: JSON.stringify({ refresh_token: stolen }) });
  await clock.advance(16 * 60_000);

  await assert.rejects(kit.getBalance(), (error) => {
    assert.ok(error instanceof SessionExpiredError);
    assert.equal(error.code, 'refresh_token_reused');
    return true;
  });
  assert.deepEqual(reasons, ['refresh_token_reused']);
  assert.equal(await storage.get('transcriptionKit.session'), null);
  assert.equal(await kit.isSignedIn(), false);
  const sent = backend.requests.length;
  await assert.rejects(kit.getBalance(), NotSignedInError);
  assert.equal(backend.requests.length, sent, 'nothing is sent once signed out');
  assert.ok(backend.revokedFamilies.size === 1, 'the server revoked the family');
});

test('a deleted account signs the user out', async () => {
  const { kit, backend } = await signedIn();
  const reasons = [];
  kit.onSignedOut((reason) => reasons.push(reason));
  backend.users.clear();
  await assert.rejects(kit.getUser(), SessionExpiredError);
  assert.deepEqual(reasons, ['account_not_found']);
  assert.equal(await kit.isSignedIn(), false);
});

test('logout revokes the session on the server and in every context', async () => {
  const { kit, backend, storage, options } = await signedIn();
  const other = createKit({ ...options, storage });
  const otherReasons = [];
  other.onSignedOut((reason) => otherReasons.push(reason));
  await other.getBalance();
  const { refresh_token: refreshToken } = await storage.get('transcriptionKit.session');

  assert.deepEqual(await kit.logout(), { revoked: true });

  assert.equal(await storage.get('transcriptionKit.session'), null);
  assert.deepEqual(otherReasons, ['signed_out_elsewhere']);
  const reuse = await backend.fetch(`${backend.baseUrl}/auth/refresh`, { method: 'POST', body: JSON.stringify({ refresh_token: refreshToken }) });
  assert.equal(reuse.status, 401);
});

test('logout while offline still forgets the session', async () => {
  const { kit, backend } = await signedIn();
  backend.failNext('POST', '/auth/logout', 'network');
  assert.deepEqual(await kit.logout(), { revoked: false });
  assert.equal(await kit.isSignedIn(), false);
});

test('the balance seen in one context reaches the other', async () => {
  const { kit, storage, options, backend } = await signedIn();
  const other = createKit({ ...options, storage });
  const seen = [];
  other.onBalanceChanged((balance) => seen.push(balance));
  backend.users.values().next().value.credits_balance = 700;
  await kit.getBalance();
  assert.deepEqual(seen, [700]);
});

test('a suspended account signs the user out without trying to refresh', async () => {
  const { kit, backend } = await signedIn();
  const reasons = [];
  kit.onSignedOut((reason) => reasons.push(reason));
  backend.failNext('GET', '/credits/balance', 401, { code: 'account_suspended', message: 'Account suspended' });
  await assert.rejects(kit.getBalance(), (error) => error instanceof SessionExpiredError && error.code === 'account_suspended');
  assert.deepEqual(reasons, ['account_suspended']);
  assert.equal(backend.requests.filter((r) => r.path === '/auth/refresh').length, 0);
});

test('a token revoked by a logout elsewhere is replaced through the refresh token', async () => {
  const { kit, backend } = await signedIn();
  backend.failNext('GET', '/credits/balance', 401, { code: 'token_revoked', message: 'Token revoked' });
  assert.equal((await kit.getBalance()).balance, 200);
  assert.equal(backend.requests.filter((r) => r.path === '/auth/refresh').length, 1);
});

test('a rotation in one context is not a new sign-in for the others', async () => {
  const { kit, clock, storage, options } = await signedIn();
  const other = createKit({ ...options, storage });
  const events = [];
  other.onSignedIn(() => events.push('in'));
  other.onSignedOut((reason) => events.push(reason));
  await clock.advance(16 * 60_000);
  await kit.getBalance(); // rotates the session in storage
  await kit.logout();
  assert.deepEqual(events, ['signed_out_elsewhere']);
});

test('short access tokens are used for three quarters of their life before a rotation', async () => {
  const { kit, clock, backend } = await signedIn({ backend: { accessTtlSeconds: 20 } });
  await kit.getBalance();
  await clock.advance(14_000);
  await kit.getBalance();
  assert.equal(backend.requests.filter((r) => r.path === '/auth/refresh').length, 0);
  await clock.advance(2_000);
  await kit.getBalance();
  assert.equal(backend.requests.filter((r) => r.path === '/auth/refresh').length, 1);
});
