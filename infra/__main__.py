"""`python -m infra <command>`: the stack on a laptop and on AWS.

  bootstrap [--stage S]            create missing tables, bucket and queues at the endpoint
  template --stage S [--out F]     the stage's CloudFormation template (JSON)
  policy [--stage S] --check|--write
                                   compare/regenerate .chalice/policy-<stage>.json from the code
  package --stage S [--out DIR]    build/<stage>/: sam.json, deployment.zip, infra.json
  deploy --stage S [--infra-only]  infra stack, chalice deploy, gateway responses, URLs
"""
from __future__ import annotations

import argparse
import json
import os
import sys


def _bootstrap(args: argparse.Namespace) -> int:
    os.environ["STAGE"] = args.stage
    from chalicelib.settings import load_settings, reset_settings
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
        if args.write:
            policy.write(stage)
            print(f"wrote {policy.policy_path(stage)}")
            continue
        with open(policy.policy_path(stage), encoding="utf-8") as handle:
            current = json.load(handle)
        difference = policy.describe_difference(current, policy.expected_policy(stage))
        if difference:
            print(f"{policy.policy_path(stage)} differs from the code:\n{difference}")
            status = 1
        else:
            print(f"{policy.policy_path(stage)}: in step with the code")
    return status


def _package(args: argparse.Namespace) -> int:
    from infra.deploy import package

    package(args.stage, args.out)
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

    args = parser.parse_args(argv)
    from infra.deploy import DeployError

    try:
        return args.handler(args)
    except DeployError as error:
        sys.stderr.write(f"error: {error}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
