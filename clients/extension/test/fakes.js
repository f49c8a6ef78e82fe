import { createKit, memoryStorage } from '../kit.js';

// Test doubles for the kit: a clock, a fake backend behind a fake fetch (the API's real
// paths, bodies, statuses and error envelope), a fake AssemblyAI streaming socket, tabs
// and a Web Locks stand-in. They model the behaviour the kit depends on (refresh-token
// rotation with reuse detection, Idempotency-Key replays, reservations, Checkout, jobs),
// so each test can fail on a broken kit.

export const flush = () => new Promise((resolve) => setImmediate(resolve));

/** A manual clock: timers run only when a test advances time. */
export class FakeClock {
  constructor(start = 1_800_000_000_000) {
    this.time = start;
    this.timers = new Map();
    this.nextId = 1;
  }
  now() { return this.time; }
  setTimeout(fn, ms) {
    const id = this.nextId++;
    this.timers.set(id, { at: this.time + Math.max(0, ms || 0), fn }); // NaN and undefined fire at once, as in browsers
    return id;
  }
  clearTimeout(id) { this.timers.delete(id); }
  /** Move time forward, running every timer that falls due, in order, with the promises they start. */
  async advance(ms) {
    const target = this.time + ms;
    await flush();
    for (;;) {
      let next = null;
      for (const [id, timer] of this.timers) {
        if (timer.at <= target && (!next || timer.at < next[1].at)) next = [id, timer];
      }
      if (!next) break;
      this.timers.delete(next[0]);
      this.time = Math.max(this.time, next[1].at);
      next[1].fn();
      await flush();
      await flush();
    }
    this.time = target;
    await flush();
  }
  /** Advance in steps until `predicate()` holds (or give up after `maxMs`). */
  async until(predicate, { stepMs = 250, maxMs = 600_000 } = {}) {
    for (let waited = 0; waited <= maxMs; waited += stepMs) {
      if (await predicate()) return;
      await this.advance(stepMs);
    }
    throw new Error('condition never held');
  }
}

/** Web Locks, enough for the kit: exclusive locks by name, queued in order. */
export function fakeLocks() {
  const tails = new Map();
  return {
    request(name, work) {
      const previous = tails.get(name) || Promise.resolve();
      const run = previous.then(() => work(), () => work());
      tails.set(name, run.catch(() => {}));
      return run;
    },
  };
}

/** chrome.tabs stand-in: records opened URLs; a test closes tabs. */
export class FakeTabs {
  constructor() { this.opened = []; this.listeners = new Map(); this.nextId = 100; }
  async open(url) { const id = this.nextId++; this.opened.push({ id, url }); return { id }; }
  onClosed(id, listener) {
    this.listeners.set(id, listener);
    return () => this.listeners.delete(id);
  }
  close(id) { this.listeners.get(id)?.(); }
  get last() { return this.opened[this.opened.length - 1]; }
}

function json(status, body, headers = {}) {
  return new Response(body === null ? null : JSON.stringify(body), {
    status, headers: { 'Content-Type': 'application/json', 'X-Request-Id': `req-${status}`, ...headers },
  });
}

function envelope(status, code, message, extra = {}, headers = {}) {
  return json(status, { error: message, message, code, ...extra }, headers);
}

export const PACKAGES = [
  { id: 'starter', name: 'Starter', credits: 500, amount: 299, currency: 'usd' },
  { id: 'popular', name: 'Popular', credits: 2000, amount: 999, currency: 'usd' },
];
export const PLANS = [
  { id: 'basic_monthly', name: 'Basic', tier: 'basic', credits_per_period: 1500, amount: 499, currency: 'usd', interval: 'month' },
];

/**
 * The backend, in memory. `fetch` is what the kit is given. Tests reach into it to pay
 * a Checkout, finish a job, or queue a failure (`failNext`).
 */
