"""`make deploy STAGE=...` and `make package STAGE=...`: one command per stage.

deploy:  checks (config, policy in step with the code, secrets present in SSM)
         -> create/update the stage's infrastructure stack and wait for it
         -> the API handler's log group (see ensure_api_log_group)
         -> `chalice deploy --stage <stage>`
         -> apply the API Gateway responses (CORS on the gateway's own 401/403/4XX/5XX)
            and publish them with a new deployment of the API stage
         -> print the API URL and the Stripe webhook URL.
package: the same artefacts for a pipeline, in build/<stage>/: sam.json (chalice package
         output, repaired, with the gateway responses merged in), deployment.zip, infra.json
         and infra-parameters.json.

AWS is reached with boto3's default credential chain (AWS_PROFILE, environment, SSO...),
never with the app's own settings, so nothing here needs the app's secrets.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from infra import policy, slim, template

ROOT = policy.ROOT
CONFIG_PATH = os.path.join(ROOT, ".chalice", "config.json")
EXTENSION_ORIGIN = re.compile(r"^chrome-extension://[a-p]{32}$")  # Chrome extension ids: 32 of a-p
REQUIRED_SECRETS = ("JWT_SECRET",)  # without it nobody can log in; the rest degrade to 503s
STRIPE_WEBHOOK_PATH = "/webhooks/stripe"

Runner = Callable[[Sequence[str]], None]


class DeployError(Exception):
    """A precondition failed; the message says what to do."""


def _say(message: str) -> None:
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def chalice_cli() -> str:
    return os.path.join(os.path.dirname(sys.executable), "chalice")  # the venv's CLI


def run(command: Sequence[str]) -> None:
    """Run a CLI step in the project directory, streaming its output."""
    completed = subprocess.run(list(command), cwd=ROOT, check=False)
    if completed.returncode != 0:
        raise DeployError(f"{' '.join(command[:3])} failed with status {completed.returncode}")


# --- the stage's configuration -------------------------------------------------------------


@dataclass(frozen=True)
class StageConfig:
    stage: str
    api_gateway_stage: str
    environment: dict[str, str]
    api_log_retention_days: int | None = None

    @property
    def allowed_origins(self) -> list[str]:
        return [o.strip() for o in self.environment.get("ALLOWED_ORIGINS", "").split(",") if o.strip()]

    @property
    def ssm_prefix(self) -> str:
        return self.environment.get("SECRETS_SSM_PREFIX", "")


def stage_config(stage: str, config_path: str = CONFIG_PATH) -> StageConfig:
    with open(config_path, encoding="utf-8") as handle:
        config = json.load(handle)
    stages = config.get("stages", {})
    if stage not in stages or stage == "local":
        deployable = sorted(s for s in stages if s != "local")
        raise DeployError(f"unknown stage {stage!r}: deployable stages are {', '.join(deployable)}")
    stage_cfg = stages[stage]
    environment = {**config.get("environment_variables", {}), **stage_cfg.get("environment_variables", {})}
    api_stage = stage_cfg.get("api_gateway_stage") or config.get("api_gateway_stage") or "api"
    from chalice.config import Config

    retention = Config(chalice_stage=stage, function_name="api_handler", config_from_disk=config).log_retention_in_days
    return StageConfig(stage, api_stage, environment, retention)


def check_config(cfg: StageConfig) -> None:
    """Refuse placeholders and a policy that no longer matches the code."""
    origins = cfg.allowed_origins
    bad = [o for o in origins if not EXTENSION_ORIGIN.match(o)]
    if not origins or bad:
        raise DeployError(
            f"ALLOWED_ORIGINS for stage {cfg.stage!r} in .chalice/config.json must list the "
            f"extension's origins as chrome-extension://<32-letter id>; got {origins or 'nothing'}"
        )
    if cfg.ssm_prefix != policy.ssm_prefix(cfg.stage):
        raise DeployError(
            f"SECRETS_SSM_PREFIX for stage {cfg.stage!r} must be {policy.ssm_prefix(cfg.stage)!r} "
            "(the path the IAM policy grants)"
        )
    with open(policy.policy_path(cfg.stage), encoding="utf-8") as handle:
        current = json.load(handle)
    expected = policy.expected_policy(cfg.stage)
    if current != expected:
        raise DeployError(
            f"{policy.policy_path(cfg.stage)} is out of step with the code:\n"
            + policy.describe_difference(current, expected)
            + "\nrun `python -m infra policy --write` and review the change"
        )


def missing_secrets(cfg: StageConfig, ssm: Any) -> list[str]:
    """Names of the stage's secret parameters that do not exist (values are not read)."""
    from chalicelib.secrets import parameter_names

    names = sorted(set(parameter_names(cfg.environment).values()))
    missing: list[str] = []
    for start in range(0, len(names), 10):
        response = ssm.get_parameters(Names=names[start : start + 10], WithDecryption=False)
        missing += response.get("InvalidParameters", [])
    return sorted(missing)


