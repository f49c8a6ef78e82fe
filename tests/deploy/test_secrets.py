"""Secrets from SSM Parameter Store: one GetParameters per process, plain env vars still win."""
from __future__ import annotations

import os
import socket

import pytest

from chalicelib.aws import ssm_secrets
from chalicelib.core import logs
from chalicelib.core.errors import ConfigurationError
from chalicelib.core.settings import load_settings

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STAGE = "sectest"
PREFIX = f"/transcription-backend/{STAGE}/"
VALUES = {
    "JWT_SECRET": "j" * 40 + "-from-ssm",
    "STRIPE_SECRET_KEY": "sk_test_fromssm123456",
    "STRIPE_WEBHOOK_SECRET": "whsec_old123456,whsec_new123456",
    "OPENAI_API_KEY": "openai-from-ssm-123456",
}


@pytest.fixture
def ssm(aws_endpoint):
    import boto3

    client = boto3.session.Session().client("ssm", region_name="us-east-1")
    for name, value in VALUES.items():
        client.put_parameter(Name=PREFIX + name, Value=value, Type="SecureString", Overwrite=True)
    ssm_secrets.reset_secrets()
    yield client
    ssm_secrets.reset_secrets()
    names = [PREFIX + name for name in VALUES] + [PREFIX + "OTHER_JWT"]
    client.delete_parameters(Names=names)


@pytest.fixture
def get_parameters_calls(monkeypatch):
    """Every GetParameters request the module sends, with its parameter names."""
    calls: list[list[str]] = []
    real = ssm_secrets._get_parameters

    def counting(names, region):  # type: ignore[no-untyped-def]
        calls.append(sorted(names))
        return real(names, region)

    monkeypatch.setattr(ssm_secrets, "_get_parameters", counting)
    return calls


def _env(**extra: str) -> dict[str, str]:
    return {"STAGE": STAGE, "AWS_REGION": "us-east-1", "SECRETS_SSM_PREFIX": PREFIX, **extra}


def test_parameter_names_follow_the_prefix_explicit_names_and_plain_values():
    names = ssm_secrets.parameter_names(
        {"SECRETS_SSM_PREFIX": "/app/prod", "OPENAI_API_KEY_PARAM": "/elsewhere/openai", "TWITCH_CLIENT_ID": "plain"}
    )
    assert names["JWT_SECRET"] == "/app/prod/JWT_SECRET"
    assert names["OPENAI_API_KEY"] == "/elsewhere/openai"
    assert "TWITCH_CLIENT_ID" not in names  # a plain value wins
    assert set(names) == set(ssm_secrets.SECRET_NAMES) - {"TWITCH_CLIENT_ID"}


def test_without_parameter_names_ssm_is_never_contacted(monkeypatch):
    monkeypatch.setattr(ssm_secrets, "_get_parameters", lambda names, region: pytest.fail("SSM contacted"))
    env = {"STAGE": "local", "JWT_SECRET": "x" * 40}
    assert ssm_secrets.with_secrets(env) is env


def test_all_secrets_come_in_one_call_and_are_cached_for_the_process(ssm, get_parameters_calls):
    settings = load_settings(_env())
    assert settings.jwt_secret == VALUES["JWT_SECRET"]
    assert settings.stripe_secret_key == VALUES["STRIPE_SECRET_KEY"]
    assert settings.stripe_webhook_secrets == ("whsec_old123456", "whsec_new123456")
    assert settings.openai_api_key == VALUES["OPENAI_API_KEY"]
    assert settings.twitch_client_secret == ""  # no such parameter: the feature answers 503
    assert get_parameters_calls == [sorted(PREFIX + name for name in ssm_secrets.SECRET_NAMES)]

    load_settings(_env())  # settings rebuilt (reset_settings): secrets are not fetched again
    assert len(get_parameters_calls) == 1


def test_fetched_values_are_redacted_from_logs(ssm):
    load_settings(_env())
    assert VALUES["STRIPE_SECRET_KEY"] not in logs.scrub(f"key={VALUES['STRIPE_SECRET_KEY']}")
    assert VALUES["OPENAI_API_KEY"] not in logs.scrub(f"key={VALUES['OPENAI_API_KEY']}")


def test_a_plain_environment_value_wins_over_its_parameter(ssm, get_parameters_calls):
    settings = load_settings(_env(JWT_SECRET="p" * 40))
    assert settings.jwt_secret == "p" * 40
    assert PREFIX + "JWT_SECRET" not in get_parameters_calls[0]


def test_an_explicit_parameter_name_is_used(ssm):
    ssm.put_parameter(Name=PREFIX + "OTHER_JWT", Value="o" * 40, Type="SecureString", Overwrite=True)
    assert load_settings(_env(JWT_SECRET_PARAM=PREFIX + "OTHER_JWT")).jwt_secret == "o" * 40


def test_a_missing_jwt_parameter_is_a_configuration_error_naming_it(ssm):
    with pytest.raises(ConfigurationError, match="JWT_SECRET"):
        load_settings(_env(SECRETS_SSM_PREFIX=f"/transcription-backend/{STAGE}x/"))


_COLD_START = """
import json, sys
from chalicelib.aws import json_client
from chalicelib.core.errors import ConfigurationError
from chalicelib.core.settings import load_settings
if sys.argv[1] == "boto3":  # a laptop's credential chain rather than Lambda's environment
    json_client.available = lambda env=None: False
try:
    load_settings(json.loads(sys.argv[2]))
except ConfigurationError as error:
    print("refused:", error)
else:
    print("loaded")
"""


@pytest.mark.parametrize("client", ["standard-library", "boto3"])
def test_unreachable_ssm_is_a_configuration_error_and_is_retried_later(ssm, client):
    """A cold start (a fresh interpreter: nothing cached) whose SSM cannot be reached."""
    import json
    import subprocess
    import sys

    # A port held bound but not listening: refused for sure, and no other server can take it.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
        env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{closed.getsockname()[1]}"
        run = subprocess.run([sys.executable, "-c", _COLD_START, client, json.dumps(_env())], env=env,
                             capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.stdout.startswith("refused:") and "SSM" in run.stdout, (run.stdout, run.stderr[-2000:])
    assert load_settings(_env()).jwt_secret == VALUES["JWT_SECRET"]  # reachable again: read


def test_secrets_are_read_without_the_sdk_when_credentials_are_in_the_environment(ssm, monkeypatch):
    """Lambda's case: the signed call of chalicelib.aws.json_client, boto3 never asked."""
    import boto3

    monkeypatch.setattr(boto3.session, "Session", lambda *a, **k: pytest.fail("boto3 used"))
    assert load_settings(_env()).jwt_secret == VALUES["JWT_SECRET"]


def test_without_credentials_in_the_environment_boto3_reads_them(ssm, monkeypatch):
    """A laptop with an AWS profile: the SDK's credential chain, same answer."""
    from chalicelib.aws import json_client

    monkeypatch.setattr(json_client, "available", lambda env=None: False)
    monkeypatch.setattr(json_client, "call", lambda *a, **k: pytest.fail("aws_json used"))
    assert load_settings(_env()).jwt_secret == VALUES["JWT_SECRET"]
