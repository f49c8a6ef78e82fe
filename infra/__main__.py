"""`python -m infra bootstrap [--stage STAGE]`: create missing resources at the endpoint."""
from __future__ import annotations

import argparse
import json
import os

from infra.bootstrap import bootstrap


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m infra")
    sub = parser.add_subparsers(dest="command", required=True)
    boot = sub.add_parser("bootstrap", help="create missing tables, buckets and queues")
    boot.add_argument("--stage", default=os.environ.get("STAGE", "local"))
    args = parser.parse_args(argv)

    os.environ["STAGE"] = args.stage
    from chalicelib.settings import reset_settings, load_settings

    reset_settings()
    env = dict(os.environ)
    env.setdefault("JWT_SECRET", "bootstrap-does-not-issue-tokens-" + "x" * 16)
    created = bootstrap(load_settings(env))
    print(json.dumps({"stage": args.stage, "created": created}))


if __name__ == "__main__":
    main()
