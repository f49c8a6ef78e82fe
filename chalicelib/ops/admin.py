"""Operator command: the admin role, and every action of the operator console.

    python -m chalicelib.ops.admin grant-admin EMAIL --stage dev
    python -m chalicelib.ops.admin revoke-admin EMAIL --stage prod [--region eu-west-1] [--profile ops]
    python -m chalicelib.ops.admin find EMAIL-OR-ID | show USER_ID | ledger USER_ID [--limit N]
    python -m chalicelib.ops.admin grant|deduct USER_ID CREDITS --reason TEXT [--idempotency-key K]
    python -m chalicelib.ops.admin suspend|reactivate USER_ID --reason TEXT
    python -m chalicelib.ops.admin refund TRANSACTION_ID --reason TEXT [--amount CENTS]
    python -m chalicelib.ops.admin attention | audit [--target USER_ID] [--export] | business [--days N]
    python -m chalicelib.ops.admin migrate-stats --stage prod   (once, the day after a deploy that needs it)
    python -m chalicelib.ops.admin expire-reservations --stage prod   (once, after the same deploy)

Console actions run chalicelib.ops.support, exactly what the `/admin/api` routes run, and are
audited with the actor `cli:<login>`. They print the same JSON the API answers. With
`make run` up and no --stage, the command uses its stack (endpoint and sandbox Stripe, read
from the git-ignored `.local/devstack.json` that `make run` writes), so `make admin
ARGS="find someone@example.com"` needs no environment at all.

The role is the `role` attribute of the user item, and this command is the only thing that
ever sets it to `admin` (registration always writes `user`, whatever the email). It talks
to DynamoDB with the operator's own AWS credentials (profile, environment, SSO: the usual
boto3 chain) and honours AWS_ENDPOINT_URL, so the same command works against the local
stack of `make run` and against a real stage. Table names derive from the stage exactly as
the app derives them (`USERS_TABLE` / `EMAILS_TABLE` override them, as for the app).

The authorizer reads the role from the user item (with its account check) and passes it to
routes as context, so a grant or a revocation reaches every token of the user within the
authorizer's cache time (AUTHORIZER_TTL_SECONDS, 5 minutes by default).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import secrets
import sys
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

from chalicelib.core import logs
from chalicelib.aws.resources import RESOURCE_ENV_VARS
from chalicelib.core.settings import resource_name

ADMIN, USER = "admin", "user"
COMMANDS = {"grant-admin": ADMIN, "revoke-admin": USER}
EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,190}\.[^@\s]{1,63}")
EXIT_OK, EXIT_NOT_FOUND, EXIT_USAGE = 0, 1, 2

logger = logging.getLogger(__name__)


def table_name(stage: str, suffix: str, env: Mapping[str, str] | None = None) -> str:
    """The physical table name for a stage, honouring the app's `<SUFFIX>_TABLE` overrides."""
    env = os.environ if env is None else env
    for variable, target in RESOURCE_ENV_VARS.items():
        if target == suffix and env.get(variable):
            return env[variable]
    return resource_name(stage, suffix)


def _client(region: str | None, profile: str | None) -> Any:
    import boto3

    session = boto3.session.Session(profile_name=profile) if profile else boto3.session.Session()
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return session.client("dynamodb", region_name=region)


