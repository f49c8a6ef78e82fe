"""The HTTP machinery every provider client shares.

One pooled `requests.Session` per provider (created on first use, reused by a warm
Lambda), connect and read timeouts well under API Gateway's 29 s, bounded retries with
exponential backoff on 429/5xx that honour `Retry-After`, and one mapping from provider
failures to our error envelope:

- upstream 5xx, timeouts, unreachable -> `UpstreamError` 502 (503 + Retry-After when the
  provider itself said 503 with a Retry-After);
- our key rejected (401/403) -> `ServiceUnavailable` 503 and an operator log line naming
  the provider and the setting to check (never the key);
- 429 still after the retries (or quota exhausted) -> 503 `provider_busy` + Retry-After;
- any other 4xx -> `ProviderRejected` (a 502): the request we built was refused.

The provider's body is never copied into a response or a log line: it can echo parts of
our key or of the user's content. Only a short machine code from it may be logged.
"""
from __future__ import annotations

import email.utils
import logging
import math
import random
import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping
from urllib.parse import urlsplit

from chalicelib.core.errors import ConfigurationError, ServiceUnavailable, UpstreamError
from chalicelib.core.logs import log_event, register_secret
from chalicelib.core.settings import get_settings

if TYPE_CHECKING:  # requests is imported lazily: cold starts that never call a provider skip it
    import requests

logger = logging.getLogger(__name__)

# Seconds. A retry is only attempted if at least this much budget would remain for it.
MIN_ATTEMPT_SECONDS = 1.0
# Bounds for a Retry-After we pass on to our own client.
MIN_CLIENT_RETRY_AFTER, MAX_CLIENT_RETRY_AFTER = 1, 300
_SAFE_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")

sleep: Callable[[float], None] = time.sleep  # tests may replace it to observe the waits


class ProviderRejected(UpstreamError):
    """The provider refused a request we built (a 4xx other than auth or rate limiting).

    Rendered as a 502 with a generic message; callers that expect a specific refusal
    (a transcript id that does not exist) read `provider_status`.
    """

    def __init__(self, display_name: str, provider_status: int, provider_code: str | None) -> None:
        super().__init__(f"{display_name} refused the request", code="upstream_rejected")
        self.provider_status = provider_status
        self.provider_code = provider_code


class OutcomeUnknown(UpstreamError):
    """A POST that failed after it may have reached the provider (connection dropped, read
    timed out): it may have been processed and billed, so it is never sent again."""


class StaleCredentials(ServiceUnavailable):
    """A 401 that the caller asked to handle itself (an expiring app token it can renew)."""


@dataclass(frozen=True)
class Policy:
    """Timeouts and retry limits for one request, read from settings at call time."""

    connect_timeout: float
    read_timeout: float
    max_attempts: int
    budget_seconds: float
    backoff_seconds: float

    @classmethod
    def from_settings(cls, read_timeout: float | None = None) -> "Policy":
        settings = get_settings()
        return cls(
            connect_timeout=settings.provider_connect_timeout_seconds,
            read_timeout=read_timeout or settings.provider_read_timeout_seconds,
            max_attempts=settings.provider_max_attempts,
            budget_seconds=settings.provider_budget_seconds,
            backoff_seconds=settings.provider_backoff_seconds,
        )


