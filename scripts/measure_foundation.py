"""Measure what the foundation issue asks for, on this machine.

    .venv/bin/python scripts/measure_foundation.py

(a) bcrypt verify time at the production cost (BCRYPT_ROUNDS default 12): the price of
    every login, and of every unknown-email login too (verified against a dummy hash).
(b) the wall time of `python -c "import app"` in a fresh interpreter (a Lambda cold start
    pays it before the first request), next to a bare interpreter's start for reference,
    and which heavy modules that import leaves unloaded. Exits 1 if any module that must
    stay lazy (stripe, requests, bcrypt, jwt) is loaded by `import app`.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MUST_BE_LAZY = ("stripe", "requests", "bcrypt", "jwt")
ALSO_REPORTED = ("boto3", "botocore", "urllib3", "moto", "werkzeug")
PROBE = "import json, sys; import app; print(json.dumps(sorted(sys.modules)))"


def bcrypt_verify_seconds(rounds: int, samples: int) -> tuple[list[float], list[float]]:
    """(wall, CPU) seconds per verification; CPU time is what a busy machine cannot inflate."""
    import bcrypt

    password = b"correct horse battery staple"
    hashed = bcrypt.hashpw(password, bcrypt.gensalt(rounds))
    wall, cpu = [], []
    for _ in range(samples):
        started, started_cpu = time.perf_counter(), time.process_time()
        assert bcrypt.checkpw(password, hashed)
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    return wall, cpu


def _bare_env() -> dict[str, str]:
    """A cold start's environment: a deployed stage, nothing else configured."""
    return {"PATH": os.environ.get("PATH", ""), "STAGE": "prod", "AWS_DEFAULT_REGION": "us-east-1"}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_seconds(code: str, samples: int) -> tuple[list[float], list[float]]:
    """(wall, CPU) seconds of `python -c code` in a fresh interpreter."""
    wall, cpu = [], []
    for _ in range(samples):
        started, started_cpu = time.perf_counter(), _children_cpu()
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_bare_env(), check=True,
                       capture_output=True)
        wall.append(time.perf_counter() - started)
        cpu.append(_children_cpu() - started_cpu)
    return wall, cpu


def modules_after_import_app() -> set[str]:
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=_bare_env(), check=True,
                          capture_output=True, text=True)
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def main() -> int:
    rounds = int(os.environ.get("BCRYPT_ROUNDS_TO_MEASURE", "12"))
    verify, verify_cpu = bcrypt_verify_seconds(rounds, samples=10)
    bare, bare_cpu = run_seconds("pass", samples=5)
    cold, cold_cpu = run_seconds("import app", samples=5)
    loaded = modules_after_import_app()
    top_level = {name.split(".")[0] for name in loaded}
    median = statistics.median

    rows = [
        (f"bcrypt verify, cost {rounds} (median of {len(verify)})", ms(median(verify)),
         f"CPU {ms(median(verify_cpu)).strip()}; wall min {ms(min(verify)).strip()}, "
         f"max {ms(max(verify)).strip()}"),
        (f'python -c "import app" wall (median of {len(cold)})', ms(median(cold)),
         f"CPU {ms(median(cold_cpu)).strip()}; wall min {ms(min(cold)).strip()}, "
         f"max {ms(max(cold)).strip()}"),
        (f'python -c "pass" wall (median of {len(bare)})', ms(median(bare)),
         f"CPU {ms(median(bare_cpu)).strip()}; interpreter start, for reference"),
        ("import app over a bare interpreter", ms(median(cold) - median(bare)),
         f"{len(loaded)} modules loaded"),
    ]
    load1, load5, _ = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, load average {load1:.1f} (1 min) {load5:.1f} (5 min); "
          "wall times grow with load, CPU times much less")
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>11}  notes")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>11}  {note}")
    print()
    print(f"{'module':<10}  at cold start")
    for name in MUST_BE_LAZY + ALSO_REPORTED:
        state = "LOADED" if name in top_level else "not imported"
        marker = "  (must stay lazy)" if name in MUST_BE_LAZY else ""
        print(f"{name:<10}  {state}{marker}")
    eager = [name for name in MUST_BE_LAZY if name in top_level]
    if eager:
        print(f"\nFAIL: imported by `import app`: {', '.join(eager)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