# --- infrastructure stack ----------------------------------------------------------------


def _stack_status(cloudformation: Any, name: str) -> str | None:
    try:
        return cloudformation.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"]
    except cloudformation.exceptions.ClientError as error:
        if "does not exist" in str(error):
            return None
        raise


def _wait(cloudformation: Any, waiter: str, name: str) -> None:
    """Wait for the stack; on failure, say which resources failed and why."""
    from botocore.exceptions import WaiterError

    try:
        cloudformation.get_waiter(waiter).wait(StackName=name)
    except WaiterError:
        events = cloudformation.describe_stack_events(StackName=name)["StackEvents"]
        reasons = [
            f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason', e['ResourceStatus'])}"
            for e in events
            if e["ResourceStatus"].endswith("_FAILED")
        ]
        raise DeployError(f"stack {name} failed: " + "; ".join(reasons[:5] or ["see its events"])) from None


def deploy_infra(stage: str, origins: Sequence[str], cloudformation: Any) -> dict[str, str]:
    """Create or update the stage's stack, wait, and check its outputs name what the app uses."""
    name = template.stack_name(stage)
    request = {
        "StackName": name,
        "TemplateBody": json.dumps(template.render(stage)),
        "Parameters": [{"ParameterKey": "AllowedOrigins", "ParameterValue": ",".join(origins)}],
        "Tags": [{"Key": "app", "Value": template.APP_NAME}, {"Key": "stage", "Value": stage}],
    }
    status = _stack_status(cloudformation, name)
    if status == "ROLLBACK_COMPLETE":
        raise DeployError(
            f"stack {name} never got created (ROLLBACK_COMPLETE): read its events, fix the cause, "
            "delete the stack and run the command again"
        )
    if status is None:
        _say(f"Stack {name}: creating...")
        cloudformation.create_stack(
            **request,
            EnableTerminationProtection=stage in template.PROTECTED_STAGES,
            OnFailure="ROLLBACK",
        )
        _wait(cloudformation, "stack_create_complete", name)
    else:
        try:
            cloudformation.update_stack(**request)
        except cloudformation.exceptions.ClientError as error:
            if "No updates are to be performed" not in str(error):
                raise
            _say(f"Stack {name}: no changes")
        else:
            _say(f"Stack {name}: updating...")
            _wait(cloudformation, "stack_update_complete", name)
    stack = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    wrong = {k: (outputs.get(k), v) for k, v in template.expected_names(stage).items() if outputs.get(k) != v}
    if wrong:
        raise DeployError(f"stack {name} outputs differ from the names the app derives: {wrong}")
    return outputs


# --- the API handler's log group --------------------------------------------------------------


def api_log_group_name(stage: str) -> str:
    """Where the API handler really logs: `chalice deploy` names that function `<app>-<stage>`."""
    return f"/aws/lambda/{template.APP_NAME}-{stage}"


def ensure_api_log_group(logs: Any, stage: str, retention_days: int | None) -> None:
    """Create the API handler's log group, with the stage's retention, before its first request.

    Chalice 1.34 creates the log group with retention as `<app>-<stage>-api_handler`, a name
    the function never writes to; without this group Lambda would need logs:CreateLogGroup
    (which the role does not have) and the logs would be kept forever.
    """
    name = api_log_group_name(stage)
    try:
        logs.create_log_group(logGroupName=name)
    except logs.exceptions.ResourceAlreadyExistsException:
        pass
    if retention_days:
        logs.put_retention_policy(logGroupName=name, retentionInDays=retention_days)


# --- API Gateway responses ------------------------------------------------------------------


def deployed_api(stage: str, root: str = ROOT) -> tuple[str, str]:
    """(rest_api_id, url) from chalice's record of the deployment (.chalice/deployed)."""
    path = os.path.join(root, ".chalice", "deployed", f"{stage}.json")
    with open(path, encoding="utf-8") as handle:
        deployed = json.load(handle)
    for resource in deployed.get("resources", []):
        if resource.get("resource_type") == "rest_api":
            return resource["rest_api_id"], resource["rest_api_url"]
    raise DeployError(f"{path} has no REST API: did `chalice deploy` succeed?")


