"""Least-privilege IAM policies for the Lambda roles, derived from the code (never by hand).

`.chalice/policy-<stage>.json` must allow exactly the AWS actions the deployed code can
call, on exactly our resources. This module finds those calls by reading the source
(chalicelib/ and app.py) with `ast`: every `client("<service>").<method>(...)`, every call
on a variable or helper that holds such a client (`store.ddb().transact_write_items`,
`sqs = client("sqs"); sqs.send_message(...)`), paginators, waiters and presigned URLs.
Operations become IAM actions the way AWS documents them (a TransactWriteItems needs the
per-item actions PutItem/UpdateItem/DeleteItem/ConditionCheckItem; HeadObject needs
s3:GetObject; ListObjectsV2 needs s3:ListBucket on the bucket), plus what the runtime
needs on the functions' behalf (CloudWatch Logs; the SQS event source's poller).

The static scan is the generator (`python -m infra policy --write`); the test suite also
records every botocore operation the code really makes (tests/deploy) and fails when the
scan missed one, so calls the scan cannot see still cannot ship unpermitted.
"""
from __future__ import annotations

import ast
import functools
import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from chalicelib import resources
from chalicelib.settings import APP_NAME, resource_name

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY_STAGES = ("dev", "prod")

TRANSACT_WRITE_ACTIONS = {
    "Put": "dynamodb:PutItem",
    "Update": "dynamodb:UpdateItem",
    "Delete": "dynamodb:DeleteItem",
    "ConditionCheck": "dynamodb:ConditionCheckItem",
}
# Operations whose IAM action is not simply `<service>:<Operation>`.
ACTION_EXCEPTIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("dynamodb", "TransactGetItems"): ("dynamodb:GetItem",),
    ("s3", "HeadObject"): ("s3:GetObject",),
    ("s3", "ListObjectsV2"): ("s3:ListBucket",),
    ("s3", "ListObjects"): ("s3:ListBucket",),
    ("s3", "HeadBucket"): ("s3:ListBucket",),
    ("s3", "DeleteObjects"): ("s3:DeleteObject",),
    ("s3", "CopyObject"): ("s3:GetObject", "s3:PutObject"),
    ("sqs", "SendMessageBatch"): ("sqs:SendMessage",),
    ("sqs", "DeleteMessageBatch"): ("sqs:DeleteMessage",),
    ("sqs", "ChangeMessageVisibilityBatch"): ("sqs:ChangeMessageVisibility",),
}
# What Lambda's SQS poller does with the function's role (AWS: "Lambda execution role
# permissions" for Amazon SQS event sources).
SQS_EVENT_SOURCE_ACTIONS = ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes")
# Chalice creates every function's log group (log_retention_in_days is set for each deploy
# stage), so the functions only create streams and write events.
LOG_ACTIONS = ("logs:CreateLogStream", "logs:PutLogEvents")
BUCKET_LEVEL_ACTIONS = frozenset({"s3:ListBucket"})
# Tables whose items are written once and never changed or removed by the functions.
APPEND_ONLY_TABLES = ("audit",)
APPEND_ONLY_DENIED = ("dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem")
# The key prefix the code writes under, per bucket (chalicelib.audio_uploads.PREFIX); the
# recorded calls in tests/deploy prove every key the code touches starts with it.
OBJECT_KEY_PREFIXES = {"audio": "uploads/"}
SCOPED_SERVICES = ("dynamodb", "s3", "sqs", "ssm", "logs")


# --- operations -> actions -----------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    service: str
    operation: str
    site: str  # "chalicelib/store.py:84"


@dataclass
class Scan:
    calls: list[Call] = field(default_factory=list)
    transact_kinds: set[str] = field(default_factory=set)
    sqs_subscriptions: list[str] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)

    @property
    def operations(self) -> set[tuple[str, str]]:
        return {(c.service, c.operation) for c in self.calls}


