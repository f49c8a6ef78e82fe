"""Least-privilege IAM policies for the Lambda roles, derived from the code (never by hand).

Each function has its own role and its own policy file, `.chalice/policy-<stage>-<function>.json`
(Chalice's per-function `iam_policy_file`), which must allow exactly the AWS actions that
function's code can call, on exactly our resources. A function's code is the import closure
of its entry module (FUNCTIONS): the internet-facing authorizer imports nothing that talks
to DynamoDB, S3 or SQS, so its role can read its secrets and write its logs, nothing else. This module finds those calls by reading the source
(chalicelib/ and app.py) with `ast`: every `client("<service>").<method>(...)`, every call
on a variable or helper that holds such a client (`store.ddb().transact_write_items`,
`sqs = client("sqs"); sqs.send_message(...)`), paginators, waiters and presigned URLs, and
every `json_client.call("<service>", "<Operation>", ...)` (the standard-library client). A
function whose DynamoDB calls all name their table literally (`TableName=...resource("users")`)
is granted those tables only: the authorizer gets dynamodb:GetItem on `users`, nothing else.
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

from chalicelib.aws import resources
from chalicelib.core.settings import APP_NAME, resource_name

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY_STAGES = ("dev", "prod")
# Every Lambda, by its Chalice config name, and the module whose import closure is its code.
# (app.py imports everything: the API handler's closure; the others are entered through app.py,
# whose module-level code only registers routes and handlers.)
FUNCTIONS: dict[str, str] = {
    "api_handler": "app",
    "jwt_auth": "chalicelib.web.authorizer",
    "cleanup": "chalicelib.ops.janitor",
    "catchup_worker": "chalicelib.catchup.worker",
}

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
# The key prefix the code writes under, per bucket (chalicelib.catchup.uploads.PREFIX); the
# recorded calls in tests/deploy prove every key the code touches starts with it.
OBJECT_KEY_PREFIXES = {"audio": "uploads/"}
SCOPED_SERVICES = ("dynamodb", "s3", "sqs", "ssm", "logs")


# --- operations -> actions -----------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    service: str
    operation: str
    site: str  # "chalicelib/aws/store.py:84"
    table: str | None = None  # a DynamoDB call's table suffix, when the source names it literally


@dataclass
class Scan:
    calls: list[Call] = field(default_factory=list)
    transact_kinds: set[str] = field(default_factory=set)
    sqs_subscriptions: list[str] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)
    module_level: list[Call] = field(default_factory=list)  # run at import, by every function

    @property
    def operations(self) -> set[tuple[str, str]]:
        return {(c.service, c.operation) for c in self.calls}


def actions_for(service: str, operation: str, transact_kinds: Iterable[str] = ()) -> set[str]:
    """The IAM actions one API operation needs."""
    if (service, operation) == ("dynamodb", "TransactWriteItems"):
        kinds = set(transact_kinds) or set(TRANSACT_WRITE_ACTIONS)
        return {TRANSACT_WRITE_ACTIONS[kind] for kind in kinds}
    return set(ACTION_EXCEPTIONS.get((service, operation), (f"{service}:{operation}",)))


def required_actions(scan: Scan, event_source: bool | None = None) -> set[str]:
    """What the scanned code calls, plus the poller's actions for a queue-subscribed function."""
    actions = set(LOG_ACTIONS)
    for service, operation in scan.operations:
        actions |= actions_for(service, operation, scan.transact_kinds)
    if scan.sqs_subscriptions if event_source is None else event_source:
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


def module_name(path: str) -> str:
    """`chalicelib/billing/checkout.py` -> `chalicelib.billing.checkout`; `app.py` -> `app`."""
    name = path[: -len(".py")].replace(os.sep, ".").replace("/", ".")
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


def _imported(tree: ast.Module, known: set[str]) -> set[str]:
    """Our modules a module imports, anywhere in it (deferred imports inside functions too)."""
    found: set[str] = set()

    def add(name: str) -> None:
        parts = name.split(".")
        for end in range(1, len(parts) + 1):  # importing a.b.c runs a, a.b and a.b.c
            if ".".join(parts[:end]) in known:
                found.add(".".join(parts[:end]))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            add(node.module)
            for alias in node.names:
                add(f"{node.module}.{alias.name}")
    return found