def apply_gateway_responses(apigateway: Any, rest_api_id: str, api_stage: str, origin: str) -> list[str]:
    """Put every gateway response, then deploy the stage so they take effect."""
    applied = []
    for response_type, spec in template.gateway_responses(origin).items():
        request = {
            "restApiId": rest_api_id,
            "responseType": response_type,
            "responseParameters": spec["responseParameters"],
            "responseTemplates": spec["responseTemplates"],
        }
        if "statusCode" in spec:
            request["statusCode"] = spec["statusCode"]
        apigateway.put_gateway_response(**request)
        applied.append(response_type)
    apigateway.create_deployment(
        restApiId=rest_api_id,
        stageName=api_stage,
        description="gateway responses with CORS (python -m infra deploy)",
    )
    return applied


# --- the commands ---------------------------------------------------------------------------


def _session() -> Any:
    import boto3

    session = boto3.session.Session()
    if not session.region_name:
        raise DeployError("no AWS region: set AWS_DEFAULT_REGION (or use a profile with a region)")
    return session


def deploy(
    stage: str,
    *,
    infra_only: bool = False,
    session: Any = None,
    runner: Runner = run,
    cfg: StageConfig | None = None,
    root: str = ROOT,
) -> dict[str, str]:
    cfg = cfg or stage_config(stage)
    check_config(cfg)
    session = session or _session()
    missing = missing_secrets(cfg, session.client("ssm"))
    required = [f"{cfg.ssm_prefix}{name}" for name in REQUIRED_SECRETS]
    if any(name in missing for name in required):
        raise DeployError(
            f"create the SecureString parameter(s) {', '.join(required)} first (see README, Deployment)"
        )
    for name in missing:
        _say(f"Warning: SSM parameter {name} does not exist; the features that need it answer 503")
    outputs = deploy_infra(stage, cfg.allowed_origins, session.client("cloudformation"))
    result = {"stack": template.stack_name(stage), **outputs}
    if infra_only:
        return result
    ensure_api_log_group(session.client("logs"), stage, cfg.api_log_retention_days)
    runner([chalice_cli(), "deploy", "--stage", stage])
    rest_api_id, url = deployed_api(stage, root)
    apply_gateway_responses(session.client("apigateway"), rest_api_id, cfg.api_gateway_stage, cfg.allowed_origins[0])
    url = url.rstrip("/")
    result.update(api_url=url, stripe_webhook_url=url + STRIPE_WEBHOOK_PATH)
    _say(f"API URL:            {url}/")
    _say(f"Stripe webhook URL: {url}{STRIPE_WEBHOOK_PATH}")
    return result


def package(stage: str, out_dir: str | None = None, runner: Runner = run) -> dict[str, Any]:
    """Check the stage, then write its artefacts to build/<stage>/ (or out_dir)."""
    cfg = stage_config(stage)
    check_config(cfg)
    return build_package(cfg, out_dir or os.path.join(ROOT, "build", stage), runner)


def build_package(cfg: StageConfig, out_dir: str, runner: Runner = run) -> dict[str, Any]:
    """sam.json (chalice package + repairs + gateway responses), deployment.zip, infra.json."""
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"chalice-package-{cfg.stage}-") as scratch:
        build, output = os.path.join(scratch, "project"), os.path.join(scratch, "out")
        os.makedirs(build)
        slim.stage_app(ROOT, build)
        slim.vendor(build, os.path.join(ROOT, "requirements.txt"))
        runner([chalice_cli(), "--project-dir", build, "package", "--stage", cfg.stage, output])
        with open(os.path.join(output, "sam.json"), encoding="utf-8") as handle:
            sam = json.load(handle)
        shutil.copyfile(os.path.join(output, "deployment.zip"), os.path.join(out_dir, "deployment.zip"))
    template.repair_api_handler_log_group(sam)
    template.merge_gateway_responses(sam, cfg.allowed_origins[0])
    artefacts = {
        "sam.json": sam,
        "infra.json": template.render(cfg.stage),
        "infra-parameters.json": [
            {"ParameterKey": "AllowedOrigins", "ParameterValue": ",".join(cfg.allowed_origins)}
        ],
    }
    for name, document in artefacts.items():
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=2)
            handle.write("\n")
    size = os.path.getsize(os.path.join(out_dir, "deployment.zip"))
    _say(f"Wrote {out_dir}: sam.json, deployment.zip ({size / 1e6:.1f} MB), infra.json, infra-parameters.json")
    _say(f"Deploy infra.json as stack {template.stack_name(cfg.stage)} first, then sam.json (CAPABILITY_IAM).")
    return {"out_dir": out_dir, "zip_bytes": size, "sam": sam}
