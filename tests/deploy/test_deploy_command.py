"""`python -m infra deploy`: its preconditions, and the whole sequence against moto.

`chalice deploy` itself needs real Lambda and IAM, so the runner stands in for it the
way chalice leaves its result (a REST API and .chalice/deployed/<stage>.json); everything
before and after it (SSM check, infrastructure stack, gateway responses, URLs) is the
command's real code against the embedded AWS.
"""
from __future__ import annotations

import json
import os
from dataclasses import replace

import boto3
import pytest

from infra import deploy, policy
from tests.conftest import ORIGIN

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Tried to parse AWS")]

STAGE = "dev"


def _cfg(**environment: str) -> deploy.StageConfig:
    cfg = deploy.stage_config(STAGE)
    return replace(cfg, environment={**cfg.environment, "ALLOWED_ORIGINS": ORIGIN, **environment})


def test_committed_placeholder_origins_are_refused():
    with pytest.raises(deploy.DeployError, match="ALLOWED_ORIGINS"):
        deploy.check_config(deploy.stage_config("prod"))


def test_a_wildcard_or_web_origin_is_refused():
    for origins in ("*", "https://example.com", f"{ORIGIN},chrome-extension://short"):
        with pytest.raises(deploy.DeployError, match="ALLOWED_ORIGINS"):
            deploy.check_config(_cfg(ALLOWED_ORIGINS=origins))


def test_a_policy_out_of_step_with_the_code_is_refused(tmp_path, monkeypatch):
    stale = policy.render_policy(STAGE, ["logs:PutLogEvents"])
    (tmp_path / "policy.json").write_text(json.dumps(stale))
    monkeypatch.setattr(policy, "policy_path", lambda stage, root=None: str(tmp_path / "policy.json"))
    with pytest.raises(deploy.DeployError, match="missing \\(the code calls these\\): .*dynamodb:GetItem"):
        deploy.check_config(_cfg())


def test_a_prefix_the_policy_does_not_grant_is_refused():
    with pytest.raises(deploy.DeployError, match="SECRETS_SSM_PREFIX"):
        deploy.check_config(_cfg(SECRETS_SSM_PREFIX="/elsewhere/"))


def test_local_and_unknown_stages_are_not_deployable():
    for stage in ("local", "staging"):
        with pytest.raises(deploy.DeployError, match="deployable stages are dev, prod"):
            deploy.stage_config(stage)


@pytest.fixture
def session(aws_endpoint, tmp_path, monkeypatch):
    """boto3 against the embedded AWS; the policy check sees a policy in step with the code.

    Whether the committed policy files are in step is test_policy's question; here a stale
    file would only hide what the sequence itself does.
    """
    in_step = tmp_path / "policy.json"
    in_step.write_text(json.dumps(policy.expected_policy(STAGE)))
    monkeypatch.setattr(policy, "policy_path", lambda stage, root=None: str(in_step))
    return boto3.session.Session(region_name="us-east-1")


def test_deploy_stops_before_touching_anything_without_the_jwt_secret(session, tmp_path):
    ran = []
    with pytest.raises(deploy.DeployError, match="/transcription-backend/dev/JWT_SECRET"):
        deploy.deploy(STAGE, session=session, runner=ran.append, cfg=_cfg(), root=str(tmp_path))
    assert ran == []


@pytest.fixture
def jwt_parameter(session):
    """The stage's JWT secret in the shared embedded SSM, for this test only."""
    ssm, name = session.client("ssm"), f"{policy.ssm_prefix(STAGE)}JWT_SECRET"
    ssm.put_parameter(Name=name, Value="x" * 48, Type="SecureString", Overwrite=True)
    yield name
    ssm.delete_parameter(Name=name)


def test_deploy_runs_the_whole_sequence(session, jwt_parameter, tmp_path, capsys):
    apigateway = session.client("apigateway")
    commands = []

    def chalice_deploy(command):
        commands.append(list(command))
        api_id = apigateway.create_rest_api(name="transcription-backend")["id"]
        root_id = apigateway.get_resources(restApiId=api_id)["items"][0]["id"]
        apigateway.put_method(restApiId=api_id, resourceId=root_id, httpMethod="GET", authorizationType="NONE")
        apigateway.put_integration(restApiId=api_id, resourceId=root_id, httpMethod="GET", type="MOCK")
        apigateway.create_deployment(restApiId=api_id, stageName="api")
        url = f"https://{api_id}.execute-api.us-east-1.amazonaws.com/api/"
        deployed = {"schema_version": "2.0", "resources": [
            {"name": "rest_api", "resource_type": "rest_api", "rest_api_id": api_id, "rest_api_url": url},
        ]}
        os.makedirs(tmp_path / ".chalice" / "deployed")
        (tmp_path / ".chalice" / "deployed" / f"{STAGE}.json").write_text(json.dumps(deployed))

    result = deploy.deploy(STAGE, session=session, runner=chalice_deploy, cfg=_cfg(), root=str(tmp_path))

    assert [c[1:] for c in commands] == [["deploy", "--stage", STAGE]]
    (group,) = session.client("logs").describe_log_groups(logGroupNamePrefix="/aws/lambda/transcription-backend-dev")[
        "logGroups"
    ]
    assert group["logGroupName"] == "/aws/lambda/transcription-backend-dev"  # the API handler's real group
    assert group["retentionInDays"] == 14
    assert result["UsersTableName"] == "transcription-backend-dev-users"
    api_id = result["api_url"].split("//")[1].split(".")[0]
    assert result["stripe_webhook_url"] == result["api_url"] + "/webhooks/stripe"
    out = capsys.readouterr().out
    assert f"Stripe webhook URL: {result['stripe_webhook_url']}" in out
    assert "SSM parameter /transcription-backend/dev/OPENAI_API_KEY does not exist" in out

    responses = {r["responseType"]: r for r in apigateway.get_gateway_responses(restApiId=api_id)["items"]}
    unauthorized = responses["UNAUTHORIZED"]
    assert unauthorized["statusCode"] == "401"
    assert unauthorized["responseParameters"]["gatewayresponse.header.Access-Control-Allow-Origin"] == f"'{ORIGIN}'"
    assert json.loads(unauthorized["responseTemplates"]["application/json"])["code"] == "unauthorized"
    assert {"ACCESS_DENIED", "MISSING_AUTHENTICATION_TOKEN", "DEFAULT_4XX", "DEFAULT_5XX"} <= set(responses)
    deployments = apigateway.get_deployments(restApiId=api_id)["items"]
    assert len(deployments) == 2  # chalice's, then ours: the responses take effect on the stage