export class FakeBackend {
  constructor({ clock, streaming, baseUrl = 'https://api.test/api', accessTtlSeconds = 900, tokenMinutes = 10, sessionMaxMinutes = 180, renewable = true } = {}) {
    this.clock = clock;
    this.streaming = streaming;
    this.baseUrl = baseUrl;
    this.accessTtlSeconds = accessTtlSeconds;
    this.users = new Map();
    this.accessTokens = new Map();
    this.refreshTokens = new Map();
    this.revokedFamilies = new Set();
    this.transactions = [];
    this.idempotent = new Map();
    this.sessions = new Map();
    this.jobs = new Map();
    this.uploads = new Map();
    this.history = [];
    this.requests = [];
    this.failures = [];
    this.counter = 0;
    this.livePrice = 10;
    this.tokenMinutesSetting = tokenMinutes;
    this.renewLeadSeconds = 45;
    this.renewWindowSeconds = 120;
    this.sessionMaxMinutes = sessionMaxMinutes;
    this.renewable = renewable;
    this.askPrice = 5;
    this.fetch = (url, init) => this.handle(url, init);
  }

  id(prefix) { this.counter += 1; return `${prefix}${this.counter}`; }

  /** The next request matching `method path` gets this answer instead (or a network error). */
  failNext(method, path, status, body = {}, headers = {}, { times = 1, when = () => true } = {}) {
    this.failures.push({ method, path, status, body, headers, times, when });
  }

  userByToken(headers) {
    const match = /^Bearer (.+)$/.exec(headers.Authorization || '');
    const entry = match && this.accessTokens.get(match[1]);
    if (!entry || entry.expiresAt <= this.clock.now() || entry.revoked) return null;
    return this.users.get(entry.userId) || 'deleted';
  }

  issueSession(user) {
    const token = this.id('at-');
    this.accessTokens.set(token, { userId: user.user_id, expiresAt: this.clock.now() + this.accessTtlSeconds * 1000 });
    const family = user.family || this.id('fam-');
    const refresh = this.id('rt-');
    this.refreshTokens.set(refresh, { userId: user.user_id, family, used: false });
    return { token, refresh_token: refresh, expires_in: this.accessTtlSeconds };
  }

  publicUser(user) {
    const { password, ...rest } = user;
    return rest;
  }

  /** Owned, held and available, as every answer with a balance carries them. */
  holdings(user) {
    return { credits_available: this.available(user), credits_held: user.credits_held || 0 };
  }

  balanceOf(user) {
    return { balance: user.credits_balance, ...this.holdings(user), subscription_tier: user.subscription_tier, total_credits_purchased: user.total_credits_purchased, total_usage: user.total_usage };
  }

  /** Replays the first answer for a key and body, like chalicelib.web.idempotency. */
  idempotently(user, headers, route, body, run) {
    const key = headers['Idempotency-Key'];
    if (!key) return run();
    const id = `${user.user_id}|${key}`;
    const stored = this.idempotent.get(id);
    const fingerprint = `${route}|${JSON.stringify(body)}`;
    if (stored) {
      if (stored.fingerprint !== fingerprint) return envelope(422, 'idempotency_key_mismatch', 'Idempotency-Key reused with another request');
      return json(stored.status, stored.body);
    }
    const [status, answer] = run();
    if (status < 500 && status !== 429) this.idempotent.set(id, { fingerprint, status, body: answer });
    return json(status, answer);
  }

  async handle(url, init = {}) {
    const parsed = new URL(url);
    const method = init.method || 'GET';
    const headers = init.headers || {};
    let body = null;
    if (typeof init.body === 'string') body = JSON.parse(init.body);
    if (parsed.origin === 'https://s3.test') return this.handleUpload(parsed, method, headers, init.body);
    const path = parsed.pathname.replace(/^\/api/, '');
    this.requests.push({ method, path, query: Object.fromEntries(parsed.searchParams), headers, body, at: this.clock.now() });
    const failure = this.failures.find((f) => f.method === method && f.path === path && f.when(body));
    if (failure) {
      failure.times -= 1;
      if (failure.times <= 0) this.failures.splice(this.failures.indexOf(failure), 1);
      if (failure.status === 'network') throw new TypeError('Failed to fetch');
      if (failure.status === 'lost') { this.route(method, path, parsed, headers, body); throw new TypeError('Failed to fetch'); }
      if (typeof failure.body === 'string') return new Response(failure.body, { status: failure.status, headers: failure.headers });
      return envelope(failure.status, failure.body.code || `http_${failure.status}`, failure.body.message || 'Injected failure', failure.body, failure.headers);
    }
    return this.route(method, path, parsed, headers, body);
  }