def _app_modules_for(function: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The modules app.py imports for one of its Lambdas.

    app.py defines every Lambda; each runs app.py's module-level code (routes and handlers
    are only registered there) and then its own handler. So a function needs what app.py's
    module level and its own handler use, never what another Lambda's handler body uses
    (the API handler never runs `catchup_jobs.handle_event`).
    """
    others = set(FUNCTIONS) - {function}
    aliases: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                target = f"{node.module}.{alias.name}"
                aliases[alias.asname or alias.name] = target if target in known else node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]
    skipped: set[int] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in others:
            skipped |= {id(inner) for statement in node.body for inner in ast.walk(statement)}
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in skipped}
    return {module for alias, module in aliases.items() if alias in used and module in known}


def import_closure(entry: str, root: str = ROOT, function: str = "api_handler") -> set[str]:
    """Every module of ours that `function`, entered through module `entry`, can load."""
    modules = {module_name(path): tree for path, tree in _sources(root)}
    known = set(modules)
    if entry == "app":
        closure, pending = {"app"}, sorted(_app_modules_for(function, modules["app"], known))
    else:
        closure, pending = set(), [entry]
    while pending:
        name = pending.pop()
        if name in closure or name not in modules:
            continue
        closure.add(name)
        pending += sorted(_imported(modules[name], known) - closure)
    return closure


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


def _table_of(node: ast.AST | None) -> str | None:
    """`users` for `store.table_name("users")` or `settings.resource("users")`; None otherwise."""
    if isinstance(node, ast.Call) and _callee_name(node.func) in ("table_name", "resource") and node.args:
        return _constant_str(node.args[0])
    return None


def _json_client_call(node: ast.Call) -> tuple[str | None, str | None, str | None] | None:
    """(service, operation, table) of `json_client.call("<service>", "<Operation>", {...})`, the
    standard-library client (chalicelib.aws.json_client); None for any other call."""
    if not (isinstance(node.func, ast.Attribute) and node.func.attr == "call"
            and _callee_name(node.func.value) == "json_client"):
        return None
    service, operation = (_constant_str(arg) for arg in (list(node.args) + [None, None])[:2])
    table = None
    if len(node.args) > 2 and isinstance(node.args[2], ast.Dict):
        for key, value in zip(node.args[2].keys, node.args[2].values, strict=True):
            if key is not None and _constant_str(key) == "TableName":
                table = _table_of(value)
    return service, operation, table


def _is_sqs_subscription(decorator: ast.AST) -> bool:
    return isinstance(decorator, ast.Call) and _callee_name(decorator.func) == "on_sqs_message"


def scan(root: str = ROOT, modules: set[str] | None = None) -> Scan:
    """Every AWS operation the deployed code calls (only in `modules`, when given).

    A name bound to a client anywhere in a module counts as that client in the whole
    module: a deliberate over-approximation (the policy may only ever grow from it).
    """
    sources = _sources(root)
    resolver = _Resolver(_find_factories(sources))
    result = Scan()
    for path, tree in sources:
        if modules is not None and module_name(path) not in modules:
            continue
        bindings = _bindings(tree, resolver, {})
        in_functions = {id(inner) for function in _functions(tree) for inner in ast.walk(function)}
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
                found: list[Call] = []
                declared = _json_client_call(node)
                if declared is not None:
                    service, operation, table = declared
                    if service is None or operation is None:
                        result.unresolved.append(f"{path}:{node.lineno} json_client.call (name the service "
                                                 "and operation literally)")
                    else:
                        found.append(Call(service, operation, f"{path}:{node.lineno}", table))
                for service in sorted(resolver.services(node.func.value, bindings)):
                    operation = _operation_of(service, node.func.attr, node)
                    if operation is None:
                        result.unresolved.append(f"{path}:{node.lineno} {service}.{node.func.attr}")
                    elif operation is not False:
                        table = next((_table_of(k.value) for k in node.keywords if k.arg == "TableName"), None)
                        found.append(Call(service, operation, f"{path}:{node.lineno}", table))
                result.calls += found
                if id(node) not in in_functions:
                    result.module_level += found
    return result


# --- rendering -----------------------------------------------------------------------------


def stage_names(stage: str, root: str = ROOT) -> dict[str, str]:
    """{suffix: physical name} of a stage's resources, with the stage's `<NAME>_TABLE`-style
    overrides from .chalice/config.json applied (a table restored from a backup has a new name)."""
    from chalicelib.aws.resources import RESOURCE_ENV_VARS

    environment: dict[str, str] = {}
    path = os.path.join(root, ".chalice", "config.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            environment = json.load(handle).get("stages", {}).get(stage, {}).get("environment_variables", {})
    names = {suffix: resource_name(stage, suffix) for suffix in RESOURCE_ENV_VARS.values()}
    names.update({suffix: environment[var] for var, suffix in RESOURCE_ENV_VARS.items() if environment.get(var)})
    return names


def function_name(stage: str, function: str) -> str:
    """`chalice deploy` names the API handler `<app>-<stage>` and the others `<app>-<stage>-<name>`
    (and `make package` gives the packaged functions the same names)."""
    return f"{APP_NAME}-{stage}" if function == "api_handler" else f"{APP_NAME}-{stage}-{function}"


def _arns(stage: str, function: str | None = None, root: str = ROOT,
          tables_used: Iterable[str] | None = None) -> dict[str, Any]:
    names = stage_names(stage, root)
    dead_letter_queues = {q.dead_letter for q in resources.QUEUES if q.dead_letter}
    scoped = [t for t in resources.TABLES if tables_used is None or t.suffix in set(tables_used)]
    tables = [f"arn:aws:dynamodb:*:*:table/{names[t.suffix]}" for t in scoped]
    indexes = [f"arn:aws:dynamodb:*:*:table/{names[t.suffix]}/index/*" for t in scoped if t.indexes]
    if function is None:  # any of the stage's functions
        log_groups = [f"/aws/lambda/{APP_NAME}-{stage}", f"/aws/lambda/{APP_NAME}-{stage}-*"]
    else:
        log_groups = [f"/aws/lambda/{function_name(stage, function)}"]
    return {
        "dynamodb": tables + indexes,
        "s3_objects": [
            f"arn:aws:s3:::{names[b.suffix]}/{OBJECT_KEY_PREFIXES[b.suffix]}*" for b in resources.BUCKETS
        ],
        "s3_buckets": [f"arn:aws:s3:::{names[b.suffix]}" for b in resources.BUCKETS],
        "sqs": [
            f"arn:aws:sqs:*:*:{names[q.suffix]}" for q in resources.QUEUES if q.suffix not in dead_letter_queues
        ],
        "ssm": [f"arn:aws:ssm:*:*:parameter{ssm_prefix(stage)}*"],
        "logs": [f"arn:aws:logs:*:*:log-group:{group}:*" for group in log_groups],
    }


def ssm_prefix(stage: str) -> str:
    """Where a stage's secrets live in Parameter Store (SECRETS_SSM_PREFIX)."""
    return f"/{APP_NAME}/{stage}/"


