"""Built-in sandboxes for `make run`: a fake server for every provider that has no key.

A provider whose key is set in the environment runs for real (its base URL is whatever
the environment says, the real one by default). A provider without a key gets its fake,
started on loopback, and the app is pointed at it with a sandbox key.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

log = logging.getLogger(__name__)

Starter = Callable[[dict[str, str]], tuple[Any, dict[str, str]]]


def _assemblyai(env: dict[str, str]) -> tuple[Any, dict[str, str]]:
    from devstack.fakes import AssemblyAIFake

    fake = AssemblyAIFake(api_key="sandbox-assemblyai-key", label_canned=True).start()
    serve_streaming_tls(fake, env)
    return fake, {
        "ASSEMBLYAI_API_KEY": fake.api_key,
        "ASSEMBLYAI_API_BASE": fake.url,
        "ASSEMBLYAI_STREAMING_API_BASE": fake.streaming_url,
    }


def serve_streaming_tls(fake: Any, env: dict[str, str]) -> str | None:
    """With SANDBOX_STREAMING_TLS_CERT and _KEY (PEM files), also serve the streaming host
    over TLS on SANDBOX_STREAMING_TLS_PORT (default 8443) of SANDBOX_STREAMING_TLS_HOST
    (default 127.0.0.1): a browser whose `streaming.assemblyai.com` resolves there (e.g.
    Chromium's --host-resolver-rules with --ignore-certificate-errors) then streams to the
    sandbox with the tokens `make run` mints. Returns the TLS base URL, or None."""
    cert, key = env.get("SANDBOX_STREAMING_TLS_CERT"), env.get("SANDBOX_STREAMING_TLS_KEY")
    if not cert:
        return None
    url = fake.serve_streaming(
        int(env.get("SANDBOX_STREAMING_TLS_PORT") or 8443),
        host=env.get("SANDBOX_STREAMING_TLS_HOST") or "127.0.0.1",
        certfile=cert, keyfile=key or None,
    )
    log.info("sandbox assemblyai streaming over TLS at %s", url.replace("https://", "wss://"))
    return url


def _openai(env: dict[str, str]) -> tuple[Any, dict[str, str]]:
    from devstack.fakes import OpenAIFake

    fake = OpenAIFake(api_key="sandbox-openai-key", label_canned=True).start()
    return fake, {"OPENAI_API_KEY": fake.api_key, "OPENAI_API_BASE": fake.url + "/v1"}


def _twitch(env: dict[str, str]) -> tuple[Any, dict[str, str]]:
    from devstack.fakes import TwitchFake

    fake = TwitchFake(client_id="sandbox-client-id", client_secret="sandbox-client-secret",
                      invent_channels=True).start()
    fake.add_channel("sandbox", live=True, title="Sandbox stream", game_name="Just Chatting")
    return fake, {
        "TWITCH_CLIENT_ID": fake.client_id,
        "TWITCH_CLIENT_SECRET": fake.client_secret,
        "TWITCH_API_BASE": fake.url + "/helix",
        "TWITCH_AUTH_BASE": fake.url + "/oauth2",
    }


def _stripe(env: dict[str, str]) -> tuple[Any, dict[str, str]]:
    """Fake Stripe whose hosted checkout page pays and sends the signed webhook to this API."""
    from devstack.fakes import StripeFake

    host = env.get("HOST", "127.0.0.1")
    api_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    fake = StripeFake(
        api_key="sk_test_sandbox_key",
        webhook_url=f"http://{api_host}:{env.get('PORT', '8000')}/webhooks/stripe",
        webhook_secret="whsec_sandbox_secret",
    ).start()
    settings = {
        "STRIPE_SECRET_KEY": fake.api_key,
        "STRIPE_API_BASE": fake.url,
        "STRIPE_WEBHOOK_SECRET": fake.webhook_secret,
    }
    # After paying, land on the fake's dashboard (sessions, charges, events delivered).
    for name in ("CHECKOUT_SUCCESS_URL", "CHECKOUT_CANCEL_URL", "BILLING_PORTAL_RETURN_URL"):
        if not env.get(name):
            settings[name] = f"{fake.url}/_fake"
    return fake, settings


PROVIDERS: dict[str, tuple[str, Starter]] = {
    "assemblyai": ("ASSEMBLYAI_API_KEY", _assemblyai),
    "openai": ("OPENAI_API_KEY", _openai),
    "twitch": ("TWITCH_CLIENT_SECRET", _twitch),
    "stripe": ("STRIPE_SECRET_KEY", _stripe),
}


# What each sandbox makes up, for the banner (docs/sandbox.md has the whole list).
HINTS = {
    "assemblyai": "transcripts are made up (marked [sandbox transcript]), paced by the audio sent",
    "openai": "answers and summaries are canned (marked [sandbox answer] / [sandbox summary])",
    "twitch": "any channel is live with made-up data; offline_<name> is offline, unknown_<name> does not exist",
    "stripe": "test mode: checkout pages, webhooks to this API, a dashboard",
}


def banner_lines(status: dict[str, str], env: dict[str, str], api_url: str) -> list[str]:
    """The banner's lines about providers: real or sandboxed, what the sandbox makes up, and
    how to pay in the sandbox Stripe."""
    lines = []
    for name, state in status.items():
        sandboxed = state.startswith("sandboxed")
        lines.append(f"Provider:    {name:<10} {state}" + (f"\n{'':24}{HINTS[name]}" if sandboxed else ""))
    if status.get("stripe", "").startswith("sandboxed"):
        lines.append(f"Pay:         POST {api_url}/credits/purchase, open its checkout_url, press Pay (no card needed;"
                     " card 4000 0000 0000 0002 is declined)")
        lines.append(f"Dashboard:   {env['STRIPE_API_BASE']}/_fake  (every purchase with its user, webhook deliveries,"
                     " refund and dispute buttons)")
    lines.append("Fixtures:    docs/sandbox.md lists every channel, card, canned text, port and file")
    return lines


def start_sandboxes(env: dict[str, str]) -> tuple[list[Any], dict[str, str]]:
    """Start the fakes needed and update `env` in place; returns (servers, status by provider)."""
    servers: list[Any] = []
    status: dict[str, str] = {}
    for name, (key_var, start) in PROVIDERS.items():
        if env.get(key_var):
            status[name] = "REAL (key set)"
            continue
        server, settings = start(env)
        servers.append(server)
        env.update(settings)
        status[name] = f"sandboxed (fake at {server.url})"
    return servers, status