  route(method, path, url, headers, body) {
    const key = `${method} ${path}`;
    if (key === 'POST /auth/register') return this.register(body);
    if (key === 'POST /auth/login') return this.login(body);
    if (key === 'POST /auth/refresh') return this.refresh(body);
    if (key === 'POST /auth/logout') return this.logout(body);
    if (key === 'GET /credits/packages') return json(200, { packages: PACKAGES, plans: PLANS });
    const user = this.userByToken(headers);
    if (!user) return envelope(401, 'unauthorized', 'Unauthorized');
    if (user === 'deleted') return envelope(401, 'account_not_found', 'Account no longer exists');
    if (key === 'GET /auth/user') return json(200, { user: { ...this.publicUser(user), ...this.holdings(user) } });
    if (key === 'GET /credits/balance') return json(200, this.balanceOf(user));
    if (key === 'GET /credits/transactions') {
      const items = this.transactions.filter((t) => t.user_id === user.user_id).reverse().slice(0, Number(url.searchParams.get('limit') || 20));
      return json(200, { items: items.map(({ user_id, ...t }) => t), next_cursor: null });
    }
    if (key === 'POST /credits/purchase') return this.purchase(user, headers, body);
    if (key === 'POST /credits/subscribe') return this.idempotently(user, headers, key, body, () => {
      const session = this.id('cs_sub_');
      this.subscriptions = { ...(this.subscriptions || {}), [session]: { userId: user.user_id, planId: body.plan_id } };
      return [200, { checkout_url: `https://checkout.test/${session}`, session_id: session }];
    });
    if (key === 'POST /credits/portal') return json(200, { url: 'https://billing.test/portal/1' });
    if (key === 'POST /transcription/stream') return this.stream(user, headers, body);
    if (key === 'POST /transcription/ask') return this.ask(user, headers, body);
    if (key === 'POST /transcription/catchup/upload') return this.uploadTicket(user, body);
    if (key === 'POST /transcription/catchup') return this.submitJob(user, headers, body);
    const job = /^GET \/transcription\/catchup\/([0-9a-f]{32})$/.exec(key);
    if (job) {
      const found = this.jobs.get(job[1]);
      if (!found || found.user_id !== user.user_id) return envelope(404, 'job_not_found', 'Job not found');
      found.polls += 1;
      found.pollTimes.push(this.clock.now());
      const { user_id, polls, pollTimes, ...visible } = found;
      return json(200, visible);
    }
    if (key === 'GET /transcription/history') return json(200, { items: this.history.filter((h) => h.user === user.user_id).map(({ user, ...h }) => h), next_cursor: null });
    return envelope(404, 'not_found', 'Not found');
  }

  register(body) {
    if ([...this.users.values()].some((u) => u.email === body.email)) return envelope(409, 'email_taken', 'An account with this email already exists');
    const user = {
      user_id: this.id('user-'), email: body.email, name: body.name || '', password: body.password,
      credits_balance: 200, subscription_tier: 'free', is_admin: false, created_at: '2027-01-15T08:00:00.000Z',
      last_login: null, total_credits_purchased: 0, total_usage: 0,
    };
    this.users.set(user.user_id, user);
    const session = this.issueSession(user);
    return json(201, { user: { ...this.publicUser(user), token: session.token }, ...session });
  }

  login(body) {
    const user = [...this.users.values()].find((u) => u.email === body.email);
    if (!user || user.password !== body.password) return envelope(401, 'invalid_credentials', 'Invalid email or password');
    const session = this.issueSession(user);
    return json(200, { user: { ...this.publicUser(user), token: session.token }, ...session });
  }

  refresh(body) {
    const record = this.refreshTokens.get(body.refresh_token);
    if (!record || this.revokedFamilies.has(record.family)) return envelope(401, 'invalid_refresh_token', 'Invalid or expired refresh token');
    if (record.used) {
      this.revokedFamilies.add(record.family);
      return envelope(401, 'refresh_token_reused', 'Refresh token reuse detected; please log in again');
    }
    record.used = true;
    const user = this.users.get(record.userId);
    const session = this.issueSession({ ...user, family: record.family });
    return json(200, session);
  }

  logout(body) {
    const record = this.refreshTokens.get(body.refresh_token);
    if (record) this.revokedFamilies.add(record.family);
    return new Response(null, { status: 204 });
  }

