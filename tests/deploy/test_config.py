"""`.chalice/config.json`: what each deployed function gets, resolved the way Chalice resolves it."""
from __future__ import annotations

import json
import os

import pytest
from chalice.config import Config

from chalicelib.aws import resources
from chalicelib.aws.ssm_secrets import SECRET_NAMES
from infra import policy
from tests.deploy.recording import ROOT

API_GATEWAY_LIMIT_SECONDS = 29
MEMORY_MB = 512


def _config_from_disk() -> dict:
    with open(os.path.join(ROOT, ".chalice", "config.json"), encoding="utf-8") as handle:
        return json.load(handle)


def _scoped(stage: str, function: str) -> Config:
    return Config(chalice_stage=stage, function_name=function, config_from_disk=_config_from_disk())


def _app_functions() -> set[str]:
    """The Lambda functions Chalice builds from app.py, by their config names."""
    import app

    names = {"api_handler"} if app.app.routes else set()
    names |= {auth.name for auth in app.app.builtin_auth_handlers}
    names |= {source.name for source in app.app.event_sources}
    names |= {function.name for function in app.app.pure_lambda_functions}
    return names


def test_stages():
    assert set(_config_from_disk()["stages"]) == {"local", *policy.DEPLOY_STAGES}


def test_local_stage_takes_secrets_and_origins_from_the_environment():
    local = _config_from_disk()["stages"]["local"]["environment_variables"]
    assert "SECRETS_SSM_PREFIX" not in local and "ALLOWED_ORIGINS" not in local


@pytest.mark.parametrize("stage", policy.DEPLOY_STAGES)
def test_every_app_function_is_configured_and_nothing_else(stage):
    configured = set(_config_from_disk()["stages"][stage]["lambda_functions"])
    assert configured == {"api_handler", "jwt_auth", "cleanup", "catchup_worker"}
    assert _app_functions() == configured


@pytest.mark.parametrize("stage", policy.DEPLOY_STAGES)
def test_function_limits(stage):
    api = _scoped(stage, "api_handler")
    assert api.lambda_timeout < API_GATEWAY_LIMIT_SECONDS  # finish (and log) before the gateway's 504
    assert _scoped(stage, "jwt_auth").lambda_timeout <= 10
    worker = _scoped(stage, "catchup_worker")
    assert worker.lambda_timeout == 300 and worker.reserved_concurrency >= 1
    cleanup = _scoped(stage, "cleanup")
    assert cleanup.reserved_concurrency == 1  # two cleanups never overlap
    for function in ("api_handler", "jwt_auth", "cleanup", "catchup_worker"):
        scoped = _scoped(stage, function)
        assert scoped.lambda_memory_size == MEMORY_MB
        assert scoped.log_retention_in_days  # Chalice creates the log group: the role need not
        assert scoped.autogen_policy is False
        assert scoped.iam_policy_file == policy.policy_file(stage, function)  # a role and policy of its own
        assert scoped.tags["stage"] == stage and scoped.tags["app"] == "transcription-backend"


@pytest.mark.parametrize("stage", policy.DEPLOY_STAGES)
def test_queue_visibility_is_six_times_the_worker_timeout(stage):
    worker_timeout = _scoped(stage, "catchup_worker").lambda_timeout
    queue = next(q for q in resources.QUEUES if q.suffix == "catchup")
    assert queue.visibility_timeout >= 6 * worker_timeout
    dead_letter = next(q for q in resources.QUEUES if q.suffix == queue.dead_letter)
    assert dead_letter.retention_seconds > queue.retention_seconds  # a dead letter outlives its source


@pytest.mark.parametrize("stage", policy.DEPLOY_STAGES)
def test_secrets_are_named_not_inlined(stage):
    for function in ("api_handler", "jwt_auth", "cleanup", "catchup_worker"):
        environment = _scoped(stage, function).environment_variables
        assert environment["STAGE"] == stage
        assert environment["SECRETS_SSM_PREFIX"] == policy.ssm_prefix(stage)
        assert not set(SECRET_NAMES) & set(environment)


