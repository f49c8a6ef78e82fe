"""`make deploy STAGE=...` and `make package STAGE=...`: one command per stage.

deploy:  checks (config, placeholders, policies in step with the code, the Python that runs
         chalice is the configured Lambda runtime, secrets present in SSM)
         -> create/update the stage's infrastructure stack and wait for it (index changes one
            per table and update; indexes the template dropped are kept until after the app)
         -> the API handler's log group (see ensure_api_log_group)
         -> a clean build directory: app.py, chalicelib/, .chalice/ config and policies, and
            requirements.lock's packages installed for the Lambda runtime, trimmed and compiled
            (infra/slim.py): the same package `make package` builds and docs/performance.md measures
         -> fetch the stage's deploy state (chalice's deployed/<stage>.json) from the
            stage's deploy-state bucket, `chalice deploy`, save the state back (always)
         -> API Gateway responses and the stage's throttling, published with a new deployment
         -> the infrastructure stack without the dropped indexes (usually no change)
         -> the monitoring stack (alarms, topic, metric filters, budget, dashboard)
         -> print the API URL and the Stripe webhook URL.
rollback: the app code of a git ref, deployed the same way with the same saved state
         (the data and monitoring stacks are left as they are).
package: the same artefacts for a pipeline, in build/<stage>/: sam.json (chalice package
         output, repaired, with the gateway responses and throttling merged in),
         deployment.zip, infra.json, infra-parameters.json, monitoring.json and
         monitoring-parameters.json.

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
OPS_CONFIG_PATH = os.path.join(ROOT, "infra", "stages.json")
RUNTIME_LOCK = "requirements.lock"  # packaged as the build's requirements.txt
APP_SOURCES = ("app.py", "chalicelib")
TEMPLATE_BODY_LIMIT = 51_200  # bytes CloudFormation accepts inline; larger ones go through S3
STATE_KEY = "chalice/deployed/{stage}.json"
EXTENSION_ORIGIN = re.compile(r"^chrome-extension://[a-p]{32}$")  # Chrome extension ids: 32 of a-p
REQUIRED_SECRETS = ("JWT_SECRET",)  # without it nobody can log in; the rest degrade to 503s
OPTIONAL_SECRETS = ("JWT_SECRET_PREVIOUS",)  # set only during a rotation
# Where Stripe sends the browser back to; the defaults are placeholders no user should see.
RETURN_URL_SETTINGS = ("CHECKOUT_SUCCESS_URL", "CHECKOUT_CANCEL_URL", "BILLING_PORTAL_RETURN_URL")
PLACEHOLDER_HOST = "example.invalid"
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
    custom_domain: dict[str, Any] | None = None  # chalice's api_gateway_custom_domain
    config_path: str | None = None

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
    domain = stage_cfg.get("api_gateway_custom_domain") or config.get("api_gateway_custom_domain")
    return StageConfig(stage, api_stage, environment, retention, domain, config_path)


@dataclass(frozen=True)
class OpsConfig:
    """A stage's operations settings (infra/stages.json): what chalice's config cannot hold."""

    stage: str
    lambda_runtime: str
    alarm_email: str
    monthly_budget_usd: int
    rate_limit: float
    burst_limit: int


def ops_config(stage: str, path: str = OPS_CONFIG_PATH, env: Any = None) -> OpsConfig:
    env = os.environ if env is None else env
    with open(path, encoding="utf-8") as handle:
        config = json.load(handle)
    if stage not in config["stages"]:
        raise DeployError(f"stage {stage!r} has no entry in {os.path.relpath(path, ROOT)}")
    stage_cfg = config["stages"][stage]
    return OpsConfig(
        stage=stage,
        lambda_runtime=config["lambda_runtime"],
        alarm_email=env.get("ALARM_EMAIL") or stage_cfg.get("alarm_email", ""),
        monthly_budget_usd=int(stage_cfg["monthly_budget_usd"]),
        rate_limit=float(stage_cfg["throttling"]["rate_limit"]),
        burst_limit=int(stage_cfg["throttling"]["burst_limit"]),
    )


def deployer_runtime() -> str:
    """The runtime `chalice deploy` gives the functions: the Python running it (Chalice 1.34)."""
    return f"python{sys.version_info.major}.{sys.version_info.minor}"


def check_ops(ops: OpsConfig) -> None:
    """The runtime is configured, not whatever Python the deployer has; prod alarms reach someone."""
    if deployer_runtime() != ops.lambda_runtime:
        raise DeployError(
            f"the Lambda runtime is fixed to {ops.lambda_runtime} (infra/stages.json) but this is "
            f"{deployer_runtime()}, which chalice would deploy instead: recreate the venv with "
            f"that Python (make clean && make venv PYTHON={ops.lambda_runtime})"
        )
    if not (0 < ops.rate_limit and 0 < ops.burst_limit):
        raise DeployError(f"stage {ops.stage!r}: throttling rate_limit and burst_limit must be positive")
    if not ops.alarm_email and ops.stage in template.PROTECTED_STAGES:
        raise DeployError(
            f"stage {ops.stage!r} has no alarm_email in infra/stages.json (or ALARM_EMAIL): "
            "its alarms would reach nobody"
        )


def check_config(cfg: StageConfig) -> None:
    """Refuse placeholders and a policy that no longer matches the code."""
    origins = cfg.allowed_origins
    bad = [o for o in origins if not EXTENSION_ORIGIN.match(o)]
    if not origins or bad:
        raise DeployError(
            f"ALLOWED_ORIGINS for stage {cfg.stage!r} in .chalice/config.json must list the "
            f"extension's origins as chrome-extension://<32-letter id>; got {origins or 'nothing'}"
        )
    check_settings(cfg)
    check_return_urls(cfg)
    check_worker_concurrency(cfg)
    if cfg.custom_domain is not None:
        domain = cfg.custom_domain
        if not domain.get("domain_name") or not str(domain.get("certificate_arn", "")).startswith("arn:aws:acm:"):
            raise DeployError(
                f"api_gateway_custom_domain of stage {cfg.stage!r} needs domain_name and an ACM "
                "certificate_arn (in the API's region for a REGIONAL endpoint)"
            )
    if cfg.ssm_prefix != policy.ssm_prefix(cfg.stage):
        raise DeployError(
            f"SECRETS_SSM_PREFIX for stage {cfg.stage!r} must be {policy.ssm_prefix(cfg.stage)!r} "
            "(the path the IAM policy grants)"
        )
    for function in policy.FUNCTIONS:
        path = policy.policy_path(cfg.stage, function)
        with open(path, encoding="utf-8") as handle:
            current = json.load(handle)
        expected = policy.expected_policy(cfg.stage, function)
        if current != expected:
            raise DeployError(
                f"{path} is out of step with the code:\n"
                + policy.describe_difference(current, expected)
                + "\nrun `python -m infra policy --write` and review the change"
            )


def check_settings(cfg: StageConfig) -> None:
    """Every setting in the stage's environment is within its declared bounds: a value the
    functions would refuse is refused now, not on the first request after the deploy."""
    from chalicelib.core.errors import ConfigurationError
    from chalicelib.core.settings import BY_ENV, read_setting

    problems = []
    for name in cfg.environment:
        if name in BY_ENV:
            try:
                read_setting(name, {**cfg.environment, "STAGE": cfg.stage})
            except ConfigurationError as error:
                problems.append(str(error))
    if problems:
        raise DeployError(f"stage {cfg.stage!r} in .chalice/config.json: " + "; ".join(problems))


def check_worker_concurrency(cfg: StageConfig) -> None:
    """SQS polls with at most CATCHUP_MAX_CONCURRENCY batches: never more than the worker may run.

    Otherwise deliveries are throttled, each counting towards maxReceiveCount, and a job can
    reach the dead-letter queue without ever running.
    """
    from chalice.config import Config

    with open(CONFIG_PATH if cfg.config_path is None else cfg.config_path, encoding="utf-8") as handle:
        disk = json.load(handle)
    reserved = Config(chalice_stage=cfg.stage, function_name="catchup_worker",
                      config_from_disk=disk).reserved_concurrency
    raw = cfg.environment.get("CATCHUP_MAX_CONCURRENCY", "")
    if not raw.isdigit() or not reserved or not 2 <= int(raw) <= reserved:
        raise DeployError(
            f"stage {cfg.stage!r}: CATCHUP_MAX_CONCURRENCY ({raw or 'unset'}) must be between 2 (the SQS "
            f"minimum) and catchup_worker's reserved_concurrency ({reserved}) in .chalice/config.json"
        )


def check_return_urls(cfg: StageConfig) -> None:
    """Prod refuses Checkout/portal return URLs left at (or pointing to) the placeholder."""
    from urllib.parse import urlsplit

    problems = []
    for name in RETURN_URL_SETTINGS:
        url = cfg.environment.get(name, "").strip()
        parts = urlsplit(url)
        if not url or parts.scheme != "https" or not parts.hostname or parts.hostname.endswith(PLACEHOLDER_HOST):
            problems.append(f"{name}={url or '(unset: https://example.invalid/...)'}")
    if not problems:
        return
    message = (
        f"stage {cfg.stage!r} sends Stripe customers back to placeholder URLs: {', '.join(problems)}; "
        "set them to https pages of yours in the stage's environment_variables in .chalice/config.json"
    )
    if cfg.stage in template.PROTECTED_STAGES:
        raise DeployError(message)
    _say(f"Warning: {message}")


def missing_secrets(cfg: StageConfig, ssm: Any) -> list[str]:
    """Names of the stage's secret parameters that do not exist (values are not read)."""
    from chalicelib.aws.ssm_secrets import parameter_names

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


