"""Provider clients against the fake providers on loopback (real HTTP, real wire formats).

`providers` points settings at the session's fakes (tests/conftest.py `provider_env`), makes
retry backoff tiny so failure paths stay fast, and records every wait the clients make.
"""
from __future__ import annotations

import pytest


@pytest.fixture
def providers(provider_env, fake_assemblyai, fake_openai, fake_twitch, monkeypatch):
    from chalicelib.providers import http, twitch
    from chalicelib.core.settings import reset_settings

    monkeypatch.setenv("PROVIDER_BACKOFF_SECONDS", "0.01")
    reset_settings()
    waits: list[float] = []
    monkeypatch.setattr(http, "sleep", waits.append)
    twitch.forget_token()
    yield waits
    for fake in (fake_assemblyai, fake_openai, fake_twitch):
        fake.clear_faults()
    twitch.forget_token()
    monkeypatch.undo()
    reset_settings()
