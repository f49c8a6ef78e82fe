// Transcription kit: the backend's client for a Chrome extension (Manifest V3).
//
// One dependency-free ES module for the service worker and for extension pages (popup,
// options, offscreen document). It keeps the session in chrome.storage and rotates it,
// reports the balance as it changes, runs Stripe Checkout in a tab and tells when the
// credits arrived, streams live captions to AssemblyAI through the backend's temporary
// tokens (renewing them without a gap), asks questions, runs catch-up jobs, and turns the
// backend's error envelope into typed errors. Types: kit.d.ts. Docs: README.md.

export const KIT_VERSION = '1.0.0';

const MINUTE = 60_000;
/** Refresh the access token when it has less than this left (or a quarter of its lifetime, if shorter). */
const REFRESH_MARGIN_MS = 60_000;
/** Attempts for a request that is safe to repeat (a GET, or a POST with an Idempotency-Key). */
const SAFE_ATTEMPTS = 3;
/** The longest Retry-After the kit waits out by itself; longer ones reach the caller. */
const MAX_AUTO_RETRY_WAIT_MS = 5_000;

// ---------------------------------------------------------------------------------------
// Errors: one class per thing a caller may want to handle differently.

/** Anything the kit throws. `code` is the backend's machine code (or the kit's own). */
export class KitError extends Error {
  constructor(message, { code = 'kit_error', status = 0, body = null, requestId = null, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = new.target.name;
    this.code = code;
    this.status = status;
    this.body = body;
    this.requestId = requestId;
  }
}

/** An error answer of the API (the envelope `{error, message, code, ...}`). */
export class ApiError extends KitError {}
/** 400 / 422: the request was refused as invalid; `field` names the culprit when known. */
export class ValidationError extends ApiError {
  get field() { return this.body?.field ?? null; }
}
/** 401 from an authenticated route that a refresh could not fix. */
export class AuthError extends ApiError {}
/** The session is over (refresh token expired, revoked or reused; account deleted): signed out. */
export class SessionExpiredError extends AuthError {}
/** No one is signed in on this device. */
export class NotSignedInError extends AuthError {}
/** 402: not enough credits. */
export class InsufficientCreditsError extends ApiError {
  get balance() { return this.body?.balance ?? null; }
  get required() { return this.body?.required ?? null; }
  get pricePerMinute() { return this.body?.price_per_minute ?? null; }
}
/** 403. */
export class ForbiddenError extends ApiError {}
/** 404 (`session_not_found`, `job_not_found`, `audio_not_found`, ...). */
export class NotFoundError extends ApiError {}
/** 409 (`email_taken`, `too_many_sessions`, `already_subscribed`, ...). */
export class ConflictError extends ApiError {}
/** 413. */
export class PayloadTooLargeError extends ApiError {}
/** 429: slow down; `retryAfter` is in seconds. */
export class RateLimitError extends ApiError {
  constructor(message, options = {}) {
    super(message, options);
    this.retryAfter = options.retryAfter ?? null;
  }
}
/** 5xx: the backend or a provider behind it failed; nothing was charged. `retryAfter` in seconds when known. */
export class ServiceError extends ApiError {
  constructor(message, options = {}) {
    super(message, options);
    this.retryAfter = options.retryAfter ?? null;
  }
}
/** The request never got an answer (offline, DNS, CORS, connection reset). */
export class NetworkError extends KitError {}
/** A wait (Checkout, a catch-up job) took longer than allowed. */
export class TimeoutError extends KitError {}
/** The caller aborted through an AbortSignal. */
export class AbortError extends KitError {}
/** Checkout ended without credits: `outcome` is `failed`, `expired` or `cancelled` (tab closed). */
export class CheckoutError extends KitError {
  constructor(message, { outcome, transactionId, ...rest }) {
    super(message, { code: `checkout_${outcome}`, ...rest });
    this.outcome = outcome;
    this.transactionId = transactionId;
  }
}
/** A catch-up job failed (the backend refunded it); `job` is its last state. */
export class CatchupFailedError extends KitError {
  constructor(job) {
    super(job.error_message || 'The catch-up failed; nothing was charged.', { code: job.error || 'catchup_failed', body: job });
    this.job = job;
  }
}
/** The upload of catch-up audio to its presigned URL was refused. */
export class UploadError extends KitError {}
/** Live captions could not continue (socket refused, renewals failing). */
export class CaptionsError extends KitError {}

/** 401 codes after which no refresh can help: the user is signed out with this reason. */
const ACCOUNT_GONE = new Set(['account_not_found', 'account_suspended']);

const STATUS_ERRORS = {
  400: ValidationError, 401: AuthError, 402: InsufficientCreditsError, 403: ForbiddenError,
  404: NotFoundError, 409: ConflictError, 413: PayloadTooLargeError, 422: ValidationError,
  429: RateLimitError,
};

function retryAfterSeconds(headers, body) {
  const header = headers?.get?.('Retry-After');
  const value = header != null && header !== '' ? Number(header) : body?.retry_after;
  return Number.isFinite(value) ? value : null;
}

/** The typed error for an API answer (exported for callers that fetch by themselves). */
export function errorFromResponse(status, body, headers = null) {
  const envelope = body && typeof body === 'object' ? body : {};
  const message = envelope.message || envelope.error || `HTTP ${status}`;
  const options = {
    code: envelope.code || `http_${status}`,
    status,
    body: envelope,
    requestId: headers?.get?.('X-Request-Id') ?? envelope.request_id ?? null,
    retryAfter: retryAfterSeconds(headers, envelope),
  };
  const Type = STATUS_ERRORS[status] || (status >= 500 ? ServiceError : ApiError);
  return new Type(message, options);
}

// ---------------------------------------------------------------------------------------
// Small tools: a clock that tests can replace, events, waits, storage.

const systemClock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (id) => clearTimeout(id),
};

function sleep(clock, ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) { reject(abortError(signal)); return; }
    const onAbort = () => { clock.clearTimeout(id); reject(abortError(signal)); };
    const id = clock.setTimeout(() => { signal?.removeEventListener?.('abort', onAbort); resolve(); }, Math.max(0, ms));
    signal?.addEventListener?.('abort', onAbort, { once: true });
  });
}

function abortError(signal) {
  return new AbortError('Aborted', { code: 'aborted', cause: signal?.reason });
}

/** A tiny event emitter; a listener that throws never breaks the kit. */
class Listeners {
  constructor() { this.sets = new Map(); }
  on(name, listener) {
    if (!this.sets.has(name)) this.sets.set(name, new Set());
    this.sets.get(name).add(listener);
    return () => this.sets.get(name)?.delete(listener);
  }
  emit(name, ...args) {
    for (const listener of [...(this.sets.get(name) || [])]) {
      try { listener(...args); } catch (error) { console.error(`transcription kit: a ${name} listener threw`, error); }
    }
  }
}