def create_or_update_stack(cloudformation: Any, request: dict[str, Any], protect: bool = False) -> None:
    """Create the stack (termination-protected if asked) or update it, and wait for it."""
    name = request["StackName"]
    status = _stack_status(cloudformation, name)
    if status == "ROLLBACK_COMPLETE":
        raise DeployError(
            f"stack {name} never got created (ROLLBACK_COMPLETE): read its events, fix the cause, "
            "delete the stack and run the command again"
        )
    if status is None:
        _say(f"Stack {name}: creating...")
        cloudformation.create_stack(**request, EnableTerminationProtection=protect, OnFailure="ROLLBACK")
        _wait(cloudformation, "stack_create_complete", name)
        return
    try:
        cloudformation.update_stack(**request)
    except cloudformation.exceptions.ClientError as error:
        if "No updates are to be performed" not in str(error):
            raise
        _say(f"Stack {name}: no changes")
        return
    _say(f"Stack {name}: updating...")
    _wait(cloudformation, "stack_update_complete", name)


def _stack_request(name: str, stage: str, parameters: list[dict[str, str]]) -> dict[str, Any]:
    return {"StackName": name, "Parameters": parameters,
            "Tags": [{"Key": "app", "Value": template.APP_NAME}, {"Key": "stage", "Value": stage}]}


