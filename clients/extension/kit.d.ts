// Type declarations of kit.js. Interfaces tagged `@schema <Name>` mirror the schema of that
// name in openapi.yaml field for field (tests/contract/test_client_kit.py checks it), and
// every method tagged `@operation` calls that operation.

export declare const KIT_VERSION: string;

// ---- options and environment -------------------------------------------------------------

export interface KeyValueStorage {
  get(key: string): Promise<any>;
  set(key: string, value: unknown): Promise<void>;
  remove(key: string): Promise<void>;
  /** Changes made by any context (chrome.storage.onChanged); the kit uses it to stay in step. */
  subscribe?(listener: (key: string, value: any) => void): () => void;
}

export interface Tabs {
  open(url: string): Promise<{ id: number }>;
  onClosed(tabId: number, listener: () => void): () => void;
}

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(id: unknown): void;
}

export interface LockManagerLike {
  request<T>(name: string, work: () => Promise<T>): Promise<T>;
}

export interface KitOptions {
  /** The API's URL, e.g. `https://<api id>.execute-api.<region>.amazonaws.com/api`. */
  baseUrl: string;
  /** Default: chrome.storage.local (shared by every context of the extension). */
  storage?: KeyValueStorage;
  /** Prefix of the storage keys (default `transcriptionKit`). */
  storageKey?: string;
  fetch?: typeof fetch;
  WebSocket?: { new (url: string): WebSocket };
  /** Default: chrome.tabs. */
  tabs?: Tabs;
  clock?: Clock;
  /** Idempotency-Keys (default crypto.randomUUID). */
  randomId?: () => string;
  /** Default navigator.locks: serialises refresh-token rotation across contexts. */
  locks?: LockManagerLike | null;
}

export declare function createKit(options: KitOptions): TranscriptionKit;
export declare function chromeStorage(area?: unknown): KeyValueStorage;
export declare function memoryStorage(initial?: Record<string, unknown>): KeyValueStorage;
export declare function chromeTabs(tabs?: unknown): Tabs;

// ---- errors --------------------------------------------------------------------------------

export declare class KitError extends Error {
  /** The API's machine code (`insufficient_credits`, ...) or the kit's own (`network_error`, ...). */
  code: string;
  /** HTTP status (0 when there was no answer; the close code for socket errors). */
  status: number;
  /** The error envelope as the API sent it. */
  body: ErrorEnvelope | Record<string, any> | null;
  requestId: string | null;
}
export declare class ApiError extends KitError {}
export declare class ValidationError extends ApiError { readonly field: string | null; }
export declare class AuthError extends ApiError {}
export declare class SessionExpiredError extends AuthError {}
export declare class NotSignedInError extends AuthError {}
export declare class InsufficientCreditsError extends ApiError {
  readonly balance: number | null;
  readonly required: number | null;
  readonly pricePerMinute: number | null;
}
export declare class ForbiddenError extends ApiError {}
export declare class NotFoundError extends ApiError {}
export declare class ConflictError extends ApiError {}
export declare class PayloadTooLargeError extends ApiError {}
export declare class RateLimitError extends ApiError { retryAfter: number | null; }
export declare class ServiceError extends ApiError { retryAfter: number | null; }
export declare class NetworkError extends KitError {}
export declare class TimeoutError extends KitError {}
export declare class AbortError extends KitError {}
export declare class CheckoutError extends KitError {
  outcome: 'failed' | 'expired' | 'cancelled';
  transactionId: string;
}
export declare class CatchupFailedError extends KitError { job: CatchupJob; }
export declare class UploadError extends KitError {}
export declare class CaptionsError extends KitError {}

export declare function errorFromResponse(status: number, body: unknown, headers?: Headers | null): ApiError;

// ---- API shapes (openapi.yaml) -----------------------------------------------------------

/** @schema Error */
export interface ErrorEnvelope {
  error: string;
  message: string;
  code: string;
  field?: string;
  limit?: number;
  balance?: number;
  required?: number;
  price_per_minute?: number;
  valid?: string[];
  retry_after?: number;
  state?: string | null;
  channel?: string;
  request_id?: string;
}

/** @schema User */
export interface User {
  user_id: string;
  email: string;
  name: string;
  /** What the user owns: available + held (may be negative after a refund or chargeback). */
  credits_balance: number;
  /** Held for live sessions, catch-up jobs and asks in progress. */
  credits_held?: number;
  /** What can be spent now. */
  credits_available?: number;
  subscription_tier: string;
  subscription_status?: string | null;
  is_admin: boolean;
  created_at: string;
  last_login: string | null;
  total_credits_purchased: number;
  total_usage: number;
}

