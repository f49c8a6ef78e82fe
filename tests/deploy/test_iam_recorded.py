"""Every AWS call the application made during this test session is allowed by the policy files.

Runs last (`after_suite`), over the recording of the whole session (tests/deploy/
recording.py): the operations, the tables, the bucket keys, the queues and the SSM
parameters the code really used. Together with test_policy (the files equal what the
static scan of the code requires, nothing more) this makes the policies exactly the code's
calls: the scan proposes, the recording proves the scan missed nothing the tests exercise.
"""
from __future__ import annotations

import json
import re

import pytest

from chalicelib.aws import resources
from chalicelib.core.settings import APP_NAME
from infra import policy
from tests.deploy.recording import RECORDER

pytestmark = pytest.mark.after_suite

PHYSICAL_NAME = re.compile(rf"^{APP_NAME}-[a-z0-9]+-(?P<suffix>.+)$")
SSM_NAME = re.compile(rf"^/{APP_NAME}/[a-z0-9]+/[A-Z_]+$")


def _calls():
    if not RECORDER.calls:
        pytest.skip("no application AWS calls were recorded: run this with the rest of the suite")
    return list(RECORDER.calls)


def _suffix(name: str) -> str:
    match = PHYSICAL_NAME.match(name)
    assert match, f"{name} is not one of our physical names"
    return match.group("suffix")


def test_the_static_scan_sees_every_recorded_operation():
    scanned = policy.scan().operations
    unseen = sorted({(c.service, c.operation, c.site) for c in _calls() if (c.service, c.operation) not in scanned})
    assert not unseen, (
        "the code made AWS calls the static scan of infra/policy.py does not see (call the client "
        f"as client('<service>').<method>(...) or through a helper that returns one): {unseen}"
    )


@pytest.mark.parametrize("stage", policy.DEPLOY_STAGES)
def test_every_recorded_call_is_allowed_to_every_function_whose_code_makes_it(stage):
    """A call made from module M is allowed by the policy of every function that loads M."""
    closures = {f: policy.import_closure(entry, function=f) for f, entry in policy.FUNCTIONS.items()}
    missing: dict[str, set[str]] = {}
    for function, closure in closures.items():
        with open(policy.policy_path(stage, function), encoding="utf-8") as handle:
            document = json.load(handle)
        allowed = policy.allowed_actions(document)
        granted_tables = {_suffix(arn.split(":table/", 1)[1]) for statement in document["Statement"]
                          if statement["Sid"] == "Tables" for arn in statement["Resource"] if "/index/" not in arn}
        for call in _calls():
            if policy.module_name(call.site.split(":")[0]) not in closure:
                continue
            for action in policy.actions_for(call.service, call.operation, call.transact_kinds) - allowed:
                missing.setdefault(f"{function}: {action}", set()).add(call.site)
            for table in call.tables:  # a function scoped to some tables (the authorizer) stays in them
                if _suffix(table) not in granted_tables:
                    missing.setdefault(f"{function}: table {_suffix(table)}", set()).add(call.site)
    assert not missing, f"policies lack (function: action or table: call sites): {missing}"


def test_every_recorded_call_touches_only_resources_the_policy_scopes():
    tables = {t.suffix for t in resources.TABLES}
    dead_letters = {q.dead_letter for q in resources.QUEUES if q.dead_letter}
    queues = {q.suffix for q in resources.QUEUES} - dead_letters
    outside = []
    for call in _calls():
        for table in call.tables:
            if _suffix(table) not in tables:
                outside.append((call.site, table))
        if call.bucket:
            suffix = _suffix(call.bucket)
            prefix = policy.OBJECT_KEY_PREFIXES.get(suffix)
            outside += [
                (call.site, f"{call.bucket}/{key}")
                for key in call.keys
                if prefix is None or not key.startswith(prefix)
            ]
        if call.queue and _suffix(call.queue) not in queues:
            outside.append((call.site, call.queue))
        outside += [(call.site, name) for name in call.parameters if not SSM_NAME.match(name)]
    assert not outside, f"calls outside the policy's resources: {sorted(set(outside))}"