def stack_outputs(cloudformation: Any, name: str) -> dict[str, str]:
    if _stack_status(cloudformation, name) is None:
        raise DeployError(f"stack {name} does not exist: run `make deploy` first")
    stack = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def deployed_template(cloudformation: Any, name: str) -> dict[str, Any]:
    """The template the stack was last updated with (empty when there is no stack yet)."""
    if _stack_status(cloudformation, name) is None:
        return {}
    body = cloudformation.get_template(StackName=name, TemplateStage="Original")["TemplateBody"]
    return json.loads(body) if isinstance(body, str) else dict(body)


def deploy_infra(stage: str, origins: Sequence[str], cloudformation: Any,
                 keep_retired_indexes: bool = False) -> dict[str, str]:
    """Create or update the stage's stack, wait, and check its outputs name what the app uses.

    With `keep_retired_indexes` (before the app is deployed), indexes the new template no
    longer has stay until the next call without it (after the app): the code running in
    between still queries them.
    """
    name = template.stack_name(stage)
    request = _stack_request(name, stage, [{"ParameterKey": "AllowedOrigins", "ParameterValue": ",".join(origins)}])
    deployed, target = deployed_template(cloudformation, name), template.render(stage)
    if keep_retired_indexes:
        target = template.with_retired_indexes(deployed, target)
    steps = template.index_steps(deployed, target)
    for number, step in enumerate(steps, start=1):
        _say(f"Stack {name}: index changes, one per table and update ({number} of {len(steps) + 1})")
        create_or_update_stack(cloudformation, {**request, "TemplateBody": json.dumps(step)})
    request["TemplateBody"] = json.dumps(target)  # well under the inline limit (tests)
    create_or_update_stack(cloudformation, request, protect=stage in template.PROTECTED_STAGES)
    outputs = stack_outputs(cloudformation, name)
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