/**
 * The user as register and login answer it, without the access token the kit keeps.
 * @schema SessionUser @omit token
 */
export interface SignedInUser extends User {}

/** @schema Balance */
export interface Balance {
  balance: number;
  /** Held for live sessions, catch-up jobs and asks in progress. */
  credits_held: number;
  /** What can be spent now (balance - held). */
  credits_available: number;
  subscription_tier: string;
  total_credits_purchased: number;
  total_usage: number;
}

/** @schema Catalogue.packages[] */
export interface CreditPackage {
  id: string;
  name: string;
  credits: number;
  amount: number;
  currency: string;
}

/** @schema Catalogue.plans[] */
export interface Plan {
  id: string;
  name: string;
  tier: string;
  credits_per_period: number;
  amount: number;
  currency: string;
  interval: string;
}

/** @schema Catalogue */
export interface Catalogue {
  packages: CreditPackage[];
  plans: Plan[];
}

/** @schema Transaction */
export interface Transaction {
  transaction_id: string;
  kind?: string;
  source?: string;
  status?: string;
  credits?: number;
  amount?: number;
  currency?: string;
  package_id?: string;
  plan_id?: string;
  balance_after?: number;
  created_at: string;
  completed_at?: string;
}

/** @schema TransactionPage */
export interface TransactionPage {
  items: Transaction[];
  next_cursor: string | null;
}

/** @schema CheckoutStarted */
export interface CheckoutStarted {
  checkout_url: string;
  session_id: string;
  transaction_id: string;
}

/** @schema SubscriptionCheckout */
export interface SubscriptionCheckout {
  checkout_url: string;
  session_id: string;
}

/** @schema PortalSession */
export interface PortalSession {
  url: string;
}

/** @schema StreamStarted */
export interface StreamStarted {
  success: true;
  session_id: string;
  token: string;
  assemblyai_api_key: string;
  websocket_url: string;
  expires_in_seconds: number;
  max_session_seconds: number;
  max_minutes: number;
  expires_at: string;
  credits_reserved: number;
  /** What the user owns (available + held). */
  credits_balance: number;
  /** Held for this and any other work in progress. */
  credits_held: number;
  /** What can be spent now. */
  credits_available: number;
  price_per_minute: number;
  heartbeat_interval_seconds: number;
  /** False for a legacy start: one token, no renewal. */
  renewable: boolean;
  /** 1 for the start's token, then one more per renewal; sent back with `renew`. */
  token_number: number;
  /** When to renew, from when this answer arrived (null when not renewable). */
  renew_in_seconds: number | null;
  /** The session's longest duration. */
  session_max_minutes: number;
  /** A retried renew: the token already handed out for this token_number. */
  replayed?: true;
}

/** @schema StreamStopped */
export interface StreamStopped {
  success: true;
  session_id: string;
  duration_minutes: number;
  credits_used: number;
  credits_refunded: number;
  remaining_balance: number;
  credits_held: number;
  credits_available: number;
  already_stopped: boolean;
}

/** @schema AskAnswer */
export interface AskAnswer {
  success: true;
  answer: string;
  credits_used: number;
  remaining_balance: number;
  credits_balance: number;
  credits_held: number;
  /** What can be spent now (a live session may hold the rest). */
  credits_available: number;
  transcript_trimmed: boolean;
}

/** @schema UploadTicket */
export interface UploadTicket {
  upload_url: string;
  audio_key: string;
  expires_in: number;
  method: 'PUT';
  headers: Record<string, string>;
  max_bytes: number;
}

export type CatchupStatus = 'queued' | 'processing' | 'completed' | 'failed';

/** @schema CatchupAccepted */
export interface CatchupAccepted {
  job_id: string;
  status: CatchupStatus;
  credits_reserved: number;
  /** As requested: the most the client will pay for. */
  duration_minutes: number;
  /** The audio's measured length rounded up, at most duration_minutes: what is reserved, transcribed and billed at most. */
  reserved_minutes: number;
  price_per_minute: number;
  remaining_balance?: number;
}

/** @schema CatchupResult */
export interface CatchupResult {
  summary: string;
  key_points: string[];
  notable_moments?: string[];
  transcript: string | null;
  stream: { channel: string | null; title: string | null; game: string | null; started_at: string | null };
}