def set_role(ddb: Any, stage: str, email: str, role: str) -> tuple[str, str]:
    """Set the role of the account registered with `email`; returns (user_id, previous role).

    Raises LookupError when no active account has that email.
    """
    email = email.strip().lower()
    claim = ddb.get_item(TableName=table_name(stage, "emails"), Key={"email": {"S": email}},
                         ConsistentRead=True).get("Item")
    if not claim:
        raise LookupError("no account is registered with that email")
    user_id = claim["user_id"]["S"]
    try:
        response = ddb.update_item(
            TableName=table_name(stage, "users"),
            Key={"user_id": {"S": user_id}},
            UpdateExpression="SET #role = :role, role_updated_at = :now",
            ConditionExpression="attribute_exists(user_id) AND "
                                "(attribute_not_exists(is_active) OR is_active = :active)",
            ExpressionAttributeNames={"#role": "role"},
            ExpressionAttributeValues={
                ":role": {"S": role},
                ":now": {"S": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"},
                ":active": {"BOOL": True},
            },
            ReturnValues="ALL_OLD",  # the item as it was: its previous role
        )
    except ddb.exceptions.ConditionalCheckFailedException:
        raise LookupError("the account with that email is deleted or inactive") from None
    previous = response.get("Attributes", {}).get("role", {}).get("S", USER)
    return user_id, previous


SUPPORT_COMMANDS = ("find", "show", "ledger", "grant", "deduct", "suspend", "reactivate", "refund",
                    "attention", "audit", "business")
EXIT_REFUSED = 3
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def local_stack() -> dict[str, str] | None:
    """The environment `make run` wrote for operator tools (its endpoint, the sandbox Stripe),
    if a `make run` is up; None otherwise. The file is `devstack.json` in `make run`'s data
    folder (LOCAL_DATA_DIR, default `.local/` in the project); DEVSTACK_STATE_FILE names another."""
    folder = os.environ.get("LOCAL_DATA_DIR") or os.path.join(PROJECT_ROOT, ".local")
    path = os.environ.get("DEVSTACK_STATE_FILE") or os.path.join(folder, "devstack.json")
    try:
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
    except (OSError, ValueError):
        return None
    pid = state.get("pid")
    if not isinstance(pid, int) or not _alive(pid) or not isinstance(state.get("env"), dict):
        return None
    return {str(k): str(v) for k, v in state["env"].items()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--stage", default=None,
                        help="the stage whose tables to use (local, dev, prod); default: STAGE, "
                             "or local when `make run` is up")
    common.add_argument("--region", help="AWS region (default: AWS_REGION / AWS_DEFAULT_REGION)")
    common.add_argument("--profile", help="AWS profile for the operator's credentials")
    parser = argparse.ArgumentParser(prog="python -m chalicelib.ops.admin", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in sorted(COMMANDS):
        commands.add_parser(name, parents=[common], help=f"{name.split('-')[0]} the admin role").add_argument("email")
    commands.add_parser("find", parents=[common], help="find a user by e-mail or id").add_argument("query")
    commands.add_parser("show", parents=[common], help="a user's profile, balance, holds, flags, invariant") \
        .add_argument("user_id")
    ledger = commands.add_parser("ledger", parents=[common], help="a user's ledger, newest first")
    ledger.add_argument("user_id")
    ledger.add_argument("--limit", default="20")
    ledger.add_argument("--cursor")
    for name in ("grant", "deduct"):
        adjust = commands.add_parser(name, parents=[common], help=f"{name} credits with a reason")
        adjust.add_argument("user_id")
        adjust.add_argument("credits", type=int)
        adjust.add_argument("--reason", required=True)
        adjust.add_argument("--idempotency-key", help="makes a retried command a no-op")
    for name in ("suspend", "reactivate"):
        status = commands.add_parser(name, parents=[common], help=f"{name} an account")
        status.add_argument("user_id")
        status.add_argument("--reason", required=True)
    refund = commands.add_parser("refund", parents=[common], help="refund a purchase through Stripe")
    refund.add_argument("transaction_id")
    refund.add_argument("--reason", required=True)
    refund.add_argument("--amount", type=int, help="cents (default: all that is not refunded yet)")
    refund.add_argument("--idempotency-key")
    commands.add_parser("attention", parents=[common], help="what needs an operator")
    audit_log = commands.add_parser("audit", parents=[common], help="the audit log, newest first")
    audit_log.add_argument("--target", help="only entries about this user id")
    audit_log.add_argument("--limit", default="50")
    audit_log.add_argument("--export", action="store_true", help="the whole log as CSV")
    business = commands.add_parser("business", parents=[common], help="revenue, costs, users, credits by day")
    business.add_argument("--days", default="30")
    commands.add_parser("migrate-stats", parents=[common],
                        help="copy the analytics day counters of the layout before days#<n> (docs/operations.md)")
    commands.add_parser("expire-reservations", parents=[common],
                        help="give closed reservations written before they expired their expiry (docs/operations.md)")
    return parser


def _environment(args: argparse.Namespace) -> str | None:
    """Apply the stage and the local stack's endpoint; returns the stage (None: unknown)."""
    stage = args.stage or os.environ.get("STAGE")
    local = local_stack() if stage in (None, "local") else None
    if local is not None:
        for name, value in local.items():
            os.environ.setdefault(name, value)
        stage = stage or "local"
    if args.profile:
        os.environ["AWS_PROFILE"] = args.profile
    if args.region:
        os.environ["AWS_REGION"] = os.environ["AWS_DEFAULT_REGION"] = args.region
    if stage:
        os.environ["STAGE"] = stage
    # The command never issues or verifies a token: it needs no JWT secret (and should not
    # fetch one); a throwaway value satisfies the settings without the local warning.
    os.environ.setdefault("JWT_SECRET", secrets.token_urlsafe(48))
    return stage


def _support(args: argparse.Namespace) -> Any:
    """Run one support action as the operator (audited as `cli:<login>`); its JSON answer."""
    import getpass

    from chalicelib.ops import audit
    from chalicelib.ops import support
    from chalicelib.core.validation import validate

    actor = audit.Actor(f"cli:{getpass.getuser()}")
    if args.command == "find":
        return support.find_users(actor, {"q": args.query})
    if args.command == "show":
        return support.user_detail(actor, args.user_id)
    if args.command == "ledger":
        return support.user_ledger(actor, args.user_id, {"limit": args.limit, "cursor": args.cursor or ""})
    if args.command in ("grant", "deduct"):
        body = validate(support.ADJUST_SCHEMA, {"credits": args.credits, "reason": args.reason})
        return support.adjust_credits(actor, args.user_id, args.command, body, args.idempotency_key)
    if args.command in ("suspend", "reactivate"):
        reason = validate(support.STATUS_SCHEMA, {"reason": args.reason})["reason"]
        return support.set_status(actor, args.user_id, "suspended" if args.command == "suspend" else "active",
                                  reason)
    if args.command == "refund":
        body = validate(support.REFUND_SCHEMA, {"reason": args.reason, "amount": args.amount})
        return support.refund(actor, args.transaction_id, body, args.idempotency_key)
    if args.command == "attention":
        return support.attention(actor)
    if args.command == "audit":
        if args.export:
            return support.audit_export(actor)
        return support.audit_log(actor, {"limit": args.limit, "target": args.target or ""})
    return support.business(actor, {"days": args.days})


def main(argv: Sequence[str] | None = None) -> int:
    # JSON lines on stderr (an audit trail an operator can ship); the answer stays on stdout.
    logs.configure(stream_name="stderr")
    logs.request_context.set({"function": "admin"})
    parser = _parser()
    args = parser.parse_args(argv)
    stage = _environment(args)
    if not stage:
        parser.error("--stage is required (or STAGE, or a running `make run`)")
    if args.command in COMMANDS:
        return _set_role_command(parser, args, stage)
    if args.command in ("migrate-stats", "expire-reservations"):
        from chalicelib.credits import stats
        from chalicelib.ops import migrations

        run = stats.migrate_legacy_days if args.command == "migrate-stats" else migrations.expire_closed_reservations
        sys.stdout.write(json.dumps(run()) + "\n")
        return EXIT_OK
    from chalicelib.core import jsonutil
    from chalicelib.core.errors import BadRequest, DomainError, NotFound, ValidationFailed

    try:
        answer = _support(args)
    except DomainError as error:
        sys.stderr.write(f"{args.command}: {error.message} ({error.code})\n")
        return EXIT_NOT_FOUND if isinstance(error, NotFound) \
            else EXIT_USAGE if isinstance(error, (BadRequest, ValidationFailed)) else EXIT_REFUSED
    sys.stdout.write(answer if isinstance(answer, str) else json.dumps(jsonutil.plain(answer), indent=2) + "\n")
    return EXIT_OK


def _set_role_command(parser: argparse.ArgumentParser, args: argparse.Namespace, stage: str) -> int:
    if not EMAIL.fullmatch(args.email.strip()):
        parser.error("EMAIL does not look like an email address")
    role = COMMANDS[args.command]
    try:
        user_id, previous = set_role(_client(args.region, args.profile), stage, args.email, role)
    except LookupError as error:
        logs.log_event(logger, "admin.role_change_refused", logging.WARNING, command=args.command,
                       stage=stage, reason=str(error))
        sys.stderr.write(f"{args.command}: {error} (stage {stage})\n")
        return EXIT_NOT_FOUND
    logs.log_event(logger, "admin.role_changed", command=args.command, stage=stage,
                   user_id=user_id, previous_role=previous, role=role)
    change = "unchanged" if previous == role else f"{previous} -> {role}"
    sys.stdout.write(
        f"{args.command}: user {user_id} on stage {stage}: role {change}.\n"
        "The new role reaches the API with the user's next login or session refresh; "
        "access tokens already issued keep their old role until they expire.\n"
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