def actions_for(service: str, operation: str, transact_kinds: Iterable[str] = ()) -> set[str]:
    """The IAM actions one API operation needs."""
    if (service, operation) == ("dynamodb", "TransactWriteItems"):
        kinds = set(transact_kinds) or set(TRANSACT_WRITE_ACTIONS)
        return {TRANSACT_WRITE_ACTIONS[kind] for kind in kinds}
    return set(ACTION_EXCEPTIONS.get((service, operation), (f"{service}:{operation}",)))


def required_actions(scan: Scan) -> set[str]:
    actions = set(LOG_ACTIONS)
    for service, operation in scan.operations:
        actions |= actions_for(service, operation, scan.transact_kinds)
    if scan.sqs_subscriptions:
        actions |= set(SQS_EVENT_SOURCE_ACTIONS)
    return actions


# --- the static scan ---------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _method_operations(service: str) -> dict[str, str]:
    """{python method name: API operation} for a service, from botocore's own model."""
    import botocore.session
    from botocore import xform_name

    model = botocore.session.get_session().get_service_model(service)
    return {xform_name(name): name for name in model.operation_names}


def _waiter_operation(service: str, waiter: str) -> str | None:
    """The operation a waiter polls (`get_waiter("table_exists")` -> DescribeTable)."""
    import botocore.session
    from botocore import xform_name

    model = botocore.session.get_session().get_waiter_model(service)
    for name in model.waiter_names:
        if xform_name(name) == waiter:
            return model.get_waiter(name).operation
    return None


