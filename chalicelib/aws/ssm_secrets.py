"""Secrets from SSM Parameter Store (SecureString), fetched once per cold start.

Deployed stages never carry a key in `.chalice/config.json`: they name where the secrets
live instead, either with one prefix for all of them (`SECRETS_SSM_PREFIX=/transcription-
backend/prod/` reads `/transcription-backend/prod/JWT_SECRET`, ...) or per secret
(`JWT_SECRET_PARAM=/somewhere/else`). Every named parameter is read in one
`GetParameters` call with decryption, the first time settings are built, and the values
are kept for the life of the process (a Lambda container), so a warm invocation never
pays for SSM again. A plain environment variable (`JWT_SECRET=...`) still works and
wins over its parameter, which is how `make run` and the tests configure secrets.

Called from `chalicelib.core.settings.load_settings`; it must therefore not use
`chalicelib.aws.clients.client`, which itself reads the settings for the region. On Lambda (and
wherever credentials are in the environment) the call is made with `chalicelib.aws.json_client`,
not boto3: the authorizer's cold start then never imports the SDK (docs/performance.md).
"""
from __future__ import annotations

import functools
import logging
from typing import Mapping

from chalicelib.core.errors import ConfigurationError
from chalicelib.core.logs import log_event, register_secret
from chalicelib.core.settings import SECRET_NAMES  # every setting declared secret: all may come from SSM

logger = logging.getLogger(__name__)

PREFIX_VAR = "SECRETS_SSM_PREFIX"
PARAM_SUFFIX = "_PARAM"
GET_PARAMETERS_LIMIT = 10  # names per GetParameters call (an SSM API limit)


def parameter_names(env: Mapping[str, str]) -> dict[str, str]:
    """{setting: SSM parameter name} for every secret that is not set directly."""
    prefix = env.get(PREFIX_VAR, "").strip()
    names = {}
    for setting in SECRET_NAMES:
        if env.get(setting, "").strip():
            continue  # a plain value wins: local runs and tests
        explicit = env.get(setting + PARAM_SUFFIX, "").strip()
        if explicit:
            names[setting] = explicit
        elif prefix:
            names[setting] = prefix.rstrip("/") + "/" + setting
    return names


def _get_parameters(names: list[str], region: str) -> dict:  # type: ignore[type-arg]
    """One GetParameters call with decryption: without boto3 when the environment allows."""
    from chalicelib.aws import json_client

    if json_client.available():
        return json_client.call("ssm", "GetParameters", {"Names": names, "WithDecryption": True}, region=region)
    import boto3
    from botocore.config import Config

    ssm = boto3.session.Session().client(
        "ssm",
        region_name=region,
        config=Config(connect_timeout=3, read_timeout=5, retries={"max_attempts": 3, "mode": "standard"}),
    )
    return ssm.get_parameters(Names=names, WithDecryption=True)


@functools.lru_cache(maxsize=8)
def _fetch(names: tuple[str, ...], region: str) -> tuple[tuple[str, str], ...]:
    """Decrypted values of the named parameters (missing ones are left out).

    Cached per process; an exception is not cached, so a throttled cold start retries on
    the next request instead of keeping a broken configuration.
    """
    found: dict[str, str] = {}
    missing: list[str] = []
    try:
        for start in range(0, len(names), GET_PARAMETERS_LIMIT):
            response = _get_parameters(list(names[start : start + GET_PARAMETERS_LIMIT]), region)
            for parameter in response.get("Parameters", []):
                found[parameter["Name"]] = parameter["Value"]
            missing.extend(response.get("InvalidParameters", []))
    except Exception as error:  # any failure to read secrets is a configuration problem
        raise ConfigurationError(
            f"could not read secrets from SSM Parameter Store ({type(error).__name__})"
        ) from None
    for value in found.values():
        register_secret(value)
    log_event(logger, "secrets.loaded", count=len(found), missing_parameters=sorted(missing))
    return tuple(sorted(found.items()))


def with_secrets(env: Mapping[str, str]) -> Mapping[str, str]:
    """`env` plus the values of its secrets that live in SSM (unchanged when none do)."""
    names = parameter_names(env)
    if not names:
        return env
    region = env.get("AWS_REGION", "").strip() or env.get("AWS_DEFAULT_REGION", "").strip() or "us-east-1"
    values = dict(_fetch(tuple(sorted(set(names.values()))), region))
    merged = dict(env)
    for setting, parameter in names.items():
        if parameter in values:
            merged[setting] = values[parameter]
    return merged


def reset_secrets() -> None:
    """Forget fetched values (tests that change parameters call this)."""
    _fetch.cache_clear()