  // ---- billing ----

  purchase(user, headers, body) {
    return this.idempotently(user, headers, 'POST /credits/purchase', body, () => {
      const pack = PACKAGES.find((p) => p.id === body.package_id);
      if (!pack) return [422, { error: 'Unknown package', message: 'Unknown package', code: 'unknown_package', valid: PACKAGES.map((p) => p.id) }];
      const transactionId = this.id('txn-');
      const session = this.id('cs_');
      this.transactions.push({
        transaction_id: transactionId, user_id: user.user_id, kind: 'purchase', source: 'purchase', status: 'pending',
        credits: pack.credits, amount: pack.amount, currency: pack.currency, package_id: pack.id, created_at: new Date(this.clock.now()).toISOString(),
      });
      return [200, { checkout_url: `https://checkout.test/${session}?txn=${transactionId}`, session_id: session, transaction_id: transactionId }];
    });
  }

  /** Stripe's webhook arrived: the pack's credits are granted once. */
  pay(transactionId) {
    const row = this.transactions.find((t) => t.transaction_id === transactionId);
    if (row.status === 'completed') return;
    row.status = 'completed';
    const user = this.users.get(row.user_id);
    user.credits_balance += row.credits;
    user.total_credits_purchased += row.credits;
    row.balance_after = user.credits_balance;
  }

  setStatus(transactionId, status) {
    this.transactions.find((t) => t.transaction_id === transactionId).status = status;
  }

  paySubscription(sessionId) {
    const { userId, planId } = this.subscriptions[sessionId];
    const plan = PLANS.find((p) => p.id === planId);
    const user = this.users.get(userId);
    user.subscription_tier = plan.tier;
    user.credits_balance += plan.credits_per_period;
  }

  // ---- live captions: the renew protocol of README "Live captions: sessions, tokens and renewal" ----

  available(user) { return user.credits_balance - (user.credits_held || 0); }

  grantAnswer(user, id, session, token, sampleRate) {
    const seconds = session.tokenSeconds;
    return {
      success: true, session_id: id, renewable: this.renewable, token, assemblyai_api_key: token,
      websocket_url: `wss://streaming.test/v3/ws?sample_rate=${sampleRate}&format_turns=true&token=${token}`,
      token_number: session.tokenNumber, expires_in_seconds: 60, max_session_seconds: seconds, max_minutes: seconds / 60,
      renew_in_seconds: this.renewable ? Math.max(0, seconds - this.renewLeadSeconds) : null, session_max_minutes: this.sessionMaxMinutes,
      expires_at: new Date(this.clock.now() + seconds * 1000).toISOString(), credits_reserved: session.reserved,
      price_per_minute: this.livePrice, credits_balance: user.credits_balance, ...this.holdings(user), heartbeat_interval_seconds: 30,
    };
  }

  /** Minutes the next token may have: the token length, what the balance pays, what the session has left. */
  tokenMinutes(user, session, requested) {
    return Math.min(this.tokenMinutesSetting, Math.floor(this.available(user) / this.livePrice), requested, this.sessionMaxMinutes - (session?.minutes || 0));
  }

  insufficient(user) {
    return [402, { error: 'Insufficient credits', message: 'Insufficient credits', code: 'insufficient_credits', balance: this.available(user), required: this.livePrice, price_per_minute: this.livePrice }];
  }