/** @schema CatchupJob */
export interface CatchupJob {
  job_id: string;
  status: CatchupStatus;
  created_at: string;
  updated_at?: string | null;
  duration_minutes: number;
  reserved_minutes: number;
  channel?: string | null;
  stream_url?: string | null;
  credits_reserved: number;
  credits_used: number | null;
  error: string | null;
  error_message?: string;
  result: CatchupResult | null;
  credits_refunded?: number | null;
  billed_minutes?: number | null;
  audio_duration_seconds?: number | null;
  completed_at?: string | null;
  failed_at?: string | null;
}

/** @schema HistoryEntry */
export interface HistoryEntry {
  id: string;
  kind: 'stream' | 'catchup' | 'ask';
  created_at: string;
  credits_used: number;
  ended_at?: string;
  duration_minutes?: number;
  channel?: string;
  title?: string;
  summary?: string;
  status?: string;
}

/** @schema HistoryPage */
export interface HistoryPage {
  items: HistoryEntry[];
  next_cursor: string | null;
}

// ---- the kit's own shapes -----------------------------------------------------------------

export type SignOutReason =
  | 'logout' | 'session_expired' | 'refresh_token_reused' | 'account_not_found' | 'account_suspended' | 'signed_out_elsewhere';

export interface Payment {
  kind: 'purchase' | 'subscription';
  credits: number;
  /** The balance once the credits arrived. */
  balance: number;
  transactionId?: string;
  packageId?: string;
  planId?: string;
  tier?: string;
}

export interface CheckoutOptions {
  signal?: AbortSignal;
  /** How long to wait for the payment (default one hour, the Checkout's lifetime). */
  timeoutMs?: number;
  /** After the Checkout tab is closed, how long a payment may still arrive (default 20 s). */
  closedGraceMs?: number;
  idempotencyKey?: string;
}

export interface CatchUpInput {
  /** The audio: a Blob (its `type` is the content type), e.g. `captions.recentAudio()`. */
  audio: Blob;
  /** Whole minutes to pay for; read from the header when `audio` is WAV. */
  durationMinutes?: number;
  streamUrl?: string;
  channel?: string;
  onStatus?: (status: 'uploading' | CatchupStatus, job: CatchupAccepted | CatchupJob | null) => void;
  signal?: AbortSignal;
  timeoutMs?: number;
}

/** 16-bit mono PCM, delivered in chunks of any size. */
export interface PcmSource {
  sampleRate: number;
  start(onChunk: (samples: Int16Array) => void): void | Promise<void>;
  stop(): void | Promise<void>;
}

export interface CaptionTurn {
  /** The turn's number, counted across the whole run (renewals included). */
  turn: number;
  text: string;
  words: Array<{ start: number; end: number; text: string; confidence: number; word_is_final: boolean }>;
}

export interface CaptionCredits {
  sessionId: string;
  tokenNumber: number;
  /** What the user owns. */
  balance: number;
  /** What can be spent now (owned minus held), when the API says. */
  available: number | null;
  /** What running sessions and jobs hold, when the API says. */
  held: number | null;
  creditsReserved: number;
}

export interface CaptionBill extends StreamStopped {
  /** Every backend session of the run (more than one when a session reached its longest time). */
  sessions: StreamStopped[];
}

export type CaptionsEndReason = 'insufficient_credits' | 'session_ended' | 'renew_failed';

export interface CaptionCallbacks {
  onPartial?(turn: CaptionTurn): void;
  onFinal?(turn: CaptionTurn): void;
  onStarted?(credits: CaptionCredits): void;
  onRenewed?(event: CaptionCredits & { renewals: number; newSession: boolean }): void;
  /** The captions ended by themselves (credits ran out, the session was closed); already settled. */
  onEnded?(event: { reason: CaptionsEndReason; bill: CaptionBill | null; error?: unknown }): void;
  onStopped?(bill: CaptionBill): void;
  /** Problems worth showing; the session carries on unless onEnded follows. */
  onError?(error: KitError): void;
}

export interface CaptionOptions {
  maxMinutes?: number;
  channel?: string;
  title?: string;
  /** Audio per socket message (default 100 ms; AssemblyAI takes 50 to 1000). */
  frameMs?: number;
  /** Keep this much recent audio for `recentAudio()` (default 0). */
  keepAudioSeconds?: number;
  /** MediaStream sources: AudioContext rate (default 16000). */
  sampleRate?: number;
  /** MediaStream sources: also play the audio (tab capture mutes the tab). */
  playThrough?: boolean;
  /** MediaStream sources: where pcm-worklet.js is (default: beside kit.js). */
  workletUrl?: string | URL;
}

