"""`python -m infra <command>`: the stack on a laptop and on AWS.

  bootstrap [--stage S]            create missing tables, bucket and queues at the endpoint
  template --stage S [--out F]     the stage's CloudFormation template (JSON)
  policy [--stage S] --check|--write
                                   compare/regenerate .chalice/policy-<stage>-<function>.json from the code
  package --stage S [--out DIR]    build/<stage>/: sam.json, deployment.zip, infra.json
  deploy --stage S [--infra-only]  infra stack, chalice deploy, gateway responses, monitoring, URLs
  rollback --stage S --ref REF     the app code of a git ref, with the stage's saved deploy state
  dlq --stage S [--redrive] [--drop-finished] [--limit N]
                                   list the catch-up dead letters; move them back to the queue
"""
from __future__ import annotations

import argparse
import json
import os
import sys


def _bootstrap(args: argparse.Namespace) -> int:
    os.environ["STAGE"] = args.stage
    from chalicelib.core.settings import load_settings, reset_settings
    from infra.bootstrap import bootstrap

    reset_settings()
    env = dict(os.environ)
    env.setdefault("JWT_SECRET", "bootstrap-does-not-issue-tokens-" + "x" * 16)
    created = bootstrap(load_settings(env))
    print(json.dumps({"stage": args.stage, "created": created}))
    return 0


def _template(args: argparse.Namespace) -> int:
    from infra.template import render

    text = json.dumps(render(args.stage), indent=2) + "\n"
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text)
    else:
        sys.stdout.write(text)
    return 0


def _policy(args: argparse.Namespace) -> int:
    from infra import policy

    stages = [args.stage] if args.stage else list(policy.DEPLOY_STAGES)
    status = 0
    for stage in stages:
        for function in policy.FUNCTIONS:
            path = policy.policy_path(stage, function)
            if args.write:
                policy.write(stage, function)
                print(f"wrote {path}")
                continue
            with open(path, encoding="utf-8") as handle:
                current = json.load(handle)
            difference = policy.describe_difference(current, policy.expected_policy(stage, function))
            if difference:
                print(f"{path} differs from the code:\n{difference}")
                status = 1
            else:
                print(f"{path}: in step with the code")
    return status


def _package(args: argparse.Namespace) -> int:
    from infra.deploy import package

    if not (os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")):
        # chalice needs a region to build; the artefacts are region-independent (${AWS::Region}).
        os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
    package(args.stage, args.out)
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from infra.deploy import rollback

    rollback(args.stage, args.ref)
    return 0


def _dlq(args: argparse.Namespace) -> int:
    from infra import dlq

    report = dlq.run(args.stage, redrive=args.redrive, drop_finished=args.drop_finished, limit=args.limit)
    for line in report:
        print(json.dumps(line))
    return 0


def _deploy(args: argparse.Namespace) -> int:
    from infra.deploy import deploy

    deploy(args.stage, infra_only=args.infra_only)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra")
    sub = parser.add_subparsers(dest="command", required=True)

    boot = sub.add_parser("bootstrap", help="create missing tables, buckets and queues")
    boot.add_argument("--stage", default=os.environ.get("STAGE", "local"))
    boot.set_defaults(handler=_bootstrap)

    tmpl = sub.add_parser("template", help="print the stage's CloudFormation template")
    tmpl.add_argument("--stage", required=True)
    tmpl.add_argument("--out")
    tmpl.set_defaults(handler=_template)

    pol = sub.add_parser("policy", help="check or regenerate the IAM policy files")
    pol.add_argument("--stage", help="one stage (default: every deployable stage)")
    mode = pol.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 when a file differs (default)")
    mode.add_argument("--write", action="store_true", help="rewrite the files from the code")
    pol.set_defaults(handler=_policy)

    pkg = sub.add_parser("package", help="build the deployment artefacts for a pipeline")
    pkg.add_argument("--stage", required=True)
    pkg.add_argument("--out", help="output directory (default build/<stage>)")
    pkg.set_defaults(handler=_package)

    dep = sub.add_parser("deploy", help="deploy the stage to AWS")
    dep.add_argument("--stage", required=True)
    dep.add_argument("--infra-only", action="store_true", help="only the infrastructure stack")
    dep.set_defaults(handler=_deploy)

    back = sub.add_parser("rollback", help="redeploy the app code of a git ref")
    back.add_argument("--stage", required=True)
    back.add_argument("--ref", required=True, help="git tag or commit")
    back.set_defaults(handler=_rollback)

    dead = sub.add_parser("dlq", help="inspect (and redrive) the catch-up dead-letter queue")
    dead.add_argument("--stage", required=True)
    dead.add_argument("--redrive", action="store_true", help="send unfinished jobs' messages back to the queue")
    dead.add_argument("--drop-finished", action="store_true", help="delete messages of jobs already final")
    dead.add_argument("--limit", type=int, default=100)
    dead.set_defaults(handler=_dlq)

    args = parser.parse_args(argv)
    from infra.deploy import DeployError

    try:
        return args.handler(args)
    except DeployError as error:
        sys.stderr.write(f"error: {error}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