  stream(user, headers, body) {
    if (body.action === 'start') {
      return this.idempotently(user, headers, 'POST /transcription/stream start', body, () => {
        const minutes = this.tokenMinutes(user, null, body.max_minutes || 180);
        if (minutes < 1) return this.insufficient(user);
        const id = this.id('sess-');
        const session = {
          user_id: user.user_id, startedAt: this.clock.now(), state: 'active', tokenNumber: 1, tokenSeconds: minutes * 60,
          tokenAt: this.clock.now(), minutes, committed: 0, reserved: minutes * this.livePrice, sampleRate: body.sample_rate || 16000, renews: 0,
        };
        user.credits_held = (user.credits_held || 0) + session.reserved;
        this.sessions.set(id, session);
        return [200, this.grantAnswer(user, id, session, this.streaming.mint(minutes * 60), session.sampleRate)];
      });
    }
    const session = this.sessions.get(body.session_id);
    if (!session || session.user_id !== user.user_id) return envelope(404, 'session_not_found', 'Session not found');
    if (body.action === 'renew') {
      if (session.state !== 'active') return envelope(409, 'session_not_active', 'Session not active', { state: session.state });
      if (!this.renewable) return envelope(409, 'not_renewable', 'This session has one token and cannot be renewed; start a new one');
      if (body.token_number === session.tokenNumber - 1 && session.lastRenew) return json(200, { ...session.lastRenew, replayed: true });
      if (body.token_number !== session.tokenNumber) return envelope(409, 'token_superseded', 'Token superseded', { token_number: session.tokenNumber });
      const left = (session.tokenAt + session.tokenSeconds * 1000 - this.clock.now()) / 1000;
      if (left > this.renewWindowSeconds) return envelope(409, 'renew_too_early', 'Too early to renew', { renew_in_seconds: Math.ceil(left - this.renewLeadSeconds) });
      if (session.minutes >= this.sessionMaxMinutes) return envelope(409, 'session_limit_reached', 'Session limit reached');
      const minutes = this.tokenMinutes(user, session, 180);
      if (minutes < 1) { const [status, answer] = this.insufficient(user); return json(status, answer); }
      session.committed += session.tokenSeconds;
      session.tokenNumber += 1;
      session.tokenSeconds = minutes * 60;
      session.tokenAt = this.clock.now();
      session.minutes += minutes;
      session.reserved += minutes * this.livePrice;
      session.renews += 1;
      user.credits_held += minutes * this.livePrice;
      session.lastRenew = this.grantAnswer(user, body.session_id, session, this.streaming.mint(minutes * 60), session.sampleRate);
      return json(200, session.lastRenew);
    }
    if (body.action === 'stop') {
      if (session.bill) return json(200, { ...session.bill, already_stopped: true });
      const elapsed = (this.clock.now() - session.startedAt) / 1000;
      const billed = Math.min(session.minutes * 60, Math.max(elapsed, session.committed));
      const minutes = Math.max(1, Math.ceil(billed / 60 - 1e-9));
      const used = minutes * this.livePrice;
      user.credits_held -= session.reserved;
      user.credits_balance -= used;
      user.total_usage += used;
      session.state = 'stopped';
      session.bill = {
        success: true, session_id: body.session_id, duration_minutes: minutes, credits_used: used, credits_refunded: session.reserved - used,
        remaining_balance: user.credits_balance, ...this.holdings(user), already_stopped: false,
      };
      return json(200, session.bill);
    }
    return envelope(422, 'validation_error', 'Invalid action', { field: 'action' });
  }

  // ---- ask ----

  ask(user, headers, body) {
    return this.idempotently(user, headers, 'POST /transcription/ask', body, () => {
      if (this.available(user) < this.askPrice) return [402, { error: 'Insufficient credits', message: 'Insufficient credits', code: 'insufficient_credits', balance: this.available(user), required: this.askPrice }];
      user.credits_balance -= this.askPrice;
      user.total_usage += this.askPrice;
      this.history.push({ user: user.user_id, id: this.id('ask-'), kind: 'ask', created_at: new Date(this.clock.now()).toISOString(), credits_used: this.askPrice });
      return [200, {
        success: true, answer: `Answer to: ${body.question}`, credits_used: this.askPrice, remaining_balance: user.credits_balance,
        credits_balance: user.credits_balance, ...this.holdings(user), transcript_trimmed: false,
      }];
    });
  }

  // ---- catch-up ----

  uploadTicket(user, body) {
    const key = `uploads/${user.user_id}/${'a'.repeat(31)}${this.counter % 10}.wav`;
    this.counter += 1;
    this.uploads.set(key, { expected: body.file_size, type: body.content_type, received: null });
    return json(200, {
      upload_url: `https://s3.test/${encodeURIComponent(key)}?X-Amz-Signature=sig`, audio_key: key, expires_in: 300,
      method: 'PUT', headers: { 'Content-Type': body.content_type }, max_bytes: body.file_size,
    });
  }