/** Storage over a chrome.storage area (default `chrome.storage.local`), shared by every context of the extension. */
export function chromeStorage(area = globalThis.chrome?.storage?.local) {
  if (!area) throw new KitError('chrome.storage is not available here; pass options.storage', { code: 'no_storage' });
  return {
    async get(key) { const found = await area.get(key); return found[key] ?? null; },
    async set(key, value) { await area.set({ [key]: value }); },
    async remove(key) { await area.remove(key); },
    subscribe(listener) {
      const onChanged = (changes) => {
        for (const [key, change] of Object.entries(changes)) listener(key, change.newValue ?? null);
      };
      area.onChanged.addListener(onChanged);
      return () => area.onChanged.removeListener(onChanged);
    },
  };
}

/** In-memory storage (tests, or a page without chrome.storage); kits sharing one see each other's changes. */
export function memoryStorage(initial = {}) {
  const values = new Map(Object.entries(initial));
  const listeners = new Set();
  const notify = (key, value) => { for (const listener of [...listeners]) listener(key, value); };
  return {
    async get(key) { return values.has(key) ? structuredClone(values.get(key)) : null; },
    async set(key, value) { values.set(key, structuredClone(value)); notify(key, structuredClone(value)); },
    async remove(key) { values.delete(key); notify(key, null); },
    subscribe(listener) { listeners.add(listener); return () => listeners.delete(listener); },
  };
}

/** Tabs through chrome.tabs: open a URL, learn when the tab is closed. */
export function chromeTabs(tabs = globalThis.chrome?.tabs) {
  if (!tabs) throw new KitError('chrome.tabs is not available here; pass options.tabs', { code: 'no_tabs' });
  return {
    async open(url) { const tab = await tabs.create({ url }); return { id: tab.id }; },
    onClosed(tabId, listener) {
      const onRemoved = (closedId) => { if (closedId === tabId) listener(); };
      tabs.onRemoved.addListener(onRemoved);
      return () => tabs.onRemoved.removeListener(onRemoved);
    },
  };
}

function defaultRandomId() {
  return globalThis.crypto.randomUUID();
}

function backoff(attempt, { firstMs, factor = 1.5, maxMs }) {
  return Math.min(maxMs, firstMs * factor ** attempt);
}

// ---------------------------------------------------------------------------------------
// The kit.

/**
 * Create a client. Only `baseUrl` is required inside an extension; everything else is
 * there for other environments and for tests.
 */
export function createKit(options) {
  return new TranscriptionKit(options);
}

export class TranscriptionKit {
  constructor({
    baseUrl,
    storage,
    storageKey = 'transcriptionKit',
    fetch: fetchImpl,
    WebSocket: WebSocketImpl,
    tabs,
    clock = systemClock,
    randomId = defaultRandomId,
    locks,
  } = {}) {
    if (!baseUrl) throw new KitError('createKit needs options.baseUrl (the API URL)', { code: 'no_base_url' });
    this.baseUrl = String(baseUrl).replace(/\/+$/, '');
    this.storage = storage || chromeStorage();
    this.keys = { session: `${storageKey}.session`, balance: `${storageKey}.balance`, purchases: `${storageKey}.purchases` };
    this.fetchImpl = fetchImpl || globalThis.fetch.bind(globalThis);
    this.WebSocketImpl = WebSocketImpl || globalThis.WebSocket;
    this.tabsImpl = tabs;
    this.clock = clock;
    this.randomId = randomId;
    this.locks = locks === undefined ? globalThis.navigator?.locks ?? null : locks;
    this.events = new Listeners();
    this.lastBalance = undefined;
    this.refreshing = null;
    this.signedIn = undefined;
    this.storage.subscribe?.((key, value) => this.onStorageChanged(key, value));
    this.loadSession().then((session) => { this.signedIn ??= Boolean(session); }, () => {});
  }

  // ---- events --------------------------------------------------------------------------

  /** `listener(balance)` whenever a new balance is seen, in this context or another one. */
  onBalanceChanged(listener) { return this.events.on('balance', listener); }
  /** `listener(payment)` when a purchase's or subscription's credits arrived. */
  onPaid(listener) { return this.events.on('paid', listener); }
  /** `listener(user)` after register or login (in any context). */
  onSignedIn(listener) { return this.events.on('signedIn', listener); }
  /** `listener(reason)`: `logout`, `session_expired`, `refresh_token_reused`, `account_not_found`, `account_suspended`, `signed_out_elsewhere`. */
  onSignedOut(listener) { return this.events.on('signedOut', listener); }

  onStorageChanged(key, value) {
    if (key === this.keys.balance && value && value.balance !== this.lastBalance) {
      this.lastBalance = value.balance;
      this.events.emit('balance', value.balance);
    } else if (key === this.keys.session) {
      const nowSignedIn = Boolean(value);
      const known = this.signedIn !== undefined;
      if (nowSignedIn === this.signedIn) return;
      this.signedIn = nowSignedIn;
      if (!known) return; // this context had not read the session yet: nothing changed for it
      if (nowSignedIn) this.events.emit('signedIn', value.user ?? null);
      else this.events.emit('signedOut', 'signed_out_elsewhere');
    }
  }

  async noteBalance(balance) {
    if (!Number.isInteger(balance) || balance === this.lastBalance) return;
    this.lastBalance = balance;
    this.events.emit('balance', balance);
    await this.storage.set(this.keys.balance, { balance, at: this.clock.now() });
  }

  // ---- HTTP ----------------------------------------------------------------------------

  url(path, query) {
    const url = new URL(this.baseUrl + path);
    for (const [name, value] of Object.entries(query || {})) {
      if (value !== undefined && value !== null) url.searchParams.set(name, String(value));
    }
    return url.toString();
  }