def _callee_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _constant_str(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _binding_key(node: ast.AST) -> str | None:
    """`sqs` for a Name, `self._sqs` for an attribute of self/cls: where a client can be kept."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return f"{node.value.id}.{node.attr}"
    return None


class _Resolver:
    """Which services an expression's value is a client of."""

    def __init__(self, factories: dict[str, set[str]]) -> None:
        self.factories = factories

    def services(self, node: ast.AST, bindings: dict[str, set[str]]) -> set[str]:
        if isinstance(node, ast.Call):
            name = _callee_name(node.func)
            service = _constant_str(node.args[0]) if node.args else None
            if name == "client" and service:
                return {service}
            if name in self.factories:
                return set(self.factories[name])
            return set()
        key = _binding_key(node)
        return set(bindings.get(key, set())) if key else set()


def _functions(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def _bindings(scope: ast.AST, resolver: _Resolver, inherited: dict[str, set[str]]) -> dict[str, set[str]]:
    bindings = {key: set(value) for key, value in inherited.items()}
    for node in ast.walk(scope):
        targets: list[ast.AST] = []
        value: ast.AST | None = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        if value is None:
            continue
        pairs: list[tuple[ast.AST, ast.AST]] = []
        for target in targets:
            if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple) and len(target.elts) == len(value.elts):
                pairs += list(zip(target.elts, value.elts))  # `s3, bucket = client("s3"), name`
            else:
                pairs.append((target, value))
        for target, assigned in pairs:
            key = _binding_key(target)
            services = resolver.services(assigned, bindings)
            if key and services:
                bindings.setdefault(key, set()).update(services)
    return bindings


def _sources(root: str) -> list[tuple[str, ast.Module]]:
    paths = [os.path.join(root, "app.py")]
    for directory, _, files in os.walk(os.path.join(root, "chalicelib")):
        paths += [os.path.join(directory, f) for f in sorted(files) if f.endswith(".py")]
    modules = []
    for path in sorted(paths):
        with open(path, encoding="utf-8") as handle:
            modules.append((os.path.relpath(path, root), ast.parse(handle.read(), filename=path)))
    return modules


def _find_factories(modules: list[tuple[str, ast.Module]]) -> dict[str, set[str]]:
    """Functions that return a client of a known service (`store.ddb`, `_ssm_client`, ...)."""
    factories: dict[str, set[str]] = {}
    changed = True
    while changed:
        changed = False
        resolver = _Resolver(factories)
        for _, tree in modules:
            for function in _functions(tree):
                bindings = _bindings(function, resolver, {})
                services: set[str] = set()
                for node in ast.walk(function):
                    if isinstance(node, ast.Return) and node.value is not None:
                        services |= resolver.services(node.value, bindings)
                if services - factories.get(function.name, set()):
                    factories.setdefault(function.name, set()).update(services)
                    changed = True
    return factories


def _operation_of(service: str, method: str, call: ast.Call) -> str | None | bool:
    """The operation a client method call performs; False when it is not an API call."""
    operations = _method_operations(service)
    if method in operations:
        return operations[method]
    first = _constant_str(call.args[0]) if call.args else None
    keywords = {k.arg: _constant_str(k.value) for k in call.keywords}
    if method == "get_paginator":
        return operations.get(first or "")
    if method == "generate_presigned_url":
        return operations.get(first or keywords.get("ClientMethod") or "")
    if method == "generate_presigned_post":
        return "PutObject"
    if method == "get_waiter":
        return _waiter_operation(service, first or "")
    return False


def _is_sqs_subscription(decorator: ast.AST) -> bool:
    return isinstance(decorator, ast.Call) and _callee_name(decorator.func) == "on_sqs_message"


def scan(root: str = ROOT) -> Scan:
    """Every AWS operation the deployed code calls, found in its source.

    A name bound to a client anywhere in a module counts as that client in the whole
    module: a deliberate over-approximation (the policy may only ever grow from it).
    """
    modules = _sources(root)
    resolver = _Resolver(_find_factories(modules))
    result = Scan()
    for path, tree in modules:
        bindings = _bindings(tree, resolver, {})
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if any(_is_sqs_subscription(d) for d in node.decorator_list):
                    result.sqs_subscriptions.append(f"{path}:{node.name}")
            elif isinstance(node, ast.Dict):
                for key in node.keys:
                    kind = _constant_str(key) if key is not None else None
                    if kind in TRANSACT_WRITE_ACTIONS:
                        result.transact_kinds.add(kind)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                for service in sorted(resolver.services(node.func.value, bindings)):
                    operation = _operation_of(service, node.func.attr, node)
                    if operation is None:
                        result.unresolved.append(f"{path}:{node.lineno} {service}.{node.func.attr}")
                    elif operation is not False:
                        result.calls.append(Call(service, operation, f"{path}:{node.lineno}"))
    return result


# --- rendering -----------------------------------------------------------------------------


def _arns(stage: str) -> dict[str, Any]:
    dead_letter_queues = {q.dead_letter for q in resources.QUEUES if q.dead_letter}
    tables = [f"arn:aws:dynamodb:*:*:table/{resource_name(stage, t.suffix)}" for t in resources.TABLES]
    indexes = [
        f"arn:aws:dynamodb:*:*:table/{resource_name(stage, t.suffix)}/index/*"
        for t in resources.TABLES
        if t.indexes
    ]
    return {
        "dynamodb": tables + indexes,
        "s3_objects": [
            f"arn:aws:s3:::{resource_name(stage, b.suffix)}/{OBJECT_KEY_PREFIXES[b.suffix]}*"
            for b in resources.BUCKETS
        ],
        "s3_buckets": [f"arn:aws:s3:::{resource_name(stage, b.suffix)}" for b in resources.BUCKETS],
        "sqs": [
            f"arn:aws:sqs:*:*:{resource_name(stage, q.suffix)}"
            for q in resources.QUEUES
            if q.suffix not in dead_letter_queues
        ],
        "ssm": [f"arn:aws:ssm:*:*:parameter{ssm_prefix(stage)}*"],
        # `chalice deploy` names the API handler `<app>-<stage>`, the others `<app>-<stage>-<name>`.
        "logs": [
            f"arn:aws:logs:*:*:log-group:/aws/lambda/{APP_NAME}-{stage}:*",
            f"arn:aws:logs:*:*:log-group:/aws/lambda/{APP_NAME}-{stage}-*:*",
        ],
    }


def ssm_prefix(stage: str) -> str:
    """Where a stage's secrets live in Parameter Store (SECRETS_SSM_PREFIX)."""
    return f"/{APP_NAME}/{stage}/"


def render_policy(stage: str, actions: Iterable[str]) -> dict[str, Any]:
    """The policy document granting `actions`, each on our resources of its service only."""
    by_service: dict[str, set[str]] = {}
    for action in actions:
        service = action.split(":", 1)[0]
        if service not in SCOPED_SERVICES:
            raise ValueError(
                f"{action}: no resource scope is defined for {service!r}; add one to infra/policy.py"
            )
        by_service.setdefault(service, set()).add(action)
    arns = _arns(stage)
    statements: list[dict[str, Any]] = []

    def allow(sid: str, granted: Iterable[str], resource: list[str], **extra: Any) -> None:
        granted = sorted(granted)
        if granted:
            statements.append(
                {"Sid": sid, "Effect": "Allow", "Action": granted, "Resource": resource, **extra}
            )

    allow("Logs", by_service.get("logs", ()), arns["logs"])
    allow("Tables", by_service.get("dynamodb", ()), arns["dynamodb"])
    statements.append({  # the audit log is append-only, whatever the code does (chalicelib.audit)
        "Sid": "AuditLogAppendOnly", "Effect": "Deny", "Action": sorted(APPEND_ONLY_DENIED),
        "Resource": [f"arn:aws:dynamodb:*:*:table/{resource_name(stage, suffix)}" for suffix in APPEND_ONLY_TABLES],
    })
    s3 = by_service.get("s3", set())
    allow("AudioObjects", s3 - BUCKET_LEVEL_ACTIONS, arns["s3_objects"])
    prefixes = sorted(f"{OBJECT_KEY_PREFIXES[b.suffix]}*" for b in resources.BUCKETS)
    allow(
        "AudioBucket",
        s3 & BUCKET_LEVEL_ACTIONS,
        arns["s3_buckets"],
        Condition={"StringLike": {"s3:prefix": prefixes}},
    )
    allow("Queues", by_service.get("sqs", ()), arns["sqs"])
    allow("Secrets", by_service.get("ssm", ()), arns["ssm"])
    return {"Version": "2012-10-17", "Statement": statements}


def expected_policy(stage: str, root: str = ROOT) -> dict[str, Any]:
    return render_policy(stage, required_actions(scan(root)))


def policy_path(stage: str, root: str = ROOT) -> str:
    return os.path.join(root, ".chalice", f"policy-{stage}.json")


def allowed_actions(policy: dict[str, Any]) -> set[str]:
    actions: set[str] = set()
    for statement in policy.get("Statement", []):
        if statement.get("Effect") == "Allow":
            granted = statement.get("Action", [])
            actions.update([granted] if isinstance(granted, str) else granted)
    return actions


def describe_difference(current: dict[str, Any], expected: dict[str, Any]) -> str:
    """A readable diff: actions missing/extra, then statements whose resources differ."""
    lines = []
    missing = sorted(allowed_actions(expected) - allowed_actions(current))
    extra = sorted(allowed_actions(current) - allowed_actions(expected))
    if missing:
        lines.append("missing (the code calls these): " + ", ".join(missing))
    if extra:
        lines.append("extra (nothing in the code needs these): " + ", ".join(extra))
    current_by_sid = {s.get("Sid"): s for s in current.get("Statement", [])}
    for statement in expected["Statement"]:
        had = current_by_sid.get(statement["Sid"])
        if had is None or had != statement:
            lines.append(f"statement {statement['Sid']}: expected {json.dumps(statement)}")
    known = {s["Sid"] for s in expected["Statement"]}
    for sid in current_by_sid:
        if sid not in known:
            lines.append(f"statement {sid}: not expected")
    return "\n".join(lines)


def write(stage: str, root: str = ROOT) -> dict[str, Any]:
    policy = expected_policy(stage, root)
    with open(policy_path(stage, root), "w", encoding="utf-8") as handle:
        json.dump(policy, handle, indent=2)
        handle.write("\n")
    return policy