def render_policy(stage: str, actions: Iterable[str], function: str | None = None,
                  root: str = ROOT, tables: Iterable[str] | None = None) -> dict[str, Any]:
    """The policy document granting `actions`, each on our resources of its service only
    (and CloudWatch Logs on `function`'s own log group, when given; DynamoDB on `tables`
    only, when given, else on every table)."""
    by_service: dict[str, set[str]] = {}
    for action in actions:
        service = action.split(":", 1)[0]
        if service not in SCOPED_SERVICES:
            raise ValueError(
                f"{action}: no resource scope is defined for {service!r}; add one to infra/policy.py"
            )
        by_service.setdefault(service, set()).add(action)
    arns = _arns(stage, function, root, tables)
    statements: list[dict[str, Any]] = []

    def allow(sid: str, granted: Iterable[str], resource: list[str], **extra: Any) -> None:
        granted = sorted(granted)
        if granted:
            statements.append(
                {"Sid": sid, "Effect": "Allow", "Action": granted, "Resource": resource, **extra}
            )

    allow("Logs", by_service.get("logs", ()), arns["logs"])
    allow("Tables", by_service.get("dynamodb", ()), arns["dynamodb"])
    statements.append({  # the audit log is append-only, whatever the code does (chalicelib.ops.audit)
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


def _function_scan(function: str, root: str = ROOT) -> tuple[Scan, bool]:
    """One function's calls (its import closure, plus what runs at import), and whether it
    is subscribed to a queue."""
    everything = scan(root)
    subscribed = {site.rsplit(":", 1)[1] for site in everything.sqs_subscriptions}
    own = scan(root, import_closure(FUNCTIONS[function], root, function))
    own.calls += everything.module_level  # every Lambda imports app.py, hence every module
    return own, function in subscribed


def function_actions(function: str, root: str = ROOT) -> set[str]:
    """The actions one function's code needs (its import closure, and its event source)."""
    own, subscribed = _function_scan(function, root)
    return required_actions(own, event_source=subscribed)


def function_tables(function: str, root: str = ROOT) -> set[str] | None:
    """The tables a function's DynamoDB calls name, when every one of them names its table
    literally (the authorizer's one GetItem); None (every table) otherwise."""
    own, _ = _function_scan(function, root)
    tables = [call.table for call in own.calls if call.service == "dynamodb"]
    return None if None in tables else set(tables)


def expected_policy(stage: str, function: str, root: str = ROOT) -> dict[str, Any]:
    return render_policy(stage, function_actions(function, root), function, root, function_tables(function, root))


def policy_file(stage: str, function: str) -> str:
    """The name Chalice's `iam_policy_file` gives, relative to .chalice/."""
    return f"policy-{stage}-{function}.json"


def policy_path(stage: str, function: str, root: str = ROOT) -> str:
    return os.path.join(root, ".chalice", policy_file(stage, function))


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


def write(stage: str, function: str, root: str = ROOT) -> dict[str, Any]:
    policy = expected_policy(stage, function, root)
    with open(policy_path(stage, function, root), "w", encoding="utf-8") as handle:
        json.dump(policy, handle, indent=2)
        handle.write("\n")
    return policy
