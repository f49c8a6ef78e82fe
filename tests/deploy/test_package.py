"""`chalice package --stage prod`: the template a pipeline (or `chalice deploy`) ships.

One real packaging run per session (the `chalice_package` fixture), with wheels for the
Lambda runtime fetched from PyPI exactly as a deployment fetches them.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest
from chalice.config import Config
from chalice.utils import to_cfn_resource_name

from infra import deploy, policy, template
from tests.conftest import ORIGIN
from tests.deploy.conftest import PACKAGE_STAGE
from tests.deploy.recording import ROOT

pytestmark = pytest.mark.slow

# Lambda accepts 50 MB zipped / 250 MB unzipped; we hold ourselves well below, so a new
# dependency that would slow cold starts (or approach the limit) is a deliberate decision.
ZIP_LIMIT_BYTES = 25 * 1024 * 1024
UNZIPPED_LIMIT_BYTES = 100 * 1024 * 1024
FUNCTIONS = ("api_handler", "jwt_auth", "cleanup", "catchup_worker")


def _config(function: str) -> Config:
    with open(os.path.join(ROOT, ".chalice", "config.json"), encoding="utf-8") as handle:
        disk = json.load(handle)
    return Config(chalice_stage=PACKAGE_STAGE, function_name=function, config_from_disk=disk)


def _function(package, name):
    logical = "APIHandler" if name == "api_handler" else to_cfn_resource_name(name)
    resource = package.resource(logical)
    assert resource["Type"] == "AWS::Serverless::Function"
    return resource["Properties"]


def _swagger(package):
    return package.resource("RestAPI")["Properties"]["DefinitionBody"]


def test_every_route_is_in_the_api_with_its_authorizer(chalice_package):
    import app

    paths = _swagger(chalice_package)["paths"]
    assert set(paths) == set(app.app.routes)
    for path, methods in app.app.routes.items():
        for method, entry in methods.items():
            operation = paths[path][method.lower()]
            secured = operation.get("security") == [{"jwt_auth": []}]
            assert secured == (entry.authorizer is not None), f"{method} {path}"


def test_the_authorizer_is_a_token_authorizer_on_its_own_function(chalice_package):
    authorizer = _swagger(chalice_package)["securityDefinitions"]["jwt_auth"]
    assert authorizer["x-amazon-apigateway-authtype"] == "custom"
    details = authorizer["x-amazon-apigateway-authorizer"]
    assert details["type"] == "token" and 0 < details["authorizerResultTtlInSeconds"] <= 300
    assert "${JwtAuth.Arn}" in details["authorizerUri"]["Fn::Sub"]


def test_the_cleanup_runs_on_a_schedule(chalice_package):
    events = _function(chalice_package, "cleanup")["Events"]
    (event,) = events.values()
    assert event["Type"] == "Schedule"
    assert event["Properties"]["Schedule"].startswith(("rate(", "cron("))


def test_the_worker_subscribes_to_the_stage_catchup_queue(chalice_package):
    events = _function(chalice_package, "catchup_worker")["Events"]
    (event,) = events.values()
    assert event["Type"] == "SQS"
    queue = json.dumps(event["Properties"]["Queue"])
    assert "transcription-backend-prod-catchup" in queue and "dlq" not in queue


@pytest.mark.parametrize("function", FUNCTIONS)
def test_functions_get_their_configured_limits_roles_and_environment(chalice_package, function):
    properties = _function(chalice_package, function)
    configured = _config(function)
    assert properties["Timeout"] == configured.lambda_timeout
    assert properties["MemorySize"] == configured.lambda_memory_size
    if configured.reserved_concurrency is not None:
        assert properties["ReservedConcurrentExecutions"] == configured.reserved_concurrency
    else:
        assert "ReservedConcurrentExecutions" not in properties
    assert properties["Runtime"] == "python3.11"
    environment = properties["Environment"]["Variables"]
    assert environment["STAGE"] == "prod"
    assert environment["SECRETS_SSM_PREFIX"] == policy.ssm_prefix("prod")
    role = chalice_package.resource(properties["Role"]["Fn::GetAtt"][0])
    (inline,) = role["Properties"]["Policies"]
    with open(policy.policy_path("prod", function), encoding="utf-8") as handle:
        assert inline["PolicyDocument"] == json.load(handle)
    assert properties["Runtime"] == deploy.ops_config("prod").lambda_runtime
    log_groups = [
        r for r in chalice_package.sam["Resources"].values()
        if r["Type"] == "AWS::Logs::LogGroup" and function_logical(function) in json.dumps(r)
    ]
    assert [g["Properties"]["RetentionInDays"] for g in log_groups] == [configured.log_retention_in_days]


def function_logical(function: str) -> str:
    return "${APIHandler}" if function == "api_handler" else "${%s}" % to_cfn_resource_name(function)


def test_deployment_zip_is_small_and_built_for_lambda(chalice_package):
    zipped, unzipped = chalice_package.zip_sizes()
    assert zipped < ZIP_LIMIT_BYTES, f"deployment.zip is {zipped / 2**20:.1f} MiB"
    assert unzipped < UNZIPPED_LIMIT_BYTES, f"unzipped {unzipped / 2**20:.1f} MiB"
    with zipfile.ZipFile(chalice_package.zip_path) as archive:
        names = archive.namelist()
    assert "app.py" in names and "chalicelib/aws/ssm_secrets.py" in names
    assert not any(n.startswith(("tests/", "devstack/", "infra/", ".chalice/")) for n in names)
    native = [n for n in names if n.startswith("bcrypt/") and n.endswith(".so")]
    assert native, "bcrypt's compiled module is missing: the Lambda runtime could not hash"


def test_packaged_template_has_the_gateway_responses_for_the_extension(chalice_package):
    definition = _swagger(chalice_package)
    assert definition["x-amazon-apigateway-gateway-responses"] == template.gateway_responses(ORIGIN)


def test_chalice_api_handler_log_group_reference_is_repaired(chalice_package):
    def log_group_names(sam):
        return [
            r["Properties"]["LogGroupName"]["Fn::Sub"]
            for r in sam["Resources"].values()
            if r["Type"] == "AWS::Logs::LogGroup"
        ]

    assert "/aws/lambda/${ApiHandler}" in log_group_names(chalice_package.raw_sam)  # chalice 1.34
    assert "/aws/lambda/${APIHandler}" in log_group_names(chalice_package.sam)
    for name in log_group_names(chalice_package.sam):
        assert name[len("/aws/lambda/${"):-1] in chalice_package.sam["Resources"]


def test_the_packaged_sam_template_lints(chalice_package):
    cfn_lint = os.path.join(os.path.dirname(sys.executable), "cfn-lint")
    path = os.path.join(chalice_package.directory, "sam.json")
    completed = subprocess.run([cfn_lint, path], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_package_writes_the_infra_template_and_its_parameters(chalice_package):
    with open(os.path.join(chalice_package.directory, "infra.json"), encoding="utf-8") as handle:
        assert json.load(handle) == template.render("prod")
    with open(os.path.join(chalice_package.directory, "infra-parameters.json"), encoding="utf-8") as handle:
        assert json.load(handle) == [{"ParameterKey": "AllowedOrigins", "ParameterValue": ORIGIN}]


def test_the_queue_poller_is_capped_at_the_workers_reserved_concurrency(chalice_package):
    properties = _function(chalice_package, "catchup_worker")
    (event,) = properties["Events"].values()
    maximum = event["Properties"]["ScalingConfig"]["MaximumConcurrency"]
    assert 2 <= maximum <= properties["ReservedConcurrentExecutions"]


def test_the_stage_throttling_and_the_locked_dependencies_are_packaged(chalice_package):
    ops = deploy.ops_config(PACKAGE_STAGE)
    (settings,) = chalice_package.resource("RestAPI")["Properties"]["MethodSettings"]
    assert (settings["ThrottlingRateLimit"], settings["ThrottlingBurstLimit"]) == (ops.rate_limit, ops.burst_limit)
    with open(os.path.join(ROOT, "requirements.lock"), encoding="utf-8") as handle:
        locked = dict(line.split(" ")[0].split("==") for line in handle if "==" in line and not line.startswith(" "))
    with zipfile.ZipFile(chalice_package.zip_path) as archive:
        dist_infos = {n.split("/")[0] for n in archive.namelist() if n.split("/")[0].endswith(".dist-info")}
    packaged = {d[: -len(".dist-info")].rsplit("-", 1)[0].lower().replace("_", "-"):
                d[: -len(".dist-info")].rsplit("-", 1)[1] for d in dist_infos}
    for name, version in locked.items():
        assert packaged.get(name.lower().replace("_", "-")) == version, name


def test_the_monitoring_stack_is_packaged(chalice_package):
    from infra import monitoring

    with open(os.path.join(chalice_package.directory, "monitoring.json"), encoding="utf-8") as handle:
        assert json.load(handle) == monitoring.render(PACKAGE_STAGE)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_a_packaged_function_has_its_deployed_name_and_may_log_only_there(chalice_package, function):
    """The same name as `chalice deploy` gives it: what its policy and the monitoring stack address."""
    import fnmatch

    properties = _function(chalice_package, function)
    assert properties["FunctionName"] == policy.function_name("prod", function)
    with open(policy.policy_path("prod", function), encoding="utf-8") as handle:
        (logs,) = [s for s in json.load(handle)["Statement"] if s["Sid"] == "Logs"]
    for other in FUNCTIONS:
        stream = (f"arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/{policy.function_name('prod', other)}"
                  ":log-stream:2026/12/01/[$LATEST]abc")
        allowed = any(fnmatch.fnmatchcase(stream, pattern) for pattern in logs["Resource"])
        assert allowed == (other == function), (function, other)