def retry_after_header(response: "requests.Response") -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or an HTTP date), if any."""
    raw = (response.headers.get("Retry-After") or "").strip()
    if not raw:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(moment.timestamp() - time.time(), 0.0)


def never_sent(error: "requests.ConnectionError") -> bool:
    """True only when the connection itself could not be made (refused, unresolvable, connect
    timeout), so not a byte of the request left us and sending it again cannot repeat it.

    requests raises the same ConnectionError when the provider drops the connection after
    reading the request; that one wraps a urllib3 ProtocolError, not a connect failure.
    """
    import requests
    from urllib3.exceptions import ConnectTimeoutError, MaxRetryError

    if isinstance(error, requests.ConnectTimeout):
        return True
    cause = error.args[0] if error.args else None
    # NewConnectionError and NameResolutionError are ConnectTimeoutError subclasses.
    return isinstance(cause, MaxRetryError) and isinstance(cause.reason, ConnectTimeoutError)


def require(value: str, setting: str) -> str:
    """A provider secret from settings, or a configuration error naming the setting."""
    if not value:
        raise ConfigurationError(f"{setting} is not set")
    register_secret(value)
    return value


def _provider_code(response: "requests.Response") -> str | None:
    """A short machine code from the provider's error body (for logs), never its message."""
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) and _SAFE_CODE.fullmatch(code) else None


