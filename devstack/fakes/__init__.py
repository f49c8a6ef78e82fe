"""Faithful fakes of the paid providers (AssemblyAI, OpenAI, Twitch, Stripe).

Each fake is a real HTTP server on 127.0.0.1 speaking the provider's wire
format (see shared/contracts/PROVIDERS.md), so production clients run against
it unchanged: in tests, and under `make run` for any provider without a key.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from .assemblyai import AssemblyAIFake, MintedToken
from .assemblyai_streaming import StreamingSession
from .base import FakeError, FakeServer, RecordedRequest
from .openai import OpenAIFake
from .stripe_fake import StripeFake
from .stripe_signing import build_event, deliver, sign
from .twitch import TwitchFake

log = logging.getLogger(__name__)

FAKES: dict[str, type[FakeServer]] = {
    "assemblyai": AssemblyAIFake,
    "openai": OpenAIFake,
    "twitch": TwitchFake,
    "stripe": StripeFake,
}

__all__ = [
    "FAKES",
    "AssemblyAIFake",
    "FakeError",
    "FakeServer",
    "MintedToken",
    "OpenAIFake",
    "RecordedRequest",
    "StreamingSession",
    "StripeFake",
    "TwitchFake",
    "build_event",
    "deliver",
    "sign",
    "start_all",
    "stop_all",
]


def start_all(config: Mapping[str, Mapping[str, Any] | bool | None] | None = None) -> dict[str, FakeServer]:
    """Start the fakes named in `config` and return them by name.

    `config` maps a provider name ("assemblyai", "openai", "twitch", "stripe")
    to the fake's constructor kwargs (e.g. `{"port": 12111, "webhook_url": ...}`),
    or True/None for defaults, or False to skip it. None starts all four with
    defaults. If one fails to start, the ones already started are stopped.
    """
    wanted = {name: {} for name in FAKES} if config is None else dict(config)
    unknown = set(wanted) - set(FAKES)
    if unknown:
        raise ValueError(f"unknown fake(s): {', '.join(sorted(unknown))}")
    started: dict[str, FakeServer] = {}
    try:
        for name, options in wanted.items():
            if options is False:
                continue
            kwargs = dict(options) if isinstance(options, Mapping) else {}
            started[name] = FAKES[name](**kwargs).start()
            log.info("sandbox %s provider: fake at %s", name, started[name].url)
    except Exception:
        stop_all(started)
        raise
    return started


def stop_all(fakes: Mapping[str, FakeServer]) -> None:
    """Stop every fake returned by start_all."""
    for fake in fakes.values():
        fake.stop()