  async send(method, path, { body, query, token, idempotencyKey } = {}) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (token) headers.Authorization = `Bearer ${token}`;
    if (idempotencyKey) headers['Idempotency-Key'] = idempotencyKey;
    let response;
    try {
      response = await this.fetchImpl(this.url(path, query), {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (cause) {
      throw new NetworkError(`Could not reach the API (${method} ${path})`, { code: 'network_error', cause });
    }
    const text = response.status === 204 ? '' : await response.text();
    let parsed = null;
    if (text) {
      try { parsed = JSON.parse(text); } catch { parsed = null; }
    }
    if (!response.ok) throw errorFromResponse(response.status, parsed, response.headers);
    return parsed;
  }

  /**
   * One API call. Authenticated calls get a fresh access token (refreshed when close to
   * expiry, and once more after a 401). Calls safe to repeat (GET, or POST with an
   * Idempotency-Key: the backend replays the first answer) are retried on network
   * errors, 503 and `idempotency_in_progress`, waiting out short Retry-Afters.
   */
  async request(method, path, { body, query, auth = true, idempotencyKey, signal, repeatable = false } = {}) {
    const safe = repeatable || method === 'GET' || Boolean(idempotencyKey);
    for (let attempt = 0; ; attempt += 1) {
      if (signal?.aborted) throw abortError(signal);
      try {
        if (!auth) return await this.send(method, path, { body, query, idempotencyKey });
        return await this.sendAuthenticated(method, path, { body, query, idempotencyKey });
      } catch (error) {
        const wait = safe && attempt + 1 < SAFE_ATTEMPTS ? this.retryWait(error, attempt) : null;
        if (wait === null) throw error;
        await sleep(this.clock, wait, signal);
      }
    }
  }

  retryWait(error, attempt) {
    const transient = error instanceof NetworkError
      || (error instanceof ServiceError && error.status === 503)
      || error.code === 'idempotency_in_progress';
    if (!transient) return null;
    const told = error.retryAfter != null ? error.retryAfter * 1000 : null;
    if (told !== null && told > MAX_AUTO_RETRY_WAIT_MS) return null;
    return told ?? backoff(attempt, { firstMs: 500, factor: 2, maxMs: MAX_AUTO_RETRY_WAIT_MS });
  }

  async sendAuthenticated(method, path, options) {
    const token = await this.accessToken();
    try {
      return await this.send(method, path, { ...options, token });
    } catch (error) {
      if (!(error instanceof AuthError)) throw error;
      if (ACCOUNT_GONE.has(error.code)) {
        await this.signOutLocally(error.code);
        throw new SessionExpiredError(error.message, { code: error.code, status: 401, body: error.body });
      }
      // The token was refused before its expiry (revoked, a new signing key, clock skew):
      // rotate once and try again; a second refusal is final.
      const fresh = await this.refreshSession(token);
      return this.send(method, path, { ...options, token: fresh });
    }
  }

  // ---- accounts ------------------------------------------------------------------------

  async loadSession() { return this.storage.get(this.keys.session); }

  async saveSession(answer, user) {
    const session = {
      token: answer.token,
      refresh_token: answer.refresh_token,
      expires_at: this.clock.now() + answer.expires_in * 1000,
      lifetime_ms: answer.expires_in * 1000,
      user,
    };
    this.signedIn = true;
    await this.storage.set(this.keys.session, session);
    return session;
  }

  async startSession(answer) {
    const user = { ...answer.user };
    delete user.token;
    await this.saveSession(answer, user);
    this.events.emit('signedIn', user);
    await this.noteBalance(user.credits_balance);
    return user;
  }

  /** Create an account (the new user gets the signup credits) and sign in. */
  async register({ email, password, name } = {}) {
    const body = { email, password };
    if (name) body.name = name;
    return this.startSession(await this.request('POST', '/auth/register', { body, auth: false }));
  }

  /** Sign in; the session is kept in storage and shared by every context of the extension. */
  async login(email, password) {
    return this.startSession(await this.request('POST', '/auth/login', { body: { email, password }, auth: false }));
  }

  /**
   * Sign out: revoke the session on the server (its refresh token stops working) and
   * forget it here. Returns whether the server confirmed the revocation (false when it
   * could not be reached; the token is forgotten anyway, so nothing can use it).
   */
  async logout() {
    const session = await this.loadSession();
    let revoked = false;
    if (session) {
      try {
        await this.send('POST', '/auth/logout', { body: { refresh_token: session.refresh_token } });
        revoked = true;
      } catch (error) {
        if (!(error instanceof NetworkError) && !(error instanceof ApiError)) throw error;
      }
    }
    await this.signOutLocally('logout');
    return { revoked };
  }

  async signOutLocally(reason) {
    const wasSignedIn = this.signedIn !== false;
    this.signedIn = false;
    await this.storage.remove(this.keys.session);
    await this.storage.remove(this.keys.balance);
    this.lastBalance = undefined;
    if (wasSignedIn) this.events.emit('signedOut', reason);
  }

  /** True when a session is stored (it may still turn out to be revoked on first use). */
  async isSignedIn() { return Boolean(await this.loadSession()); }

  /** The user as stored at sign-in (no request); null when signed out. */
  async currentUser() { return (await this.loadSession())?.user ?? null; }

  /** `GET /auth/user`: the account as the server has it now. */
  async getUser() {
    const { user } = await this.request('GET', '/auth/user');
    await this.noteBalance(user.credits_balance);
    return user;
  }

  /** A valid access token, rotating the session when it is about to expire. */
  async accessToken() {
    const session = await this.loadSession();
    if (!session) throw new NotSignedInError('Not signed in', { code: 'not_signed_in', status: 401 });
    if (this.fresh(session)) return session.token;
    return this.refreshSession(session.token);
  }

  fresh(session) {
    const margin = Math.min(REFRESH_MARGIN_MS, (session.lifetime_ms || Infinity) / 4);
    return session.expires_at - this.clock.now() > margin;
  }

  /**
   * Rotate the refresh token. The backend treats a second use of a refresh token as theft
   * and revokes the family, so two contexts must never rotate the same one: rotations are
   * serialised (in this context by a shared promise, across contexts by a Web Lock) and
   * the session is reread inside the lock, so a context that lost the race uses the token
   * the winner stored instead of rotating again.
   */
  refreshSession(staleToken) {
    if (!this.refreshing) {
      this.refreshing = this.withLock(() => this.rotate(staleToken)).finally(() => { this.refreshing = null; });
    }
    return this.refreshing;
  }

  withLock(work) {
    if (this.locks?.request) return this.locks.request(`${this.keys.session}.refresh`, work);
    return work();
  }

  async rotate(staleToken) {
    const session = await this.loadSession();
    if (!session) throw new NotSignedInError('Not signed in', { code: 'not_signed_in', status: 401 });
    if (session.token !== staleToken && this.fresh(session)) {
      return session.token; // another context rotated it meanwhile
    }
    let answer;
    try {
      answer = await this.send('POST', '/auth/refresh', { body: { refresh_token: session.refresh_token } });
    } catch (error) {
      if (error instanceof AuthError) {
        const reason = error.code === 'refresh_token_reused' || ACCOUNT_GONE.has(error.code) ? error.code : 'session_expired';
        await this.signOutLocally(reason);
        throw new SessionExpiredError('Your session has ended; please sign in again.', {
          code: error.code, status: 401, body: error.body, cause: error,
        });
      }
      throw error;
    }
    const saved = await this.saveSession(answer, session.user);
    return saved.token;
  }

  // ---- credits and billing ---------------------------------------------------------------

  /** `GET /credits/balance`; also reported to onBalanceChanged. */
  async getBalance() {
    const balance = await this.request('GET', '/credits/balance');
    await this.noteBalance(balance.balance);
    return balance;
  }

  /** Packs and plans (`GET /credits/packages`, no sign-in needed). */
  async getCatalogue() { return this.request('GET', '/credits/packages', { auth: false }); }

  /** One page of purchases, grants and clawbacks, newest first. */
  async listTransactions({ limit, cursor } = {}) {
    return this.request('GET', '/credits/transactions', { query: { limit, cursor } });
  }

  tabs() {
    if (!this.tabsImpl) this.tabsImpl = chromeTabs();
    return this.tabsImpl;
  }

  /**
   * Buy a pack: opens Stripe Checkout in a new tab and resolves once the credits are on
   * the balance (then onPaid and onBalanceChanged fire). Rejects with CheckoutError when
   * the payment failed, the Checkout expired, or the tab was closed without paying.
   * The purchase is remembered in storage: `resumePurchases()` (e.g. when the service
   * worker starts) finishes the wait after the context that started it was closed.
   */
  async buy(packageId, { signal, timeoutMs = 60 * MINUTE, closedGraceMs = 20_000, idempotencyKey } = {}) {
    const started = await this.request('POST', '/credits/purchase', {
      body: { package_id: packageId }, idempotencyKey: idempotencyKey || this.randomId(), signal,
    });
    const pending = { transactionId: started.transaction_id, packageId, startedAt: this.clock.now() };
    await this.rememberPurchase(pending);
    const tab = await this.tabs().open(started.checkout_url);
    return this.waitForPurchase(pending, { tab, signal, timeoutMs, closedGraceMs });
  }

  /** Wait for purchases started earlier (by any context) that are not settled yet. */
  async resumePurchases({ signal, timeoutMs = 60 * MINUTE } = {}) {
    const pending = (await this.storage.get(this.keys.purchases)) || [];
    const live = pending.filter((p) => this.clock.now() - p.startedAt < timeoutMs);
    const results = await Promise.allSettled(live.map((p) => this.waitForPurchase(p, {
      signal, timeoutMs: timeoutMs - (this.clock.now() - p.startedAt),
    })));
    return results.filter((r) => r.status === 'fulfilled').map((r) => r.value);
  }

  async rememberPurchase(pending) {
    const list = ((await this.storage.get(this.keys.purchases)) || []).filter((p) => p.transactionId !== pending.transactionId);
    await this.storage.set(this.keys.purchases, [...list, pending]);
  }

  async forgetPurchase(transactionId) {
    const list = (await this.storage.get(this.keys.purchases)) || [];
    await this.storage.set(this.keys.purchases, list.filter((p) => p.transactionId !== transactionId));
  }

  async waitForPurchase(pending, { tab, signal, timeoutMs, closedGraceMs = 20_000 }) {
    const { transactionId } = pending;
    const deadline = this.clock.now() + timeoutMs;
    let closedAt = null;
    const stopWatching = tab ? this.tabs().onClosed(tab.id, () => { closedAt = this.clock.now(); }) : () => {};
    try {
      for (let attempt = 0; ; attempt += 1) {
        const row = await this.findTransaction(transactionId, signal);
        if (row?.status === 'completed') {
          await this.forgetPurchase(transactionId);
          const { balance } = await this.getBalance();
          const payment = { kind: 'purchase', transactionId, packageId: pending.packageId, credits: row.credits, balance };
          this.events.emit('paid', payment);
          return payment;
        }
        if (row && (row.status === 'failed' || row.status === 'expired')) {
          await this.forgetPurchase(transactionId);
          throw new CheckoutError(`The payment did not go through (${row.status}).`, { outcome: row.status, transactionId });
        }
        const now = this.clock.now();
        if (closedAt !== null && now - closedAt >= closedGraceMs) {
          throw new CheckoutError('Checkout was closed before the payment arrived.', { outcome: 'cancelled', transactionId });
        }
        if (now >= deadline) throw new TimeoutError('The payment did not arrive in time.', { code: 'checkout_timeout' });
        await sleep(this.clock, Math.min(backoff(attempt, { firstMs: 2000, maxMs: 10_000 }), Math.max(0, deadline - now)), signal);
      }
    } finally {
      stopWatching();
    }
  }

  async findTransaction(transactionId, signal) {
    const page = await this.request('GET', '/credits/transactions', { query: { limit: 50 }, signal });
    return page.items.find((item) => item.transaction_id === transactionId) || null;
  }

  /**
   * Subscribe to a plan: opens Checkout in a tab and resolves once the subscription is
   * active (the account's tier is the plan's), with the balance including its allowance.
   */
  async subscribe(planId, { signal, timeoutMs = 60 * MINUTE, idempotencyKey } = {}) {
    const { plans } = await this.getCatalogue();
    const plan = plans.find((p) => p.id === planId);
    const before = await this.getBalance();
    const started = await this.request('POST', '/credits/subscribe', {
      body: { plan_id: planId }, idempotencyKey: idempotencyKey || this.randomId(), signal,
    });
    await this.tabs().open(started.checkout_url);
    const deadline = this.clock.now() + timeoutMs;
    for (let attempt = 0; ; attempt += 1) {
      const now = await this.getBalance();
      if (plan && now.subscription_tier === plan.tier && now.balance > before.balance) {
        const payment = { kind: 'subscription', planId, tier: plan.tier, credits: now.balance - before.balance, balance: now.balance };
        this.events.emit('paid', payment);
        return payment;
      }
      if (this.clock.now() >= deadline) throw new TimeoutError('The subscription did not start in time.', { code: 'subscription_timeout' });
      await sleep(this.clock, backoff(attempt, { firstMs: 2000, maxMs: 10_000 }), signal);
    }
  }

  /** Open the Stripe billing portal (cancel, change card, invoices) in a tab; returns its URL. */
  async openBillingPortal() {
    const { url } = await this.request('POST', '/credits/portal', { body: {} });
    await this.tabs().open(url);
    return url;
  }

  // ---- Ask, catch-up, history ------------------------------------------------------------

  /**
   * Ask a question about a transcript. Each call carries its own Idempotency-Key, so a
   * retry after a lost answer is replayed by the backend instead of charged again.
   */
  async ask(question, transcript, { idempotencyKey, signal } = {}) {
    const answer = await this.request('POST', '/transcription/ask', {
      body: { question, transcript }, idempotencyKey: idempotencyKey || this.randomId(), signal,
    });
    await this.noteBalance(answer.remaining_balance);
    return answer;
  }

  /** Upload catch-up audio through a presigned S3 URL; returns the `audio_key` to submit. */
  async uploadAudio(audio, { contentType, signal } = {}) {
    const type = (contentType || audio.type || '').split(';')[0];
    const size = audio.size ?? audio.byteLength;
    const ticket = await this.request('POST', '/transcription/catchup/upload', {
      body: { content_type: type, file_size: size }, signal,
    });
    for (let attempt = 0; ; attempt += 1) {
      let response;
      try {
        response = await this.fetchImpl(ticket.upload_url, { method: ticket.method || 'PUT', headers: ticket.headers, body: audio, signal });
      } catch (cause) {
        if (attempt + 1 < SAFE_ATTEMPTS && !signal?.aborted) { await sleep(this.clock, 1000 * (attempt + 1), signal); continue; }
        throw new NetworkError('The audio upload did not reach storage', { code: 'network_error', cause });
      }
      if (response.ok) return ticket.audio_key;
      if (response.status >= 500 && attempt + 1 < SAFE_ATTEMPTS) { await sleep(this.clock, 1000 * (attempt + 1), signal); continue; }
      throw new UploadError(`The audio upload was refused (HTTP ${response.status})`, { code: 'upload_failed', status: response.status });
    }
  }

  /** Submit a catch-up job (202: queued, credits reserved); retried safely with one Idempotency-Key. */
  async submitCatchup({ audioKey, audio, durationMinutes, streamUrl, channel }, { idempotencyKey, signal } = {}) {
    const body = { duration_minutes: durationMinutes };
    if (audioKey) body.audio_key = audioKey;
    if (audio) body.audio = audio;
    if (streamUrl) body.stream_url = streamUrl;
    if (channel) body.channel = channel;
    // Its `remaining_balance` is what is left to spend, not what the user owns (what
    // onBalanceChanged reports): the balance is read again when the job ends.
    return this.request('POST', '/transcription/catchup', {
      body, idempotencyKey: idempotencyKey || this.randomId(), signal,
    });
  }

  /** A catch-up job's current state. */
  async getCatchup(jobId, { signal } = {}) {
    return this.request('GET', `/transcription/catchup/${encodeURIComponent(jobId)}`, { signal });
  }

  /** Poll a job (2 s, growing to 10 s) until it completes (returns it) or fails (CatchupFailedError). */
  async waitForCatchup(jobId, { onStatus, signal, timeoutMs = 15 * MINUTE, lastStatus = null } = {}) {
    const deadline = this.clock.now() + timeoutMs;
    for (let attempt = 0; ; attempt += 1) {
      const job = await this.getCatchup(jobId, { signal });
      if (job.status !== lastStatus) { lastStatus = job.status; onStatus?.(job.status, job); }
      if (job.status === 'completed') { this.getBalance().catch(() => {}); return job; }
      if (job.status === 'failed') { this.getBalance().catch(() => {}); throw new CatchupFailedError(job); }
      if (this.clock.now() >= deadline) throw new TimeoutError('The catch-up is taking too long.', { code: 'catchup_timeout' });
      await sleep(this.clock, backoff(attempt, { firstMs: 2000, maxMs: 10_000 }), signal);
    }
  }

  /**
   * Catch up on `audio` (a Blob, e.g. `captions.recentAudio()`): upload, submit, wait.
   * `durationMinutes` defaults to the audio's length when it is a WAV file.
   */
  async catchUp({ audio, durationMinutes, streamUrl, channel, onStatus, signal, timeoutMs } = {}) {
    const minutes = durationMinutes ?? wavMinutes(await blobBytes(audio, 44));
    if (!minutes) throw new KitError('catchUp needs durationMinutes for audio that is not WAV', { code: 'duration_required' });
    onStatus?.('uploading', null);
    const audioKey = await this.uploadAudio(audio, { signal });
    const job = await this.submitCatchup({ audioKey, durationMinutes: minutes, streamUrl, channel }, { signal });
    onStatus?.(job.status, job);
    return this.waitForCatchup(job.job_id, { onStatus, signal, timeoutMs, lastStatus: job.status });
  }

  /** One page of the history (live sessions, catch-ups, asks), newest first. */
  async getHistory({ limit, cursor } = {}) {
    return this.request('GET', '/transcription/history', { query: { limit, cursor } });
  }

  // ---- live captions ------------------------------------------------------------------------

  /**
   * Start live captions on `source`: a MediaStream (an extension page or offscreen
   * document) or a PcmSource (anything that delivers 16-bit mono PCM; the only choice in
   * a service worker, which has no Web Audio). Returns a CaptionSession once the first
   * socket is open. Billing, renewals and heartbeats are the kit's business.
   */
  async startCaptions(source, callbacks = {}, options = {}) {
    const pcm = isMediaStream(source) ? mediaStreamSource(source, options) : source;
    const session = new CaptionSession(this, pcm, callbacks, options);
    await session.begin();
    return session;
  }
}

function isMediaStream(source) {
  return typeof source?.getAudioTracks === 'function';
}

// ---------------------------------------------------------------------------------------
// Audio: sources, chunking, WAV.

/**
 * A PcmSource over a MediaStream (tab capture in an offscreen document, a microphone).
 * Runs an AudioContext at `sampleRate` (Chrome resamples the stream) and the PCM worklet
 * shipped beside this file. `playThrough: true` also plays the audio (tab capture mutes the tab).
 */
export function mediaStreamSource(stream, { sampleRate = 16000, playThrough = false, workletUrl } = {}) {
  let context = null;
  let node = null;
  return {
    sampleRate,
    async start(onChunk) {
      context = new AudioContext({ sampleRate });
      this.sampleRate = context.sampleRate;
      await context.audioWorklet.addModule(workletUrl || new URL('./pcm-worklet.js', import.meta.url));
      const input = context.createMediaStreamSource(stream);
      node = new AudioWorkletNode(context, 'transcription-kit-pcm');
      node.port.onmessage = (event) => onChunk(event.data);
      input.connect(node);
      if (playThrough) input.connect(context.destination);
    },
    async stop() {
      if (node) node.port.onmessage = null;
      if (context) await context.close();
      context = null;
    },
  };
}

/** AssemblyAI refuses (close 3007) an audio message shorter than 50 ms or longer than 1000 ms. */
const MIN_FRAME_MS = 50;
const MAX_FRAME_MS = 1000;

/** Gathers PCM into frames of `frameMs`. */
class Framer {
  constructor(sampleRate, frameMs) {
    const ms = Math.min(MAX_FRAME_MS, Math.max(MIN_FRAME_MS, frameMs));
    this.size = Math.round((sampleRate * ms) / 1000);
    this.minimum = Math.ceil((sampleRate * MIN_FRAME_MS) / 1000);
    this.buffer = new Int16Array(this.size);
    this.filled = 0;
  }
  push(samples, emit) {
    let offset = 0;
    while (offset < samples.length) {
      const take = Math.min(this.size - this.filled, samples.length - offset);
      this.buffer.set(samples.subarray(offset, offset + take), this.filled);
      this.filled += take;
      offset += take;
      if (this.filled === this.size) { emit(this.buffer.slice()); this.filled = 0; }
    }
  }
  /** The last, partial frame, padded with silence to the shortest length AssemblyAI takes. */
  flush(emit) {
    if (this.filled === 0) return;
    const frame = new Int16Array(Math.max(this.filled, this.minimum));
    frame.set(this.buffer.subarray(0, this.filled));
    emit(frame);
    this.filled = 0;
  }
}

/** Keeps the last `seconds` of PCM, to hand to catch-up as a WAV. */
class AudioRing {
  constructor(sampleRate, seconds) {
    this.sampleRate = sampleRate;
    this.limit = Math.round(sampleRate * seconds);
    this.frames = [];
    this.total = 0;
  }
  push(frame) {
    if (this.limit <= 0) return;
    this.frames.push(frame);
    this.total += frame.length;
    while (this.frames.length > 1 && this.total - this.frames[0].length >= this.limit) {
      this.total -= this.frames.shift().length;
    }
  }
  wav() { return encodeWav(this.frames, this.sampleRate); }
}

/** 16-bit mono PCM frames -> a WAV Blob (what catch-up accepts as `audio/wav`). */
export function encodeWav(frames, sampleRate) {
  const samples = frames.reduce((n, f) => n + f.length, 0);
  const header = new DataView(new ArrayBuffer(44));
  const ascii = (offset, text) => { for (let i = 0; i < text.length; i += 1) header.setUint8(offset + i, text.charCodeAt(i)); };
  ascii(0, 'RIFF'); header.setUint32(4, 36 + samples * 2, true); ascii(8, 'WAVE');
  ascii(12, 'fmt '); header.setUint32(16, 16, true); header.setUint16(20, 1, true); header.setUint16(22, 1, true);
  header.setUint32(24, sampleRate, true); header.setUint32(28, sampleRate * 2, true);
  header.setUint16(32, 2, true); header.setUint16(34, 16, true);
  ascii(36, 'data'); header.setUint32(40, samples * 2, true);
  const parts = [header.buffer, ...frames.map((f) => new Uint8Array(f.buffer, f.byteOffset, f.byteLength))];
  return new Blob(parts, { type: 'audio/wav' });
}

async function blobBytes(audio, count) {
  if (!audio) return new Uint8Array(0);
  if (typeof audio.slice === 'function' && typeof audio.arrayBuffer === 'function') {
    return new Uint8Array(await audio.slice(0, count).arrayBuffer());
  }
  return new Uint8Array(audio.buffer ?? audio, audio.byteOffset ?? 0, Math.min(count, audio.byteLength));
}

/** Whole minutes (rounded up) of a PCM WAV from its header; null when it is not one. */
export function wavMinutes(bytes) {
  if (bytes.length < 44) return null;
  const text = (offset) => String.fromCharCode(...bytes.subarray(offset, offset + 4));
  if (text(0) !== 'RIFF' || text(8) !== 'WAVE') return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const byteRate = view.getUint32(28, true);
  const dataBytes = view.getUint32(40, true);
  if (!byteRate) return null;
  return Math.max(1, Math.ceil(dataBytes / byteRate / 60));
}

// ---------------------------------------------------------------------------------------
// Live captions.

const CLOSE_NORMAL = 1000;
const CLOSE_MAX_DURATION = 3008;
const TERMINATE_WAIT_MS = 5_000;
/** Audio held while no socket is open (between a lost connection and the next one). */
const MAX_PENDING_SECONDS = 30;
/** Renew answers that end the session's chain of tokens: a new session continues it. */
const CHAIN_ENDED = new Set(['session_limit_reached', 'token_superseded', 'not_renewable']);
/** Attempts at one renewal whose socket cannot be opened before giving up. */
const MAX_SOCKET_FAILURES = 5;

/**
 * One run of live captions: the backend session (credits held, tokens minted) and the
 * chain of AssemblyAI sockets that carry it (README "The renew protocol").
 *
 * Audio goes to exactly one socket at a time. `renew_in_seconds` after each token arrived
 * the next one is asked for, its socket opened while the current one still runs, the
 * audio moved over when it has begun, and the old one ended with Terminate (its last turn
 * is still delivered): no audio is lost or sent twice, and captions do not gap. When a
 * session reaches its longest allowed time, a new session is started the same way.
 * Renewals that fail for a transient reason are retried without paying twice (the backend
 * replays a renew by `token_number`); 402 lets the current token run out (and resumes if
 * credits arrive meanwhile), then the session is stopped and settled.
 */
export class CaptionSession {
  constructor(kit, source, callbacks, options) {
    this.kit = kit;
    this.source = source;
    this.callbacks = callbacks;
    this.options = { frameMs: 100, keepAudioSeconds: 0, ...options };
    this.state = 'starting';
    this.grant = null;
    this.openSessions = [];
    this.bills = [];
    this.sockets = [];
    this.socketCount = 0;
    this.active = null;
    this.pending = [];
    this.turns = new Map();
    this.nextTurn = 0;
    this.timers = new Set();
    this.renewing = null;
    this.blocked = null;
    this.renewals = 0;
    this.stopping = null;
    this.halt = new AbortController();
    this.unsubscribeBalance = () => {};
  }

  /** The backend session in use now. */
  get sessionId() { return this.grant?.session_id ?? null; }

  emit(name, ...args) {
    const listener = this.callbacks[name];
    if (!listener) return;
    try { listener(...args); } catch (error) { console.error(`transcription kit: ${name} threw`, error); }
  }

  later(ms, work) {
    const id = this.kit.clock.setTimeout(() => { this.timers.delete(id); work(); }, Math.max(0, ms));
    this.timers.add(id);
    return id;
  }

  cancel(id) {
    this.kit.clock.clearTimeout(id);
    this.timers.delete(id);
  }

  /** Audio first (held until the socket begins, so nothing said at the start is lost), then the session. */
  async begin() {
    try {
      await this.source.start((samples) => this.onAudio(samples));
      this.sampleRate = this.source.sampleRate;
      const grant = await this.startSession();
      await this.openSocket(grant);
      this.state = 'live';
      this.useGrant(grant);
    } catch (error) {
      await this.stop().catch(() => {});
      throw error instanceof KitError ? error : new CaptionsError('Live captions could not start', { code: 'captions_failed', cause: error });
    }
    this.unsubscribeBalance = this.kit.onBalanceChanged((balance) => this.onBalanceChanged(balance));
    this.emit('onStarted', credits(this.grant));
  }

  /** POST start (renewable), with its own Idempotency-Key so a retry never holds credits twice. */
  async startSession() {
    const { channel, title, maxMinutes } = this.options;
    const body = { action: 'start', renewable: true, sample_rate: this.sampleRate };
    if (maxMinutes) body.max_minutes = maxMinutes;
    if (channel) body.channel = channel;
    if (title) body.title = title;
    const grant = await this.kit.request('POST', '/transcription/stream', { body, idempotencyKey: this.kit.randomId() });
    this.openSessions.push(grant.session_id);
    await this.kit.noteBalance(grant.credits_balance);
    return { ...grant, receivedAt: this.kit.clock.now() };
  }

  /** A token is in hand: remember it and plan its renewal (times count from its arrival). */
  useGrant(grant) {
    this.grant = grant;
    this.blocked = null;
    if (this.renewTimer) this.cancel(this.renewTimer);
    if (grant.renew_in_seconds == null) return; // a one-token session: it ends with its token
    const due = grant.receivedAt + grant.renew_in_seconds * 1000 - this.kit.clock.now();
    this.renewTimer = this.later(due, () => this.renew());
  }

  /** Ask for the next token (or a new session) and move the audio to its socket. */
  renew() {
    if (!this.renewing && this.state === 'live') {
      this.renewing = this.nextGrant().catch((error) => {
        if (!(error instanceof AbortError)) this.emit('onError', error);
      }).finally(() => { this.renewing = null; });
    }
    return this.renewing;
  }

  async nextGrant() {
    const current = this.grant;
    const signal = this.halt.signal;
    let socketFailures = 0;
    for (let attempt = 0; this.state === 'live' && this.grant === current; attempt += 1) {
      let next;
      try {
        next = await this.askForNext(current);
      } catch (error) {
        const wait = this.afterRenewFailure(error, attempt);
        if (wait === null) return;
        await sleep(this.kit.clock, wait, signal);
        continue;
      }
      if (this.state !== 'live') return; // stop() settles every session this run opened
      const chained = next.session_id !== current.session_id;
      try {
        await this.openSocket(next);
      } catch (error) {
        this.emit('onError', error);
        if (chained) this.settleLater(next.session_id); // a new session whose socket failed: settle it now
        socketFailures += 1;
        if (socketFailures >= MAX_SOCKET_FAILURES) { this.giveUp(error); return; }
        // Retrying replays the same renew (same token, not paid twice) or mints a fresh one.
        await sleep(this.kit.clock, backoff(attempt, { firstMs: 1000, factor: 2, maxMs: 10_000 }), signal);
        continue;
      }
      if (this.state !== 'live') return;
      this.useGrant(next);
      this.renewals += 1;
      this.emit('onRenewed', { ...credits(next), renewals: this.renewals, newSession: chained });
      if (chained) this.settleLater(current.session_id);
      return;
    }
  }

  /** No next token: captions end with the current socket (or now, if none is open). */
  giveUp(error) {
    this.blocked = error;
    this.blockedBalance = this.kit.lastBalance ?? 0;
    if (!this.active) this.end(error instanceof InsufficientCreditsError ? 'insufficient_credits' : 'renew_failed');
  }

  async askForNext(current) {
    try {
      const next = await this.kit.request('POST', '/transcription/stream', {
        body: { action: 'renew', session_id: current.session_id, token_number: current.token_number },
      });
      await this.kit.noteBalance(next.credits_balance);
      return { ...next, receivedAt: this.kit.clock.now() };
    } catch (error) {
      // The session cannot go on (its longest time, an old token), or its socket was lost
      // long before a renewal is allowed: a new session carries the captions on.
      const lost = error.code === 'renew_too_early' && !this.active;
      if (CHAIN_ENDED.has(error.code) || lost) return this.startSession();
      throw error;
    }
  }

  /** How long to wait before renewing again after `error`, or null to stop trying. */
  afterRenewFailure(error, attempt) {
    if (error.code === 'renew_too_early') return (error.body?.renew_in_seconds ?? 30) * 1000;
    if (error instanceof NotFoundError || error.code === 'session_not_active') {
      this.end('session_ended');
      return null;
    }
    const transient = error instanceof NetworkError || error instanceof ServiceError || error instanceof RateLimitError;
    if (attempt === 0 || !transient) this.emit('onError', error);
    if (!transient) {
      // 402: the current token runs out; credits bought meanwhile resume the renewals.
      this.giveUp(error);
      return null;
    }
    if (error.retryAfter != null) return error.retryAfter * 1000;
    return backoff(attempt, { firstMs: 1000, factor: 2, maxMs: 15_000 });
  }

  /** Credits arrived while renewals were refused for want of them: try again. */
  onBalanceChanged(balance) {
    if (this.blocked instanceof InsufficientCreditsError && this.state === 'live' && balance > this.blockedBalance) {
      this.blocked = null;
      this.renew();
    }
  }

  /** Open a socket for a token and resolve once AssemblyAI said Begin (audio then flows to it). */
  openSocket(grant) {
    return new Promise((resolve, reject) => {
      const socket = new this.kit.WebSocketImpl(grant.websocket_url);
      socket.binaryType = 'arraybuffer';
      const entry = {
        index: this.socketCount++, socket, begun: false, closed: false,
        formatted: /[?&]format_turns=true/.test(grant.websocket_url), unformatted: new Map(),
      };
      this.sockets.push(entry);
      socket.onmessage = (event) => this.onMessage(entry, event.data, resolve);
      socket.onclose = (event) => {
        entry.closed = true;
        this.sockets = this.sockets.filter((e) => e !== entry);
        if (!entry.begun) {
          reject(new CaptionsError(`The caption service refused the connection (${event.code})`, { code: 'socket_refused', status: event.code }));
          return;
        }
        this.onSocketClosed(entry, event.code, event.reason);
      };
      socket.onerror = () => {}; // a close event follows
    });
  }

  onMessage(entry, data, onBegin) {
    if (typeof data !== 'string') return;
    let message;
    try { message = JSON.parse(data); } catch { return; }
    if (message.type === 'Begin') {
      entry.begun = true;
      this.switchTo(entry);
      onBegin();
    } else if (message.type === 'Turn') {
      this.onTurn(entry, message);
    } else if (message.type === 'Termination') {
      this.flushTurns(entry);
    } else if (message.error) {
      this.emit('onError', new CaptionsError(String(message.error), { code: 'provider_error' }));
    }
  }

  /** Audio moves to a socket that has begun; the socket it replaces is ended. */
  switchTo(entry) {
    const previous = this.active;
    this.active = entry;
    for (const frame of this.pending.splice(0)) this.sendFrame(frame);
    if (previous && !previous.closed) this.terminate(previous);
  }

  terminate(entry) {
    try { entry.socket.send(JSON.stringify({ type: 'Terminate' })); } catch { /* already closing */ }
    this.later(TERMINATE_WAIT_MS, () => { if (!entry.closed) entry.socket.close(CLOSE_NORMAL); });
  }

  /**
   * AssemblyAI sends a turn as partials, then end_of_turn, then (format_turns=true) the
   * formatted copy. Callers get partials, then one final per turn; turns are numbered
   * across sockets.
   */
  onTurn(entry, message) {
    const key = `${entry.index}:${message.turn_order}`;
    if (!this.turns.has(key)) this.turns.set(key, this.nextTurn++);
    const turn = { turn: this.turns.get(key), text: message.transcript || '', words: message.words || [] };
    if (message.end_of_turn && (!entry.formatted || message.turn_is_formatted)) {
      this.turns.delete(key);
      entry.unformatted.delete(key);
      this.emit('onFinal', turn);
      return;
    }
    if (message.end_of_turn) entry.unformatted.set(key, turn);
    this.emit('onPartial', turn);
  }

  /** A socket ended before formatting its last turn: that turn is final as it is. */
  flushTurns(entry) {
    for (const [key, turn] of entry.unformatted) { this.turns.delete(key); this.emit('onFinal', turn); }
    entry.unformatted.clear();
  }

  onAudio(samples) {
    if (this.state === 'stopped') return;
    if (!this.framer) {
      this.framer = new Framer(this.source.sampleRate, this.options.frameMs);
      this.ring = new AudioRing(this.source.sampleRate, this.options.keepAudioSeconds);
    }
    this.framer.push(samples, (frame) => this.routeFrame(frame));
  }

  routeFrame(frame) {
    this.ring.push(frame);
    if (this.active && !this.active.closed) { this.sendFrame(frame); return; }
    this.pending.push(frame); // between sockets: kept for the next one
    const limit = Math.ceil((MAX_PENDING_SECONDS * 1000) / this.options.frameMs);
    if (this.pending.length > limit) this.pending.splice(0, this.pending.length - limit);
  }

  sendFrame(frame) {
    try { this.active.socket.send(frame.buffer); } catch { this.pending.push(frame); }
  }

  onSocketClosed(entry, code, reason) {
    this.flushTurns(entry);
    if (entry !== this.active || this.state !== 'live') return;
    this.active = null;
    if (this.blocked) { this.end(this.blocked instanceof InsufficientCreditsError ? 'insufficient_credits' : 'renew_failed'); return; }
    if (code !== CLOSE_NORMAL && code !== CLOSE_MAX_DURATION) {
      this.emit('onError', new CaptionsError(`The caption connection closed (${code} ${reason || ''})`.trim(), { code: 'socket_closed', status: code }));
    }
    // The token ended (3008) before its renewal finished, or the connection dropped: the
    // next token carries on, with the audio held meanwhile.
    this.renew();
  }

  /** The session ended by itself (credits, a stopped session): settle it and tell. */
  end(reason) {
    if (this.state !== 'live') return;
    this.stop().then(
      (bill) => this.emit('onEnded', { reason, bill }),
      (error) => this.emit('onEnded', { reason, bill: null, error }),
    );
  }

  /** Stop a replaced session (its time is billed; the rest of its credits come back). */
  settleLater(sessionId) {
    this.settling = (this.settling || Promise.resolve()).then(() => this.stopSession(sessionId)).catch((error) => this.emit('onError', error));
  }

  async stopSession(sessionId) {
    if (!this.openSessions.includes(sessionId)) return null;
    const bill = await this.kit.request('POST', '/transcription/stream', {
      body: { action: 'stop', session_id: sessionId }, repeatable: true,
    });
    this.openSessions = this.openSessions.filter((id) => id !== sessionId);
    this.bills.push(bill);
    await this.kit.noteBalance(bill.remaining_balance);
    return bill;
  }

  /** The last `keepAudioSeconds` (an option of startCaptions) as a WAV Blob, for catchUp(). */
  recentAudio() { return this.ring ? this.ring.wav() : encodeWav([], this.source.sampleRate); }

  /**
   * Stop: end the audio, let the sockets deliver their last turns, and settle. Resolves
   * with the bill (the stop answer; with a chained session, its figures add up every
   * session's, listed in `sessions`).
   */
  stop() {
    if (!this.stopping) this.stopping = this.finish();
    return this.stopping;
  }

  async finish() {
    this.state = 'stopped';
    this.halt.abort();
    this.unsubscribeBalance();
    for (const id of this.timers) this.kit.clock.clearTimeout(id);
    this.timers.clear();
    await this.renewing;
    try { await this.source.stop(); } catch { /* the source is gone anyway */ }
    if (this.active && !this.active.closed && this.framer) this.framer.flush((frame) => { this.ring.push(frame); this.sendFrame(frame); });
    await Promise.all(this.sockets.map((entry) => this.closeGracefully(entry)));
    await this.settling;
    for (const sessionId of [...this.openSessions]) await this.stopSession(sessionId);
    if (!this.bills.length) return null;
    const bill = { ...this.bills.at(-1), sessions: this.bills };
    for (const field of ['duration_minutes', 'credits_used', 'credits_refunded']) {
      bill[field] = this.bills.reduce((sum, b) => sum + (b[field] || 0), 0);
    }
    this.emit('onStopped', bill);
    return bill;
  }

  closeGracefully(entry) {
    return new Promise((resolve) => {
      const previous = entry.socket.onclose;
      entry.socket.onclose = (event) => { previous?.(event); resolve(); };
      try { entry.socket.send(JSON.stringify({ type: 'Terminate' })); } catch { /* not open */ }
      this.kit.clock.setTimeout(() => { if (!entry.closed) entry.socket.close(CLOSE_NORMAL); resolve(); }, TERMINATE_WAIT_MS);
    });
  }
}

function credits(grant) {
  return {
    sessionId: grant.session_id,
    tokenNumber: grant.token_number,
    balance: grant.credits_balance,
    available: grant.credits_available ?? null,
    held: grant.credits_held ?? null,
    creditsReserved: grant.credits_reserved,
  };
}
