import { test } from 'node:test';
import assert from 'node:assert/strict';

import { createKit, memoryStorage, CheckoutError, ValidationError } from '../kit.js';
import { setup, signedIn } from './fakes.js';


const txnOf = (url) => new URL(url).searchParams.get('txn');

test('balance changes are reported once each', async () => {
  const { kit, backend } = await signedIn();
  const seen = [];
  kit.onBalanceChanged((balance) => seen.push(balance));
  await kit.getBalance();
  await kit.getBalance();
  backend.users.values().next().value.credits_balance = 150;
  await kit.getBalance();
  await kit.getUser();
  assert.deepEqual(seen, [150]);
});

test('the catalogue needs no sign-in', async () => {
  const { options } = setup();
  const kit = createKit({ ...options, storage: memoryStorage() });
  const { packages, plans } = await kit.getCatalogue();
  assert.deepEqual(packages.map((p) => p.id), ['starter', 'popular']);
  assert.equal(plans[0].tier, 'basic');
});

test('buy opens Checkout and resolves when the credits arrived', async () => {
  const { kit, backend, tabs, clock } = await signedIn();
  const paid = [];
  const balances = [];
  kit.onPaid((payment) => paid.push(payment));
  kit.onBalanceChanged((balance) => balances.push(balance));

  let settled = null;
  const buying = kit.buy('starter').then((value) => { settled = value; });
  await clock.until(() => tabs.opened.length === 1);
  const purchase = backend.requests.find((r) => r.path === '/credits/purchase');
  assert.deepEqual(purchase.body, { package_id: 'starter' });
  assert.ok(purchase.headers['Idempotency-Key'], 'a purchase carries an Idempotency-Key');
  assert.match(tabs.last.url, /^https:\/\/checkout\.test\//);

  await clock.advance(30_000);
  assert.equal(settled, null, 'nothing resolves before the payment');
  backend.pay(txnOf(tabs.last.url));
  await clock.until(() => settled !== null);
  await buying;

  assert.deepEqual(settled, { kind: 'purchase', transactionId: txnOf(tabs.last.url), packageId: 'starter', credits: 500, balance: 700 });
  assert.deepEqual(paid, [settled]);
  assert.deepEqual(balances, [700]);
  const polls = backend.requests.filter((r) => r.path === '/credits/transactions').map((r) => r.at);
  const gaps = polls.slice(1).map((at, i) => at - polls[i]);
  assert.ok(gaps.every((gap, i) => i === 0 || gap >= gaps[i - 1]), 'polling slows down, never speeds up');
  assert.ok(Math.max(...gaps) <= 10_000);
});

test('a failed or expired Checkout rejects with its outcome', async () => {
  for (const outcome of ['failed', 'expired']) {
    const { kit, backend, tabs, clock } = await signedIn();
    const buying = kit.buy('popular');
    const checked = assert.rejects(buying, (error) => {
      assert.ok(error instanceof CheckoutError);
      assert.equal(error.outcome, outcome);
      assert.equal(error.code, `checkout_${outcome}`);
      return true;
    });
    await clock.until(() => tabs.opened.length === 1);
    backend.setStatus(txnOf(tabs.last.url), outcome);
    await clock.advance(20_000);
    await checked;
    assert.deepEqual(await kit.resumePurchases(), [], 'a settled purchase is no longer pending');
  }
});

test('closing the Checkout tab without paying cancels after a grace period', async () => {
  const { kit, tabs, clock } = await signedIn();
  const buying = kit.buy('starter');
  const checked = assert.rejects(buying, (error) => error instanceof CheckoutError && error.outcome === 'cancelled');
  await clock.until(() => tabs.opened.length === 1);
  tabs.close(tabs.last.id);
  await clock.advance(60_000);
  await checked;
});

test('a payment landing just after the tab closed still counts', async () => {
  const { kit, backend, tabs, clock } = await signedIn();
  let result = null;
  kit.buy('starter').then((value) => { result = value; });
  await clock.until(() => tabs.opened.length === 1);
  tabs.close(tabs.last.id);
  await clock.advance(5_000);
  backend.pay(txnOf(tabs.last.url));
  await clock.until(() => result !== null, { maxMs: 30_000 });
  assert.equal(result.balance, 700);
});

test('an unknown pack is refused before any tab opens', async () => {
  const { kit, tabs } = await signedIn();
  await assert.rejects(kit.buy('gold'), (error) => error instanceof ValidationError && error.code === 'unknown_package');
  assert.equal(tabs.opened.length, 0);
});

test('a purchase started by a closed popup is finished by another context', async () => {
  const { kit: popup, backend, tabs, clock, storage, options } = await signedIn();
  popup.buy('starter').catch(() => {}); // the popup closes as the tab opens: nobody awaits this
  await clock.until(() => tabs.opened.length === 1);

  const worker = createKit({ ...options, storage });
  const paid = [];
  worker.onPaid((payment) => paid.push(payment));
  let resumed = null;
  worker.resumePurchases().then((value) => { resumed = value; });
  backend.pay(txnOf(tabs.last.url));
  await clock.until(() => resumed !== null);
  assert.equal(resumed.length, 1);
  assert.equal(resumed[0].credits, 500);
  assert.equal(paid.length, 1);
  assert.deepEqual(await storage.get('transcriptionKit.purchases'), []);
});

test('subscribe resolves when the plan is active and its allowance arrived', async () => {
  const { kit, backend, tabs, clock } = await signedIn();
  let result = null;
  kit.subscribe('basic_monthly').then((value) => { result = value; });
  await clock.until(() => tabs.opened.length === 1);
  const sent = backend.requests.find((r) => r.path === '/credits/subscribe');
  assert.deepEqual(sent.body, { plan_id: 'basic_monthly' });
  assert.ok(sent.headers['Idempotency-Key']);
  await clock.advance(10_000);
  assert.equal(result, null);
  backend.paySubscription(new URL(tabs.last.url).pathname.slice(1));
  await clock.until(() => result !== null);
  assert.deepEqual(result, { kind: 'subscription', planId: 'basic_monthly', tier: 'basic', credits: 1500, balance: 1700 });
});

test('the billing portal opens in a tab', async () => {
  const { kit, tabs } = await signedIn();
  assert.equal(await kit.openBillingPortal(), 'https://billing.test/portal/1');
  assert.equal(tabs.last.url, 'https://billing.test/portal/1');
});