# --- stage throttling --------------------------------------------------------------------


def apply_throttling(apigateway: Any, rest_api_id: str, api_stage: str, ops: OpsConfig) -> None:
    """Every method of the stage: at most `rate_limit` requests per second, `burst_limit` at once."""
    apigateway.update_stage(
        restApiId=rest_api_id,
        stageName=api_stage,
        patchOperations=[
            {"op": "replace", "path": "/*/*/throttling/rateLimit", "value": str(ops.rate_limit)},
            {"op": "replace", "path": "/*/*/throttling/burstLimit", "value": str(ops.burst_limit)},
        ],
    )


def merge_throttling(sam: dict[str, Any], ops: OpsConfig) -> dict[str, Any]:
    """The same limits in `chalice package`'s template."""
    sam["Resources"]["RestAPI"]["Properties"]["MethodSettings"] = [
        {"ResourcePath": "/*", "HttpMethod": "*", "ThrottlingRateLimit": ops.rate_limit,
         "ThrottlingBurstLimit": ops.burst_limit}
    ]
    return sam


# --- the build directory and the deploy state ----------------------------------------------


def stage_sources(source: str, build: str) -> None:
    """Copy what chalice packages (and nothing else) into `build`, with the lock as requirements."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in APP_SOURCES:
        path = os.path.join(source, name)
        if os.path.isdir(path):
            shutil.copytree(path, os.path.join(build, name), ignore=ignore)
        else:
            shutil.copyfile(path, os.path.join(build, name))
    os.makedirs(os.path.join(build, ".chalice"), exist_ok=True)
    for name in os.listdir(os.path.join(source, ".chalice")):
        if name == "config.json" or (name.startswith("policy-") and name.endswith(".json")):
            shutil.copyfile(os.path.join(source, ".chalice", name), os.path.join(build, ".chalice", name))
    lock = os.path.join(source, RUNTIME_LOCK)
    requirements = lock if os.path.exists(lock) else os.path.join(source, "requirements.txt")
    shutil.copyfile(requirements, os.path.join(build, "requirements.txt"))


def stage_build(source: str, build: str) -> bool:
    """The project chalice packages or deploys: the sources, then the locked dependencies
    installed for the Lambda runtime, trimmed and compiled (infra/slim.py).

    `make deploy`, `make rollback` and `make package` all go through here, so what is
    deployed is the package the tests run and docs/performance.md measures. Returns whether
    the dependencies came from slim's cache (build/.vendor-cache).
    """
    stage_sources(source, build)
    try:
        return slim.vendor(build, os.path.join(build, "requirements.txt"))
    except subprocess.CalledProcessError as error:
        raise DeployError(f"installing the runtime dependencies failed (status {error.returncode}): "
                          "see pip's output above") from None
    except RuntimeError as error:  # wrong Python, or a module that does not compile
        raise DeployError(str(error)) from None


def state_path(project: str, stage: str) -> str:
    return os.path.join(project, ".chalice", "deployed", f"{stage}.json")


def fetch_state(s3: Any, bucket: str, stage: str, build: str, root: str) -> str:
    """Put the stage's last deploy state into the build; returns where it came from.

    The bucket's copy wins; a state that only exists on this machine (deployments made
    before the state was kept in the bucket) is used once and then saved to the bucket.
    Without either, chalice creates everything anew: a new API id and URL.
    """
    target = state_path(build, stage)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    try:
        body = s3.get_object(Bucket=bucket, Key=STATE_KEY.format(stage=stage))["Body"].read()
    except s3.exceptions.NoSuchKey:
        local = state_path(root, stage)
        if os.path.exists(local):
            shutil.copyfile(local, target)
            return local
        return "none (first deployment)"
    with open(target, "wb") as handle:
        handle.write(body)
    return f"s3://{bucket}/{STATE_KEY.format(stage=stage)}"


def save_state(s3: Any, bucket: str, stage: str, build: str, root: str, source_ref: str) -> bool:
    """Keep what chalice recorded, in the bucket (versioned) and in the local .chalice/deployed."""
    path = state_path(build, stage)
    if not os.path.exists(path):
        return False
    with open(path, "rb") as handle:
        body = handle.read()
    s3.put_object(Bucket=bucket, Key=STATE_KEY.format(stage=stage), Body=body,
                  ContentType="application/json", Metadata={"source-ref": source_ref[:200]})
    os.makedirs(os.path.dirname(state_path(root, stage)), exist_ok=True)
    shutil.copyfile(path, state_path(root, stage))
    return True


def git_ref(repo: str, ref: str = "HEAD") -> str:
    """The commit a ref names (recorded with the deploy state), `unknown` outside a repository."""
    completed = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], cwd=repo,
                               capture_output=True, text=True, check=False)
    return completed.stdout.strip() or "unknown"


# --- the monitoring stack -------------------------------------------------------------------


def deploy_stack(cloudformation: Any, s3: Any, bucket: str, name: str, body: dict[str, Any],
                 parameters: list[dict[str, str]], stage: str) -> None:
    """Create or update a stack; a template over CloudFormation's inline limit goes through S3."""
    text = json.dumps(body, separators=(",", ":"))
    request = _stack_request(name, stage, parameters)
    if len(text.encode()) > TEMPLATE_BODY_LIMIT:
        key = f"templates/{name}.json"
        s3.put_object(Bucket=bucket, Key=key, Body=text.encode(), ContentType="application/json")
        request["TemplateURL"] = f"https://{bucket}.s3.{s3.meta.region_name}.amazonaws.com/{key}"
    else:
        request["TemplateBody"] = text
    create_or_update_stack(cloudformation, request)