  async handleUpload(url, method, headers, body) {
    const key = decodeURIComponent(url.pathname.slice(1));
    const upload = this.uploads.get(key);
    this.requests.push({ method, path: `s3:${key}`, headers, body });
    const bytes = body ? new Uint8Array(await new Response(body).arrayBuffer()) : new Uint8Array(0);
    const injected = this.uploadAnswers?.shift();
    if (injected) return new Response('<Error/>', { status: injected });
    if (!upload || method !== 'PUT' || headers['Content-Type'] !== upload.type || headers.Authorization || bytes.length !== upload.expected) {
      return new Response('<Error><Code>SignatureDoesNotMatch</Code></Error>', { status: 403 });
    }
    upload.received = bytes;
    return new Response(null, { status: 200 });
  }

  submitJob(user, headers, body) {
    return this.idempotently(user, headers, 'POST /transcription/catchup', body, () => {
      if (body.audio_key && !this.uploads.get(body.audio_key)?.received) return [404, { error: 'Audio not found', message: 'Audio not found', code: 'audio_not_found' }];
      const cost = body.duration_minutes * 10;
      if (this.available(user) < cost) return [402, { error: 'Insufficient credits', message: 'Insufficient credits', code: 'insufficient_credits', balance: this.available(user), required: cost }];
      user.credits_held = (user.credits_held || 0) + cost;
      const jobId = (this.id('') + 'f'.repeat(32)).slice(0, 32).replace(/[^0-9a-f]/g, 'e');
      this.jobs.set(jobId, {
        job_id: jobId, user_id: user.user_id, status: 'queued', created_at: new Date(this.clock.now()).toISOString(),
        duration_minutes: body.duration_minutes, reserved_minutes: body.duration_minutes, credits_reserved: cost, credits_used: null, error: null, result: null, polls: 0, pollTimes: [],
      });
      return [202, {
        job_id: jobId, status: 'queued', credits_reserved: cost, duration_minutes: body.duration_minutes,
        reserved_minutes: body.duration_minutes, price_per_minute: 10, remaining_balance: this.available(user),
      }];
    });
  }

  finishJob(jobId, { failed = false } = {}) {
    const job = this.jobs.get(jobId);
    const user = this.users.get(job.user_id);
    user.credits_held -= job.credits_reserved;
    if (failed) {
      Object.assign(job, { status: 'failed', credits_used: 0, error: 'transcription_failed', error_message: 'The audio could not be transcribed.' });
    } else {
      Object.assign(job, { status: 'completed', credits_used: 10, result: { summary: 'They talked.', key_points: ['a point'], notable_moments: [], transcript: 'hello', stream: { channel: null, title: null, game: null, started_at: null } } });
      user.credits_balance -= 10;
    }
  }
}

/**
 * AssemblyAI's streaming service: mints single-use tokens with a maximum session length,
 * and a WebSocket class speaking its v3 messages. The server side turns received audio
 * into turns: a partial every second, and a turn ends (end_of_turn, then the formatted
 * copy) every `turnSeconds` of audio.
 */
export class FakeStreaming {
  constructor({ clock, turnSeconds = 3 } = {}) {
    this.clock = clock;
    this.turnSeconds = turnSeconds;
    this.tokens = new Map();
    this.sockets = [];
    const service = this;
    this.WebSocket = class FakeWebSocket {
      constructor(url) {
        this.url = url;
        this.readyState = 0;
        this.sent = [];
        this.frames = [];
        this.closeCode = null;
        this.binaryType = 'blob';
        service.sockets.push(this);
        queueMicrotask(() => service.connect(this));
      }
      send(data) {
        if (this.readyState !== 1) throw new Error('InvalidStateError: socket not open');
        this.sent.push(data);
        service.receive(this, data);
      }
      close(code = 1000) { service.close(this, code); }
    };
  }

  mint(maxSessionSeconds) {
    const token = `tmp-${this.tokens.size + 1}`;
    this.tokens.set(token, { maxSessionSeconds, used: false, mintedAt: this.clock.now() });
    return token;
  }

  connect(socket) {
    const params = new URL(socket.url).searchParams;
    const grant = this.tokens.get(params.get('token'));
    if (!grant || grant.used || this.refuseAll) { this.close(socket, 1008, 'Unauthorized'); return; }
    grant.used = true;
    socket.grant = grant;
    socket.sampleRate = Number(params.get('sample_rate'));
    socket.audioSamples = 0;
    socket.turnOrder = 0;
    socket.turnWords = [];
    socket.readyState = 1;
    socket.openedAt = this.clock.now();
    socket.maxTimer = this.clock.setTimeout(() => this.close(socket, 3008, 'Max session duration reached'), grant.maxSessionSeconds * 1000);
    this.message(socket, { type: 'Begin', id: `s-${this.sockets.length}`, expires_at: Math.floor(this.clock.now() / 1000) + grant.maxSessionSeconds });
  }

