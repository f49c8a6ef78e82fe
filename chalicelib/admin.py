"""Operator command: give or take the admin role.

    python -m chalicelib.admin grant-admin EMAIL --stage dev
    python -m chalicelib.admin revoke-admin EMAIL --stage prod [--region eu-west-1] [--profile ops]

The role is the `role` attribute of the user item, and this command is the only thing that
ever sets it to `admin` (registration always writes `user`, whatever the email). It talks
to DynamoDB with the operator's own AWS credentials (profile, environment, SSO: the usual
boto3 chain) and honours AWS_ENDPOINT_URL, so the same command works against the local
stack of `make run` and against a real stage. Table names derive from the stage exactly as
the app derives them (`USERS_TABLE` / `EMAILS_TABLE` override them, as for the app).

The role travels in the access token (chalicelib.tokens issues it from the user item, the
authorizer passes it to routes as context), so it takes effect when the user next logs in
or refreshes their session. A revoked admin's current access token keeps working as admin
until it expires (ACCESS_TOKEN_TTL_SECONDS, 15 minutes by default).
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

from chalicelib import logs
from chalicelib.resources import RESOURCE_ENV_VARS
from chalicelib.settings import resource_name

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


def main(argv: Sequence[str] | None = None) -> int:
    # JSON lines on stderr (an audit trail an operator can ship); the answer stays on stdout.
    logs.configure(stream_name="stderr")
    logs.request_context.set({"function": "admin"})
    parser = argparse.ArgumentParser(prog="python -m chalicelib.admin", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("email")
    parser.add_argument("--stage", default=os.environ.get("STAGE") or None, required=not os.environ.get("STAGE"),
                        help="the stage whose tables to change (local, dev, prod)")
    parser.add_argument("--region", help="AWS region (default: AWS_REGION / AWS_DEFAULT_REGION)")
    parser.add_argument("--profile", help="AWS profile for the operator's credentials")
    args = parser.parse_args(argv)
    if not EMAIL.fullmatch(args.email.strip()):
        parser.error("EMAIL does not look like an email address")
    role = COMMANDS[args.command]
    try:
        user_id, previous = set_role(_client(args.region, args.profile), args.stage, args.email, role)
    except LookupError as error:
        logs.log_event(logger, "admin.role_change_refused", logging.WARNING, command=args.command,
                       stage=args.stage, reason=str(error))
        sys.stderr.write(f"{args.command}: {error} (stage {args.stage})\n")
        return EXIT_NOT_FOUND
    logs.log_event(logger, "admin.role_changed", command=args.command, stage=args.stage,
                   user_id=user_id, previous_role=previous, role=role)
    change = "unchanged" if previous == role else f"{previous} -> {role}"
    sys.stdout.write(
        f"{args.command}: user {user_id} on stage {args.stage}: role {change}.\n"
        "The new role reaches the API with the user's next login or session refresh; "
        "access tokens already issued keep their old role until they expire.\n"
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