def deploy_monitoring(session: Any, stage: str, ops: OpsConfig, bucket: str, root: str = ROOT) -> str:
    from infra import monitoring

    deploy_stack(session.client("cloudformation"), session.client("s3"), bucket, monitoring.stack_name(stage),
                 monitoring.render(stage, policy.stage_names(stage, root)),
                 monitoring.parameters(ops.alarm_email, ops.monthly_budget_usd), stage)
    if not ops.alarm_email:
        _say(f"Warning: no alarm_email for stage {stage!r}: alarms go to the SNS topic only")
    return monitoring.stack_name(stage)


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
    ops: OpsConfig | None = None,
    root: str = ROOT,
    source: str = ROOT,
) -> dict[str, str]:
    """`root` keeps the local copy of the deploy state; `source` is the project deployed."""
    cfg = cfg or stage_config(stage)
    ops = ops or ops_config(stage)
    check_config(cfg)
    check_ops(ops)
    session = session or _session()
    missing = missing_secrets(cfg, session.client("ssm"))
    required = [f"{cfg.ssm_prefix}{name}" for name in REQUIRED_SECRETS]
    if any(name in missing for name in required):
        raise DeployError(
            f"create the SecureString parameter(s) {', '.join(required)} first (see docs/operations.md)"
        )
    optional = {f"{cfg.ssm_prefix}{name}" for name in OPTIONAL_SECRETS}
    for name in missing:
        if name not in optional:
            _say(f"Warning: SSM parameter {name} does not exist; the features that need it answer 503")
    cloudformation = session.client("cloudformation")
    outputs = deploy_infra(stage, cfg.allowed_origins, cloudformation, keep_retired_indexes=True)
    result = {"stack": template.stack_name(stage), **outputs}
    if infra_only:
        return result
    result.update(deploy_app(stage, cfg, ops, session, runner, source=source, root=root, outputs=outputs,
                             source_ref=git_ref(source)))
    deploy_infra(stage, cfg.allowed_origins, cloudformation)  # retired indexes go, now nothing reads them
    result["monitoring_stack"] = deploy_monitoring(session, stage, ops, outputs[template.DEPLOY_STATE_BUCKET + "Name"],
                                                   source)
    return result