  message(socket, body) {
    queueMicrotask(() => { if (socket.readyState === 1 || body.type === 'Termination') socket.onmessage?.({ data: JSON.stringify(body) }); });
  }

  receive(socket, data) {
    if (typeof data === 'string') {
      const message = JSON.parse(data);
      if (message.type === 'Terminate') {
        this.endTurn(socket);
        this.message(socket, { type: 'Termination', audio_duration_seconds: socket.audioSamples / socket.sampleRate, session_duration_seconds: (this.clock.now() - socket.openedAt) / 1000 });
        queueMicrotask(() => this.close(socket, 1000));
      }
      return;
    }
    const samples = new Int16Array(data);
    socket.frames.push(samples);
    const before = socket.audioSamples;
    socket.audioSamples += samples.length;
    const seconds = (n) => Math.floor(n / socket.sampleRate);
    if (seconds(socket.audioSamples) > seconds(before)) {
      socket.turnWords.push(`w${samples[0]}`);
      if (socket.turnWords.length >= this.turnSeconds) this.endTurn(socket);
      else this.message(socket, { type: 'Turn', turn_order: socket.turnOrder, end_of_turn: false, turn_is_formatted: false, transcript: socket.turnWords.join(' '), words: [] });
    }
  }

  endTurn(socket) {
    if (!socket.turnWords.length) return;
    const text = socket.turnWords.join(' ');
    this.message(socket, { type: 'Turn', turn_order: socket.turnOrder, end_of_turn: true, turn_is_formatted: false, transcript: text, words: [] });
    this.message(socket, { type: 'Turn', turn_order: socket.turnOrder, end_of_turn: true, turn_is_formatted: true, transcript: `${text[0].toUpperCase()}${text.slice(1)}.`, words: [] });
    socket.turnOrder += 1;
    socket.turnWords = [];
  }

  close(socket, code, reason = '') {
    if (socket.readyState === 3) return;
    socket.readyState = 3;
    socket.closeCode = code;
    socket.closedAt = this.clock.now();
    if (socket.maxTimer) this.clock.clearTimeout(socket.maxTimer);
    queueMicrotask(() => socket.onclose?.({ code, reason }));
  }

  get open() { return this.sockets.filter((s) => s.readyState === 1); }
}

/** A PcmSource that a test drives: `push(frames)` delivers numbered 100 ms frames. */
export class FakePcmSource {
  constructor(sampleRate = 16000) { this.sampleRate = sampleRate; this.onChunk = null; this.sequence = 0; this.stopped = false; }
  start(onChunk) { this.onChunk = onChunk; }
  stop() { this.stopped = true; this.onChunk = null; }
  /** Push `count` frames of 100 ms whose samples all carry their sequence number. */
  push(count = 1) {
    for (let i = 0; i < count; i += 1) {
      this.sequence += 1;
      this.onChunk?.(new Int16Array(this.sampleRate / 10).fill(this.sequence));
    }
  }
}

export function setup(overrides = {}) {
  const clock = new FakeClock();
  const streaming = new FakeStreaming({ clock });
  const backend = new FakeBackend({ clock, streaming, ...overrides.backend });
  const tabs = new FakeTabs();
  let ids = 0;
  const options = {
    baseUrl: backend.baseUrl, fetch: backend.fetch, WebSocket: streaming.WebSocket, tabs, clock,
    randomId: () => `key-${++ids}`, locks: null, ...overrides.kit,
  };
  return { clock, streaming, backend, tabs, options };
}

/** A world (setup()) with a kit signed in to a new account (200 credits); `kit.storage` is shared storage. */
export async function signedIn(overrides = {}) {
  const world = setup(overrides);
  const storage = memoryStorage();
  const kit = createKit({ ...world.options, storage });
  await kit.register({ email: 'ada@example.com', password: 'correct horse battery' });
  return { ...world, storage, kit, user: world.backend.users.values().next().value };
}