export declare class CaptionSession {
  readonly sessionId: string | null;
  readonly renewals: number;
  /** The last `keepAudioSeconds` of audio as a WAV Blob. */
  recentAudio(): Blob;
  /** Stop the audio, deliver the last turns, settle the bill (idempotent). */
  stop(): Promise<CaptionBill | null>;
}

export declare class TranscriptionKit {
  constructor(options: KitOptions);

  onBalanceChanged(listener: (balance: number) => void): () => void;
  onPaid(listener: (payment: Payment) => void): () => void;
  onSignedIn(listener: (user: SignedInUser | null) => void): () => void;
  onSignedOut(listener: (reason: SignOutReason) => void): () => void;

  /** @operation POST /auth/register */
  register(input: { email: string; password: string; name?: string }): Promise<SignedInUser>;
  /** @operation POST /auth/login */
  login(email: string, password: string): Promise<SignedInUser>;
  /** @operation POST /auth/logout */
  logout(): Promise<{ revoked: boolean }>;
  isSignedIn(): Promise<boolean>;
  /** The user stored at sign-in (no request); null when signed out. */
  currentUser(): Promise<SignedInUser | null>;
  /** @operation GET /auth/user */
  getUser(): Promise<User>;
  /** @operation POST /auth/refresh (when the access token is about to expire) */
  accessToken(): Promise<string>;

  /** @operation GET /credits/balance */
  getBalance(): Promise<Balance>;
  /** @operation GET /credits/packages */
  getCatalogue(): Promise<Catalogue>;
  /** @operation GET /credits/transactions */
  listTransactions(page?: { limit?: number; cursor?: string }): Promise<TransactionPage>;
  /** @operation POST /credits/purchase */
  buy(packageId: string, options?: CheckoutOptions): Promise<Payment>;
  resumePurchases(options?: { signal?: AbortSignal; timeoutMs?: number }): Promise<Payment[]>;
  /** @operation POST /credits/subscribe */
  subscribe(planId: string, options?: CheckoutOptions): Promise<Payment>;
  /** @operation POST /credits/portal */
  openBillingPortal(): Promise<string>;

  /** @operation POST /transcription/ask */
  ask(question: string, transcript: string, options?: { idempotencyKey?: string; signal?: AbortSignal }): Promise<AskAnswer>;
  /** @operation POST /transcription/catchup/upload */
  uploadAudio(audio: Blob, options?: { contentType?: string; signal?: AbortSignal }): Promise<string>;
  /** @operation POST /transcription/catchup */
  submitCatchup(
    input: { audioKey?: string; audio?: string; durationMinutes: number; streamUrl?: string; channel?: string },
    options?: { idempotencyKey?: string; signal?: AbortSignal },
  ): Promise<CatchupAccepted>;
  /** @operation GET /transcription/catchup/{job_id} */
  getCatchup(jobId: string, options?: { signal?: AbortSignal }): Promise<CatchupJob>;
  waitForCatchup(jobId: string, options?: { onStatus?: CatchUpInput['onStatus']; signal?: AbortSignal; timeoutMs?: number }): Promise<CatchupJob>;
  catchUp(input: CatchUpInput): Promise<CatchupJob>;
  /** @operation GET /transcription/history */
  getHistory(page?: { limit?: number; cursor?: string }): Promise<HistoryPage>;

  /** @operation POST /transcription/stream */
  startCaptions(source: MediaStream | PcmSource, callbacks?: CaptionCallbacks, options?: CaptionOptions): Promise<CaptionSession>;

  /** Any API call, with the session's token, refresh and safe retries. */
  request<T = any>(method: string, path: string, options?: {
    body?: unknown; query?: Record<string, unknown>; auth?: boolean; idempotencyKey?: string; signal?: AbortSignal; repeatable?: boolean;
  }): Promise<T>;
}

export declare function mediaStreamSource(stream: MediaStream, options?: { sampleRate?: number; playThrough?: boolean; workletUrl?: string | URL }): PcmSource;
export declare function encodeWav(frames: Int16Array[], sampleRate: number): Blob;
export declare function wavMinutes(bytes: Uint8Array): number | null;