class ProviderClient:
    """Calls one provider: pooled session, timeouts, retries and error mapping."""

    def __init__(
        self,
        name: str,
        display_name: str,
        key_setting: str,
        *,
        retry_after: Callable[["requests.Response"], float | None] = retry_after_header,
        quota_exhausted: Callable[["requests.Response"], bool] | None = None,
    ) -> None:
        self.name = name
        self.display_name = display_name
        self.key_setting = key_setting
        self._retry_after = retry_after
        self._quota_exhausted = quota_exhausted
        self._session: "requests.Session | None" = None
        self._lock = threading.Lock()

    @property
    def session(self) -> "requests.Session":
        if self._session is None:
            with self._lock:
                if self._session is None:
                    import requests
                    from requests.adapters import HTTPAdapter

                    session = requests.Session()
                    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=16, max_retries=0)
                    session.mount("https://", adapter)
                    session.mount("http://", adapter)
                    self._session = session
        return self._session

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        read_timeout: float | None = None,
        renewable_auth: bool = False,
    ) -> Any:
        """Send the request and return its decoded JSON body, or raise a mapped error.

        429 and 5xx are retried within the policy's attempt and time budget, and so are
        connection failures and timeouts of a GET. A POST is retried after a connection
        failure only if it provably never left us (`never_sent`): a connection dropped or
        a read timed out after the body went out may still have been processed (and billed)
        by the provider, so that POST raises `OutcomeUnknown` instead of being sent again.
        With `renewable_auth`, a 401 raises `StaleCredentials` instead of the operator
        alarm, so the caller can renew a token.
        """
        import requests

        idempotent = method.upper() == "GET"

        policy = Policy.from_settings(read_timeout)
        started = time.monotonic()
        deadline = started + policy.budget_seconds
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            timeout = (policy.connect_timeout, max(min(policy.read_timeout, remaining), MIN_ATTEMPT_SECONDS))
            wait: float | None = None
            response = None
            try:
                response = self.session.request(
                    method, url, headers=dict(headers or {}), params=params, json=json,
                    data=data, timeout=timeout, allow_redirects=False,
                )
            except requests.ConnectionError as error:  # includes ConnectTimeout
                failure, retryable = "unreachable", idempotent or never_sent(error)
            except requests.Timeout:
                failure, retryable = "timeout", idempotent
            except requests.RequestException:
                failure, retryable = "unreachable", False
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return self._decode(response, method, url)
                failure = str(status)
                if status in (401, 403):
                    raise self._auth_rejected(response, renewable_auth)
                if status == 429 and self._quota_exhausted and self._quota_exhausted(response):
                    raise self._busy(response, quota=True)
                retryable = status == 429 or status >= 500
                if not retryable:
                    code = _provider_code(response)
                    log_event(logger, "provider.rejected", logging.WARNING, provider=self.name,
                              status=status, provider_code=code, path=_path(url))
                    raise ProviderRejected(self.display_name, status, code)
                wait = self._retry_after(response)
            if wait is None:
                wait = policy.backoff_seconds * (2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
            give_up = (
                not retryable
                or attempt >= policy.max_attempts
                or time.monotonic() + wait + MIN_ATTEMPT_SECONDS > deadline
            )
            log_event(
                logger, "provider.attempt_failed", logging.WARNING, provider=self.name,
                failure=failure, attempt=attempt, path=_path(url), will_retry=not give_up,
                wait_seconds=round(wait, 2),
            )
            if give_up:
                raise self._final_error(failure, response, wait, sent=not retryable)
            sleep(wait)

    # ----- outcomes ---------------------------------------------------------------------

    def _decode(self, response: "requests.Response", method: str, url: str) -> Any:
        try:
            return response.json()
        except ValueError:
            log_event(logger, "provider.bad_response", logging.WARNING, provider=self.name,
                      status=response.status_code, path=_path(url), method=method)
            raise UpstreamError(
                f"{self.display_name} sent an unreadable response", code="upstream_bad_response"
            ) from None

    def bad_response(self, what: str) -> UpstreamError:
        """The error for a 2xx body that lacks what the provider's contract promises."""
        log_event(logger, "provider.bad_response", logging.WARNING, provider=self.name, missing=what)
        return UpstreamError(
            f"{self.display_name} sent an unexpected response", code="upstream_bad_response"
        )

    def _auth_rejected(self, response: "requests.Response", renewable: bool) -> ServiceUnavailable:
        if renewable and response.status_code == 401:
            return StaleCredentials(f"{self.display_name} credentials expired", code="provider_unavailable")
        return self.credentials_rejected(response.status_code)

    def credentials_rejected(self, status: int) -> ServiceUnavailable:
        """The operator alarm (naming the setting, never its value) and the client's 503."""
        log_event(
            logger,
            "provider.credentials_rejected",
            logging.ERROR,
            provider=self.name,
            status=status,
            operator_action=f"{self.display_name} rejected our credentials: check {self.key_setting}",
        )
        return ServiceUnavailable(
            f"{self.display_name} is temporarily unavailable", code="provider_unavailable"
        )

    def _busy(
        self, response: "requests.Response | None", *, quota: bool = False, wait: float | None = None
    ) -> ServiceUnavailable:
        if quota:
            log_event(
                logger, "provider.quota_exhausted", logging.ERROR, provider=self.name,
                operator_action=f"{self.display_name} reports our account's quota is exhausted",
            )
        seconds = wait
        if seconds is None and response is not None:
            seconds = self._retry_after(response)
        retry_after = _client_retry_after(30 if seconds is None else seconds)
        return ServiceUnavailable(
            f"{self.display_name} is busy; please try again shortly",
            code="provider_busy",
            retry_after=retry_after,
        )

    def _final_error(self, failure: str, response: "requests.Response | None", wait: float,
                     *, sent: bool = False) -> Exception:
        if failure == "429":
            return self._busy(response, wait=wait)
        if failure == "503" and response is not None and self._retry_after(response) is not None:
            seconds = _client_retry_after(wait)
            return ServiceUnavailable(
                f"{self.display_name} is temporarily unavailable",
                code="upstream_unavailable",
                retry_after=seconds,
            )
        # A request that may have been sent and failed without an answer: its outcome is unknown.
        error_class = OutcomeUnknown if sent else UpstreamError
        if failure == "timeout":
            return error_class(f"{self.display_name} did not answer in time", code="upstream_timeout")
        if failure == "unreachable":
            return error_class(f"{self.display_name} could not be reached", code="upstream_unreachable")
        return UpstreamError(f"{self.display_name} failed", code="upstream_error")


def _client_retry_after(seconds: float) -> int:
    """The Retry-After we give our client: whole seconds, never "now", never absurdly long."""
    return min(max(math.ceil(seconds), MIN_CLIENT_RETRY_AFTER), MAX_CLIENT_RETRY_AFTER)


def _path(url: str) -> str:
    """The URL's path only: query strings can carry tokens or user input."""
    return urlsplit(url).path[:200]