def deploy_app(stage: str, cfg: StageConfig, ops: OpsConfig, session: Any, runner: Runner, *, source: str,
               root: str, outputs: dict[str, str], source_ref: str) -> dict[str, str]:
    """chalice deploy of `source` with the stage's saved state, then the gateway's own settings."""
    bucket = outputs[template.DEPLOY_STATE_BUCKET + "Name"]
    s3 = session.client("s3")
    ensure_api_log_group(session.client("logs"), stage, cfg.api_log_retention_days)
    with tempfile.TemporaryDirectory(prefix=f"chalice-{stage}-") as build:
        stage_build(source, build)
        _say(f"Deploy state: {fetch_state(s3, bucket, stage, build, root)}")
        try:
            runner([chalice_cli(), "--project-dir", build, "deploy", "--stage", stage])
        finally:  # chalice records what it created even when a later step failed
            if save_state(s3, bucket, stage, build, root, source_ref):
                _say(f"Deploy state saved to s3://{bucket}/{STATE_KEY.format(stage=stage)}")
        rest_api_id, url = deployed_api(stage, build)
    apigateway = session.client("apigateway")
    apply_gateway_responses(apigateway, rest_api_id, cfg.api_gateway_stage, cfg.allowed_origins[0])
    apply_throttling(apigateway, rest_api_id, cfg.api_gateway_stage, ops)  # a stage setting: no deployment
    url = url.rstrip("/")
    if cfg.custom_domain:
        url = f"https://{cfg.custom_domain['domain_name']}"
    _say(f"API URL:            {url}/")
    _say(f"Stripe webhook URL: {url}{STRIPE_WEBHOOK_PATH}")
    return {"api_url": url, "stripe_webhook_url": url + STRIPE_WEBHOOK_PATH, "rest_api_id": rest_api_id}


