"""The deployment package's dependencies: installed for Lambda, trimmed, compiled.

`chalice package`/`chalice deploy` would pip-install requirements.txt into the zip as
source only. Instead, `vendor(build_dir)` installs them into the build directory's
`vendor/` (chalice copies it to the zip's root as it is) and leaves an empty
requirements.txt, after two changes (docs/performance.md weighs them):

- **botocore keeps the models of the services the code calls** (infra.policy's scan finds
  them: dynamodb, s3, sqs, ssm) and drops the other ~445 (80% of the old 20 MiB zip). A new
  service in the code is found by the same scan, so the package follows; a service reached
  some other way would fail with UnknownServiceError, which tests/deploy checks cannot
  happen for the routes. boto3 stays in the package although the runtime has one: the
  deployed SDK is then the tested, pinned one.
- **Modules are compiled** for the runtime's Python (3.11, the pyc magic number must
  match) with `unchecked-hash` invalidation: the files in /var/task never change, so Python
  loads the .pyc without looking at the source, and a cold start no longer compiles
  (59% of its instructions before). Sources stay in the zip for tracebacks. Every module is
  compiled except stripe's: of its ~1,000 generated modules the app loads about 60 (its
  client loads services and object classes lazily), so only those loaded by STRIPE_PROBE
  (the services chalicelib/billing calls) are compiled; compiling all of them would add
  3 MiB to the zip. One the probe misses is compiled when first loaded, as before.

The finished dependencies are cached in build/.vendor-cache, keyed by the lock, the services
kept, this file and the Python: the next build of the same lock copies them (seconds)
instead of installing them again.
"""
from __future__ import annotations

import compileall
import hashlib
import importlib.util
import json
import os
import py_compile
import shutil
import subprocess
import sys
import tempfile

import chalice
import chalice.app

from infra import policy

RUNTIME_PYTHON = (3, 11)
PLATFORM = "manylinux2014_x86_64"
BOTOCORE_KEEP_FILES = ("_retry.json", "endpoints.json", "partitions.json", "sdk-default-configuration.json")
VENDOR = "vendor"
CACHE_DIR = os.path.join(policy.ROOT, "build", ".vendor-cache")  # build/ is not tracked


def used_services(root: str = policy.ROOT) -> set[str]:
    """The AWS services the app's code creates clients for (infra.policy's static scan)."""
    return {service for service, _ in policy.scan(root).operations}


def install(requirements: str, target: str) -> None:
    """pip-install `requirements` for the Lambda runtime (manylinux wheels, CPython 3.11)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
         "--target", target, "--platform", PLATFORM, "--implementation", "cp",
         "--python-version", "%d.%d" % RUNTIME_PYTHON, "--only-binary=:all:", "-r", requirements],
        check=True,
    )


def trim_botocore(target: str, services: set[str]) -> list[str]:
    """Drop the models of every service not in `services`; the names dropped."""
    data = os.path.join(target, "botocore", "data")
    dropped = []
    for name in sorted(os.listdir(data)):
        path = os.path.join(data, name)
        if os.path.isdir(path) and name not in services:
            shutil.rmtree(path)
            dropped.append(name)
        elif os.path.isfile(path) and name not in BOTOCORE_KEEP_FILES:
            os.remove(path)
    for root, _, files in os.walk(data):
        for name in files:
            if name.startswith("examples-"):  # documentation only
                os.remove(os.path.join(root, name))
    return dropped


def compile_tree(path: str) -> None:
    """Compile every module under `path` next to its source (__pycache__), unchecked-hash."""
    if not compileall.compile_dir(path, quiet=1, workers=1,
                                  invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH):
        raise RuntimeError(f"some modules under {path} do not compile")


def _compile_file(source: str, cfile: str) -> None:
    py_compile.compile(source, cfile=cfile, doraise=True,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)


def pyc_name(module: str) -> str:
    return f"{module}.cpython-{RUNTIME_PYTHON[0]}{RUNTIME_PYTHON[1]}.pyc"


# What chalicelib/billing touches of stripe (tests/deploy checks the list against the code).
STRIPE_SERVICES = ("customers", "checkout.sessions", "billing_portal.sessions", "refunds")
STRIPE_PROBE = """
import json, sys
import stripe
client = stripe.StripeClient("sk_test_probe", http_client=stripe.RequestsClient())
for path in %r:
    service = client.v1
    for part in path.split("."):
        service = getattr(service, part)