def _deployed_functions(stage: str):
    """The Lambda functions `chalice deploy` would create for the stage, from Chalice's own graph."""
    from chalice.deploy import models
    from chalice.deploy.appgraph import ApplicationGraphBuilder, DependencyBuilder

    import app

    config = Config(
        chalice_stage=stage,
        user_provided_params={"chalice_app": app.app, "project_dir": ROOT},
        config_from_disk=_config_from_disk(),
    )
    graph = ApplicationGraphBuilder().build(config, stage)
    return [r for r in DependencyBuilder().build_dependencies(graph) if isinstance(r, models.LambdaFunction)]


@pytest.mark.parametrize("stage", policy.DEPLOY_STAGES)
def test_every_function_logs_to_a_group_the_policy_allows_and_that_has_retention(stage):
    import fnmatch

    from infra import deploy

    functions = _deployed_functions(stage)
    assert {f.resource_name for f in functions} >= {"api_handler", "jwt_auth", "catchup_worker"}
    for function in functions:
        # each function's role carries its own policy file, granting its own log group only
        assert function.role.policy.filename == policy.policy_path(stage, function.resource_name)
        with open(policy.policy_path(stage, function.resource_name), encoding="utf-8") as handle:
            (logs,) = [s for s in json.load(handle)["Statement"] if s["Sid"] == "Logs"]
        group = f"/aws/lambda/{function.function_name}"
        stream = f"arn:aws:logs:us-east-1:123456789012:log-group:{group}:log-stream:2026/01/01/[$LATEST]abc"
        assert any(fnmatch.fnmatchcase(stream, pattern) for pattern in logs["Resource"]), group
        # Lambda cannot create the group (no logs:CreateLogGroup): Chalice or the deploy step must.
        created_by_chalice = function.log_group is not None and function.log_group.log_group_name == group
        assert created_by_chalice or group == deploy.api_log_group_name(stage), group


@pytest.mark.parametrize("stage", policy.DEPLOY_STAGES)
def test_the_queue_poller_never_outruns_the_workers_reserved_concurrency(stage):
    """Throttled deliveries count towards maxReceiveCount: a job could die without running."""
    from infra import deploy

    cfg = deploy.stage_config(stage)
    deploy.check_worker_concurrency(cfg)
    maximum = int(cfg.environment["CATCHUP_MAX_CONCURRENCY"])
    assert 2 <= maximum <= _scoped(stage, "catchup_worker").reserved_concurrency


def test_a_poller_wider_than_the_reserved_concurrency_is_refused():
    from dataclasses import replace

    from infra import deploy

    cfg = deploy.stage_config("dev")
    for value in ("3", "1", "", "two"):
        with pytest.raises(deploy.DeployError, match="CATCHUP_MAX_CONCURRENCY"):
            deploy.check_worker_concurrency(replace(cfg, environment={**cfg.environment,
                                                                      "CATCHUP_MAX_CONCURRENCY": value}))


@pytest.mark.parametrize("stage", policy.DEPLOY_STAGES)
def test_retries_visibility_and_the_stuck_job_threshold_fit_together(stage):
    """docs/operations.md: the cleanup fails a job only after every delivery had its chance.

    Worst case from the first delivery: maxReceiveCount runs of the worker's timeout, with
    a full visibility timeout between two of them (a worker that died never shortened it).
    """
    from chalicelib.catchup import jobs
    from chalicelib.catchup import worker as catchup_worker
    from chalicelib.core.settings import load_settings

    queue = next(q for q in resources.QUEUES if q.suffix == "catchup")
    timeout = _scoped(stage, "catchup_worker").lambda_timeout
    worst_case = queue.max_receive_count * timeout + (queue.max_receive_count - 1) * queue.visibility_timeout
    threshold = load_settings({"STAGE": "local"}).cleanup_catchup_stuck_seconds
    assert threshold >= worst_case + 600, (threshold, worst_case)
    assert jobs.MAX_ATTEMPTS == queue.max_receive_count  # the worker's last attempt fails the job itself
    assert catchup_worker.MAX_VISIBILITY_SECONDS <= queue.visibility_timeout