def rollback(
    stage: str,
    ref: str,
    *,
    session: Any = None,
    runner: Runner = run,
    cfg: StageConfig | None = None,
    ops: OpsConfig | None = None,
    root: str = ROOT,
    repo: str = ROOT,
) -> dict[str, str]:
    """Deploy the app code of git `ref` (of `repo`) to the stage, reusing its saved state (same API, same URL).

    Only the app moves back: tables, queues, bucket and monitoring stay as they are, so a
    ref older than a data change still finds everything its code uses.
    """
    ops = ops or ops_config(stage)
    check_ops(ops)
    with tempfile.TemporaryDirectory(prefix=f"rollback-{stage}-") as source:
        archive = subprocess.run(["git", "archive", "--format=tar", ref], cwd=repo, capture_output=True, check=False)
        if archive.returncode != 0:
            raise DeployError(f"git archive {ref} failed: {archive.stderr.decode(errors='replace').strip()}")
        subprocess.run(["tar", "-x", "-C", source], input=archive.stdout, check=True)
        cfg = cfg or stage_config(stage, os.path.join(source, ".chalice", "config.json"))
        check_return_urls(cfg)
        if not cfg.allowed_origins or any(not EXTENSION_ORIGIN.match(o) for o in cfg.allowed_origins):
            raise DeployError(f"{ref}: ALLOWED_ORIGINS of stage {stage!r} are not deployable")
        session = session or _session()
        outputs = stack_outputs(session.client("cloudformation"), template.stack_name(stage))
        _say(f"Rolling stage {stage} back to {ref}")
        return deploy_app(stage, cfg, ops, session, runner, source=source, root=root, outputs=outputs,
                          source_ref=git_ref(repo, ref))


def package(stage: str, out_dir: str | None = None, runner: Runner = run) -> dict[str, Any]:
    """Check the stage, then write its artefacts to build/<stage>/ (or out_dir)."""
    cfg = stage_config(stage)
    check_config(cfg)
    ops = ops_config(stage)
    check_ops(ops)
    return build_package(cfg, out_dir or os.path.join(ROOT, "build", stage), runner, ops)


def build_package(cfg: StageConfig, out_dir: str, runner: Runner = run, ops: OpsConfig | None = None,
                  source: str = ROOT) -> dict[str, Any]:
    """sam.json (chalice package + repairs + gateway responses + function names + throttling), deployment.zip,
    infra.json and monitoring.json with their parameters."""
    from infra import monitoring

    ops = ops or ops_config(cfg.stage)
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"chalice-package-{cfg.stage}-") as scratch:
        build, output = os.path.join(scratch, "project"), os.path.join(scratch, "out")
        os.makedirs(build)
        stage_build(source, build)
        runner([chalice_cli(), "--project-dir", build, "package", "--stage", cfg.stage, output])
        with open(os.path.join(output, "sam.json"), encoding="utf-8") as handle:
            sam = json.load(handle)
        shutil.copyfile(os.path.join(output, "deployment.zip"), os.path.join(out_dir, "deployment.zip"))
    template.repair_api_handler_log_group(sam)
    template.merge_gateway_responses(sam, cfg.allowed_origins[0])
    template.name_packaged_functions(sam, cfg.stage)
    merge_throttling(sam, ops)
    artefacts = {
        "sam.json": sam,
        "infra.json": template.render(cfg.stage),
        "infra-parameters.json": [
            {"ParameterKey": "AllowedOrigins", "ParameterValue": ",".join(cfg.allowed_origins)}
        ],
        "monitoring.json": monitoring.render(cfg.stage, policy.stage_names(cfg.stage, source)),
        "monitoring-parameters.json": monitoring.parameters(ops.alarm_email, ops.monthly_budget_usd),
    }
    for name, document in artefacts.items():
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=2)
            handle.write("\n")
    size = os.path.getsize(os.path.join(out_dir, "deployment.zip"))
    _say(f"Wrote {out_dir}: sam.json, deployment.zip ({size / 1e6:.1f} MB), infra.json, infra-parameters.json")
    _say(f"Deploy infra.json as stack {template.stack_name(cfg.stage)} first, then sam.json (CAPABILITY_IAM; "
         "over 51,200 bytes: upload it, e.g. `aws cloudformation package --s3-bucket <DeployStateBucketName>`), "
         f"then monitoring.json as {monitoring.stack_name(cfg.stage)}.")
    return {"out_dir": out_dir, "zip_bytes": size, "sam": sam}