stripe.Customer, stripe.checkout.Session, stripe.billing_portal.Session, stripe.Refund, stripe.StripeError
print(json.dumps(sorted(m.__file__ for m in list(sys.modules.values())
                        if getattr(m, "__file__", None) and m.__name__.startswith("stripe"))))
""" % (STRIPE_SERVICES,)


def stripe_modules_loaded(target: str) -> list[str]:
    """The files of the stripe modules the app's Stripe calls load (run in a fresh interpreter)."""
    done = subprocess.run([sys.executable, "-S", "-B", "-c", STRIPE_PROBE], capture_output=True, text=True,
                          check=True, env={"PYTHONPATH": target, "PATH": os.environ.get("PATH", "")})
    return json.loads(done.stdout.strip().splitlines()[-1])


def _cache_key(requirements: str, services: set[str]) -> str:
    """What the vendored dependencies are a function of: the locked requirements, the services
    kept, this module (how they are trimmed and compiled) and the Python compiling them."""
    digest = hashlib.sha256()
    for path in (requirements, __file__):
        with open(path, "rb") as handle:
            digest.update(handle.read() + b"\0")
    digest.update(",".join(sorted(services)).encode() + b"\0" + sys.version.encode())
    return digest.hexdigest()[:32]


def vendor(build_dir: str, requirements: str, cache_dir: str | None = CACHE_DIR) -> bool:
    """Fill `build_dir`'s vendor/ and compile its app; requirements.txt is left empty.

    The dependencies, once installed, trimmed and compiled, are kept in `cache_dir` under a
    key of everything they depend on (`_cache_key`), so the next build of the same lock
    (a deploy after a package, a rollback) copies them instead of installing again. Returns
    whether they came from the cache. The app's own modules are compiled every time.
    """
    if sys.version_info[:2] != RUNTIME_PYTHON:
        raise RuntimeError("the package must be built with Python %d.%d, the Lambda runtime's" % RUNTIME_PYTHON)
    target = os.path.join(build_dir, VENDOR)
    services = used_services(build_dir)
    cached = os.path.join(cache_dir, _cache_key(requirements, services)) if cache_dir else None
    hit = cached is not None and os.path.isdir(cached)
    if hit:
        shutil.copytree(cached, target)
    else:
        _vendor_dependencies(requirements, target, services)
        if cached is not None:
            os.makedirs(cache_dir, exist_ok=True)
            scratch = tempfile.mkdtemp(prefix=".partial-", dir=cache_dir)
            shutil.copytree(target, os.path.join(scratch, VENDOR))
            try:
                os.rename(os.path.join(scratch, VENDOR), cached)  # atomic: a cache entry is whole or absent
            except OSError:
                pass  # another build stored the same entry first
            shutil.rmtree(scratch, ignore_errors=True)
    _compile_app(build_dir, target)
    with open(os.path.join(build_dir, "requirements.txt"), "w", encoding="utf-8") as handle:
        handle.write("# vendored by infra/slim.py\n")
    return hit


def _vendor_dependencies(requirements: str, target: str, services: set[str]) -> None:
    """Install the requirements for the runtime into `target`, trim botocore, compile."""
    install(requirements, target)
    shutil.rmtree(os.path.join(target, "bin"), ignore_errors=True)  # console scripts
    trim_botocore(target, services)
    for name in os.listdir(target):
        if name != "stripe":
            path = os.path.join(target, name)
            if os.path.isdir(path):
                compile_tree(path)
            elif name.endswith(".py"):
                _compile_file(path, os.path.join(target, "__pycache__", pyc_name(name[:-3])))
    for source in stripe_modules_loaded(target):
        _compile_file(source, importlib.util.cache_from_source(source))


def _compile_app(build_dir: str, target: str) -> None:
    compile_tree(os.path.join(build_dir, "chalicelib"))
    # Files chalice adds to the zip itself: app.py and its own runtime (chalice/app.py,
    # chalice/__init__.py). Their compiled forms go where the zip will hold them.
    _compile_file(os.path.join(build_dir, "app.py"), os.path.join(target, "__pycache__", pyc_name("app")))
    chalice_cache = os.path.join(target, "chalice", "__pycache__")
    _compile_file(chalice.app.__file__, os.path.join(chalice_cache, pyc_name("app")))
    _compile_file(chalice.__file__, os.path.join(chalice_cache, pyc_name("__init__")))
