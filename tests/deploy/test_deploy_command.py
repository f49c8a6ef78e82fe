"""`python -m infra deploy`: its preconditions, and the whole sequence against moto.

`chalice deploy` itself needs real Lambda and IAM, so the runner stands in for it the
way chalice leaves its result (a REST API and .chalice/deployed/<stage>.json); everything
before and after it (SSM check, infrastructure stack, gateway responses, URLs) is the
command's real code against the embedded AWS.
"""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace

import boto3
import pytest

from infra import deploy, policy, slim
from tests.conftest import ORIGIN
from tests.deploy.recording import ROOT

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
    stale = policy.render_policy(STAGE, ["logs:PutLogEvents"], "api_handler")
    (tmp_path / "policy.json").write_text(json.dumps(stale))
    monkeypatch.setattr(policy, "policy_path", lambda stage, function, root=None: str(tmp_path / "policy.json"))
    with pytest.raises(deploy.DeployError, match="missing \\(the code calls these\\): .*dynamodb:GetItem"):
        deploy.check_config(_cfg())


def test_a_setting_out_of_its_bounds_is_refused_before_anything_is_deployed():
    with pytest.raises(deploy.DeployError, match="LIVE_MAX_MINUTES='500' is refused: it must be an integer from 1 to 180"):
        deploy.check_config(_cfg(LIVE_MAX_MINUTES="500"))
    with pytest.raises(deploy.DeployError, match="RATE_LIMIT_FAIL_CLOSED='spends'"):
        deploy.check_config(_cfg(RATE_LIMIT_FAIL_CLOSED="spends"))
    deploy.check_config(_cfg(LIVE_MAX_MINUTES="120"))


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
    for function in policy.FUNCTIONS:
        (tmp_path / f"policy-{function}.json").write_text(json.dumps(policy.expected_policy(STAGE, function)))
    monkeypatch.setattr(policy, "policy_path",
                        lambda stage, function, root=None: str(tmp_path / f"policy-{function}.json"))
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


def _what_chalice_packages(project):
    """What the zip `chalice deploy` builds from `project` would hold of the slimming."""
    vendor = os.path.join(project, "vendor")
    with open(os.path.join(project, "requirements.txt"), encoding="utf-8") as handle:
        requirements = [line for line in handle if line.strip() and not line.startswith("#")]
    data = os.path.join(vendor, "botocore", "data")
    return {
        "requirements": requirements,  # what chalice would pip-install itself (as source, uncompiled)
        "botocore_models": sorted(n for n in os.listdir(data) if os.path.isdir(os.path.join(data, n))),
        "compiled": sorted(os.path.relpath(path, project) for path in (
            os.path.join(vendor, "__pycache__", slim.pyc_name("app")),
            os.path.join(project, "chalicelib", "__pycache__", slim.pyc_name("__init__")),
            os.path.join(vendor, "boto3", "__pycache__", slim.pyc_name("__init__")),
        ) if os.path.exists(path)),
    }


def fake_chalice_deploy(apigateway, commands, projects=None):
    """Stands in for `chalice deploy`: what it leaves behind (a REST API, deployed/<stage>.json).

    Like chalice, it reuses the API recorded in the state it finds in the project, and
    otherwise creates a new one. What the project holds goes to `projects`.
    """
    projects = [] if projects is None else projects

    def chalice_deploy(command):
        commands.append(list(command))
        project = command[command.index("--project-dir") + 1]
        projects.append(_what_chalice_packages(project))
        state = os.path.join(project, ".chalice", "deployed", f"{STAGE}.json")
        if os.path.exists(state):
            with open(state, encoding="utf-8") as handle:
                api_id = json.load(handle)["resources"][0]["rest_api_id"]
        else:
            api_id = apigateway.create_rest_api(name="transcription-backend")["id"]
            root_id = apigateway.get_resources(restApiId=api_id)["items"][0]["id"]
            apigateway.put_method(restApiId=api_id, resourceId=root_id, httpMethod="GET", authorizationType="NONE")
            apigateway.put_integration(restApiId=api_id, resourceId=root_id, httpMethod="GET", type="MOCK")
        apigateway.create_deployment(restApiId=api_id, stageName="api")
        url = f"https://{api_id}.execute-api.us-east-1.amazonaws.com/api/"
        with open(os.path.join(project, "app.py"), encoding="utf-8") as handle:
            app_source = handle.read()
        deployed = {"schema_version": "2.0", "resources": [
            {"name": "rest_api", "resource_type": "rest_api", "rest_api_id": api_id, "rest_api_url": url},
        ], "app_py_bytes": len(app_source)}
        os.makedirs(os.path.dirname(state), exist_ok=True)
        with open(state, "w", encoding="utf-8") as handle:
            json.dump(deployed, handle)

    return chalice_deploy


@pytest.fixture
def log_groups(session):
    """The functions' log groups, as `chalice deploy` creates them (the metric filters read them)."""
    from infra import monitoring

    logs = session.client("logs")
    for function in monitoring.FUNCTIONS:
        try:
            logs.create_log_group(logGroupName=monitoring.log_group(STAGE, function))
        except logs.exceptions.ResourceAlreadyExistsException:
            pass


def test_deploy_runs_the_whole_sequence(session, jwt_parameter, log_groups, tmp_path, capsys):
    apigateway = session.client("apigateway")
    commands, projects = [], []

    result = deploy.deploy(STAGE, session=session, runner=fake_chalice_deploy(apigateway, commands, projects),
                           cfg=_cfg(), root=str(tmp_path))

    (command,) = commands
    assert command[1] == "--project-dir" and command[3:] == ["deploy", "--stage", STAGE]
    # the package `make package` builds and the benchmarks measure: dependencies vendored for
    # the runtime (chalice installs nothing itself), four botocore models, compiled modules
    (project,) = projects
    assert project == {
        "requirements": [],
        "botocore_models": sorted(slim.used_services()),
        "compiled": ["chalicelib/__pycache__/" + slim.pyc_name("__init__"),
                     "vendor/__pycache__/" + slim.pyc_name("app"),
                     "vendor/boto3/__pycache__/" + slim.pyc_name("__init__")],
    }
    (group,) = [g for g in session.client("logs").describe_log_groups(
        logGroupNamePrefix="/aws/lambda/transcription-backend-dev")["logGroups"]
        if g["logGroupName"] == "/aws/lambda/transcription-backend-dev"]
    assert group["retentionInDays"] == 14  # the API handler's real group
    assert result["UsersTableName"] == "transcription-backend-dev-users"
    api_id = result["rest_api_id"]
    assert result["stripe_webhook_url"] == result["api_url"] + "/webhooks/stripe"
    out = capsys.readouterr().out
    assert f"Stripe webhook URL: {result['stripe_webhook_url']}" in out
    assert "SSM parameter /transcription-backend/dev/OPENAI_API_KEY does not exist" in out
    assert "JWT_SECRET_PREVIOUS" not in out  # only set during a rotation

    responses = {r["responseType"]: r for r in apigateway.get_gateway_responses(restApiId=api_id)["items"]}
    unauthorized = responses["UNAUTHORIZED"]
    assert unauthorized["statusCode"] == "401"
    assert unauthorized["responseParameters"]["gatewayresponse.header.Access-Control-Allow-Origin"] == f"'{ORIGIN}'"
    assert json.loads(unauthorized["responseTemplates"]["application/json"])["code"] == "unauthorized"
    assert {"ACCESS_DENIED", "MISSING_AUTHENTICATION_TOKEN", "DEFAULT_4XX", "DEFAULT_5XX"} <= set(responses)
    deployments = apigateway.get_deployments(restApiId=api_id)["items"]
    assert len(deployments) == 2  # chalice's, then ours: the responses take effect on the stage

    ops = deploy.ops_config(STAGE)
    throttling = apigateway.get_stage(restApiId=api_id, stageName="api")["methodSettings"]["*/*"]
    assert (throttling["throttlingRateLimit"], throttling["throttlingBurstLimit"]) == (ops.rate_limit,
                                                                                      ops.burst_limit)

    # the deploy state is kept with the stage, and locally
    s3 = session.client("s3")
    bucket = result["DeployStateBucketName"]
    saved = json.loads(s3.get_object(Bucket=bucket, Key=f"chalice/deployed/{STAGE}.json")["Body"].read())
    assert saved["resources"][0]["rest_api_id"] == api_id
    assert json.loads((tmp_path / ".chalice" / "deployed" / f"{STAGE}.json").read_text()) == saved

    # the monitoring stack exists and notifies the topic
    cloudformation = session.client("cloudformation")
    stack = cloudformation.describe_stacks(StackName=result["monitoring_stack"])["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    assert {o["OutputKey"] for o in stack["Outputs"]} == {"AlarmTopicArn"}
    deployed = cloudformation.get_template(StackName=result["monitoring_stack"])["TemplateBody"]
    from infra import monitoring

    assert deployed == monitoring.render(STAGE)  # moto creates the topic; the alarms: see test_monitoring


def test_a_lost_machine_redeploys_the_same_api_and_rollback_deploys_an_older_ref(
        session, jwt_parameter, log_groups, tmp_path, capsys):
    """The state lives with the stage: a fresh checkout (no local state) keeps the API id."""
    apigateway = session.client("apigateway")
    commands = []
    first = deploy.deploy(STAGE, session=session, runner=fake_chalice_deploy(apigateway, commands), cfg=_cfg(),
                          root=str(tmp_path / "laptop"))
    again = deploy.deploy(STAGE, session=session, runner=fake_chalice_deploy(apigateway, commands), cfg=_cfg(),
                          root=str(tmp_path / "another-machine"))
    assert again["rest_api_id"] == first["rest_api_id"] and again["api_url"] == first["api_url"]

    # `make rollback STAGE=dev REF=<first commit>`: that ref's app.py, the same API
    last_change = subprocess.run(["git", "log", "-n", "1", "--format=%H", "--", "app.py"], cwd=ROOT,
                                 capture_output=True, text=True, check=True).stdout.strip()
    root_commit = last_change + "~1"  # app.py as it was before its latest change
    old_app = subprocess.run(["git", "show", f"{root_commit}:app.py"], cwd=ROOT, capture_output=True,
                             check=True).stdout
    back = deploy.rollback(STAGE, root_commit, session=session, runner=fake_chalice_deploy(apigateway, commands),
                           cfg=_cfg(), root=str(tmp_path / "laptop"))
    assert back["rest_api_id"] == first["rest_api_id"]
    saved = json.loads(session.client("s3").get_object(
        Bucket=first["DeployStateBucketName"], Key=f"chalice/deployed/{STAGE}.json")["Body"].read())
    assert saved["app_py_bytes"] == len(old_app.decode()) != len(open(os.path.join(ROOT, "app.py")).read())
    head = session.client("s3").head_object(Bucket=first["DeployStateBucketName"], Key=f"chalice/deployed/{STAGE}.json")
    commit = subprocess.run(["git", "rev-parse", root_commit], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.strip()
    assert head["Metadata"]["source-ref"] == commit
    assert f"Rolling stage {STAGE} back to {root_commit}" in capsys.readouterr().out


def test_rollback_to_an_unknown_ref_changes_nothing(session, tmp_path):
    ran = []
    with pytest.raises(deploy.DeployError, match="git archive"):
        deploy.rollback(STAGE, "no-such-ref-" + "0" * 8, session=session, runner=ran.append, cfg=_cfg(),
                        root=str(tmp_path))
    assert ran == []


def test_prod_refuses_placeholder_return_urls_and_dev_warns(capsys):
    good = {"CHECKOUT_SUCCESS_URL": "https://shop.example.com/ok", "CHECKOUT_CANCEL_URL": "https://shop.example.com/no",
            "BILLING_PORTAL_RETURN_URL": "https://shop.example.com/account"}
    prod = deploy.stage_config("prod")
    for name in good:
        for bad in ("https://example.invalid/checkout/success", "", "http://shop.example.com/ok",
                    "https://sub.example.invalid/x"):
            cfg = replace(prod, environment={**prod.environment, **good, name: bad})
            with pytest.raises(deploy.DeployError, match=name):
                deploy.check_return_urls(cfg)
    deploy.check_return_urls(replace(prod, environment={**prod.environment, **good}))
    deploy.check_return_urls(deploy.stage_config("dev"))  # the committed placeholders: only a warning
    assert "placeholder URLs" in capsys.readouterr().out


def test_the_runtime_is_the_configured_one_and_prod_alarms_reach_someone(monkeypatch):
    ops = deploy.ops_config("dev")
    deploy.check_ops(ops)
    assert ops.lambda_runtime == deploy.deployer_runtime()
    with pytest.raises(deploy.DeployError, match="python3.12"):
        deploy.check_ops(replace(ops, lambda_runtime="python3.12"))
    with pytest.raises(deploy.DeployError, match="alarm_email"):
        deploy.check_ops(replace(deploy.ops_config("prod", env={}), alarm_email=""))
    assert deploy.ops_config("prod", env={"ALARM_EMAIL": "ops@example.com"}).alarm_email == "ops@example.com"


def test_a_custom_domain_needs_a_certificate():
    with pytest.raises(deploy.DeployError, match="certificate_arn"):
        deploy.check_config(replace(_cfg(), custom_domain={"domain_name": "api.example.com"}))


def test_a_template_over_the_inline_limit_goes_through_the_state_bucket(session, monkeypatch):
    """CloudFormation takes 51,200 bytes inline; past that, the template is uploaded first."""
    from infra import monitoring

    s3 = session.client("s3")
    bucket = "transcription-backend-bigtemplate-state"
    s3.create_bucket(Bucket=bucket)
    monkeypatch.setattr(deploy, "TEMPLATE_BODY_LIMIT", 1000)
    body = monitoring.render("bigtemplate")
    deploy.deploy_stack(session.client("cloudformation"), s3, bucket, monitoring.stack_name("bigtemplate"), body,
                        monitoring.parameters("", 10), "bigtemplate")
    uploaded = json.loads(s3.get_object(Bucket=bucket, Key="templates/transcription-backend-bigtemplate-monitoring.json")
                          ["Body"].read())
    assert uploaded == body
    stack = session.client("cloudformation").describe_stacks(StackName=monitoring.stack_name("bigtemplate"))["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
