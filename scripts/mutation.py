"""Mutation testing of the money code: does a test fail when the code is subtly wrong?

    .venv/bin/python scripts/mutation.py [--sample 90] [--seed 12] [--list] [--only ID ...]
                                         [--tests tests/ledger tests/billing ...]

Each mutant is one small change to a module of the ledger (chalicelib/credits/ledger/) or to
chalicelib/billing/fulfilment.py (a comparison or boolean operator flipped, a number moved by
one, a string altered, a condition negated, a call statement deleted). A fixed-seed sample of them is run, one at a
time, against the tests (first failure stops a run, so a killed mutant is cheap) in a
private copy of the repository: the working tree is never modified. Mutants listed in
scripts/mutation_equivalents.json change no observable behaviour (each with a reason) and
are left out of the figure:

    score = killed / (killed + survived)     (equivalent mutants excluded)

A small self-contained AST mutator rather than mutmut: mutmut 3 rewrites the package into
a `mutants/` tree of trampolines driven by its own pytest session, which does not fit
tests that start the embedded AWS and the provider fakes as servers; "mutate the file,
run pytest" is slower per mutant but exact. Not part of `make test` (the default sample
takes about half an hour on two cores). Exit status: 0 when the score reaches --target (default 0.9).
"""
from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import queue
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEDGER = "chalicelib/credits/ledger/"
TARGETS = tuple(LEDGER + name for name in ("operations.py", "commit.py", "records.py", "hints.py", "invariant.py")) \
    + ("chalicelib/billing/fulfilment.py",)
# Cheapest and most telling first: a run stops at the first failure. Left out for time:
# the hypothesis state machine and the request-count benchmark (tests/ledger), and the
# end-to-end billing run over a live server (the same flows as test_fulfilment).
DEFAULT_TESTS = ("tests/ledger/test_units.py", "tests/ledger/test_operations.py", "tests/ledger/test_records.py",
                 "tests/ledger/test_operator_signals.py", "tests/ledger/test_faults.py",
                 "tests/ledger/test_idempotency.py", "tests/ledger/test_credits_api.py",
                 "tests/billing/test_fulfilment.py", "tests/billing/test_faults.py",
                 "tests/billing/test_fulfilment_guards.py", "tests/billing/test_fulfilment_rules.py",
                 "tests/billing/test_event_orders.py", "tests/billing/test_webhook_shapes.py",
                 "tests/billing/test_purchase.py",
                 "tests/billing/test_catalogue.py",
                 "tests/billing/test_webhook_security.py", "tests/catchup/test_faults.py",
                 "tests/ledger/test_concurrency.py")
EQUIVALENTS = os.path.join(ROOT, "scripts", "mutation_equivalents.json")

COMPARE_SWAPS = {ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Lt: ast.GtE, ast.GtE: ast.Lt,
                 ast.Gt: ast.LtE, ast.LtE: ast.Gt, ast.In: ast.NotIn, ast.NotIn: ast.In,
                 ast.Is: ast.IsNot, ast.IsNot: ast.Is}
BINOP_SWAPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.FloorDiv, ast.FloorDiv: ast.Mult,
               ast.Mod: ast.Mult}


@dataclass(frozen=True)
class Mutant:
    target: str
    path: tuple[int, ...]  # position of the node in a deterministic walk of the module
    kind: str
    scope: str  # the enclosing function (or <module>)
    before: str
    after: str

    @property
    def id(self) -> str:
        """Stable across unrelated edits: file, function, operator, code before -> after."""
        name = os.path.basename(self.target)
        return f"{name}:{self.scope}:{self.kind}:{self.before} -> {self.after}"


def _walk(node: ast.AST, path: tuple[int, ...] = (), scope: str = "<module>",
          skip_docstrings: bool = True) -> Iterator[tuple[tuple[int, ...], ast.AST, str]]:
    for index, child in enumerate(ast.iter_child_nodes(node)):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            inner = child.name if scope == "<module>" else f"{scope}.{child.name}"
        else:
            inner = scope
        yield path + (index,), child, inner
        yield from _walk(child, path + (index,), inner)


def _skipped(node: ast.AST, parents: dict[int, ast.AST]) -> bool:
    """Docstrings, annotations, imports and `logger = ...` are not behaviour."""
    parent = parents.get(id(node))
    while parent is not None:
        if isinstance(parent, (ast.Import, ast.ImportFrom, ast.AnnAssign)) and not (
            isinstance(parent, ast.AnnAssign) and parent.value is not None and _contains(parent.value, node)
        ):
            return True
        if isinstance(parent, ast.arg) or (isinstance(parent, ast.FunctionDef) and _in_annotations(parent, node)):
            return True
        if isinstance(parent, ast.Subscript) and isinstance(parents.get(id(parent)), (ast.arg, ast.AnnAssign)):
            return True
        parent = parents.get(id(parent))
    return False


def _contains(tree: ast.AST, node: ast.AST) -> bool:
    return any(candidate is node for candidate in ast.walk(tree))


def _in_annotations(function: ast.FunctionDef, node: ast.AST) -> bool:
    annotations = [function.returns] + [a.annotation for a in function.args.args + function.args.kwonlyargs]
    return any(a is not None and _contains(a, node) for a in annotations)


def _is_docstring(node: ast.AST, parents: dict[int, ast.AST]) -> bool:
    parent = parents.get(id(node))
    if not isinstance(parent, ast.Expr):
        return False
    holder = parents.get(id(parent))
    body = getattr(holder, "body", None)
    return isinstance(body, list) and body and body[0] is parent


def _mutations(node: ast.AST, parents: dict[int, ast.AST]) -> Iterator[tuple[str, ast.AST]]:
    """(kind, replacement node) for every mutation of `node`."""
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in COMPARE_SWAPS:
        new = copy.deepcopy(node)
        new.ops = [COMPARE_SWAPS[type(node.ops[0])]()]
        yield "compare", new
    elif isinstance(node, ast.BoolOp):
        new = copy.deepcopy(node)
        new.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        yield "boolop", new
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        yield "not", copy.deepcopy(node.operand)
    elif isinstance(node, ast.BinOp) and type(node.op) in BINOP_SWAPS:
        if not (isinstance(node.op, ast.Mod) and isinstance(node.left, ast.Constant)
                and isinstance(node.left.value, str)):
            new = copy.deepcopy(node)
            new.op = BINOP_SWAPS[type(node.op)]()
            yield "arith", new
    elif isinstance(node, ast.Constant) and not _is_docstring(node, parents):
        value = node.value
        if isinstance(value, bool):
            yield "bool", ast.Constant(not value)
        elif isinstance(value, int):
            yield "number", ast.Constant(value + 1)
        elif isinstance(value, str) and value:
            yield "string", ast.Constant("XX" + value + "XX")
    elif isinstance(node, ast.If):
        new = copy.deepcopy(node)
        new.test = ast.UnaryOp(ast.Not(), copy.deepcopy(node.test))
        yield "negate_if", new
    elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        yield "delete_call", ast.Pass()
    elif isinstance(node, ast.AugAssign) and type(node.op) in (ast.Add, ast.Sub):
        new = copy.deepcopy(node)
        new.op = ast.Sub() if isinstance(node.op, ast.Add) else ast.Add()
        yield "augassign", new


def _short(node: ast.AST) -> str:
    if isinstance(node, ast.If):
        return f"if {ast.unparse(node.test)}:"
    text = ast.unparse(node).replace("\n", " ")
    return text if len(text) <= 80 else text[:77] + "..."


def enumerate_mutants(target: str) -> list[Mutant]:
    tree = ast.parse(open(os.path.join(ROOT, target), encoding="utf-8").read())
    parents = {id(child): parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    found = []
    for path, node, scope in _walk(tree):
        if _skipped(node, parents):
            continue
        for kind, replacement in _mutations(node, parents):
            found.append(Mutant(target, path, kind, scope, _short(node), _short(replacement)))
    seen: dict[str, int] = {}
    unique = []
    for mutant in found:  # the same text twice in one function: number them
        seen[mutant.id] = seen.get(mutant.id, 0) + 1
        if seen[mutant.id] > 1:
            mutant = Mutant(mutant.target, mutant.path, mutant.kind, mutant.scope,
                            f"{mutant.before} #{seen[mutant.id]}", mutant.after)
        unique.append(mutant)
    return unique


def mutated_source(mutant: Mutant) -> str:
    tree = ast.parse(open(os.path.join(ROOT, mutant.target), encoding="utf-8").read())
    parent: ast.AST = tree
    for depth, index in enumerate(mutant.path):
        children = list(ast.iter_child_nodes(parent))
        node = children[index]
        if depth == len(mutant.path) - 1:
            parents = {id(c): p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
            replacement = next(new for kind, new in _mutations(node, parents) if kind == mutant.kind)
            _replace(parent, node, replacement)
        parent = node
    ast.fix_missing_locations(tree)
    return ast.unparse(tree) + "\n"


def _replace(parent: ast.AST, old: ast.AST, new: ast.AST) -> None:
    for field, value in ast.iter_fields(parent):
        if value is old:
            setattr(parent, field, new)
            return
        if isinstance(value, list):
            for i, item in enumerate(value):
                if item is old:
                    value[i] = new
                    return
    raise RuntimeError("node not found in its parent")


def _copy_repo(destination: str) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    for name in files:
        source = os.path.join(ROOT, name)
        if not os.path.isfile(source):
            continue
        target = os.path.join(destination, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(source, target)


def run_tests(workdir: str, tests: list[str], timeout: float) -> tuple[str, float]:
    """'passed', 'failed' or 'timeout', and the seconds taken."""
    started = time.monotonic()
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "HYPOTHESIS_PROFILE": "default"}
    env.pop("AWS_ENDPOINT_URL", None)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", "not slow",
             "--timeout", "120", *tests],
            cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - started
    return ("passed" if result.returncode == 0 else "failed"), time.monotonic() - started


def run_mutant(workdir: str, mutant: Mutant, tests: list[str], timeout: float) -> tuple[str, float]:
    path = os.path.join(workdir, mutant.target)
    original = open(path, encoding="utf-8").read()
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(mutated_source(mutant))
    try:
        outcome, took = run_tests(workdir, tests, timeout)
    finally:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(original)
    return {"passed": "survived", "failed": "killed", "timeout": "timeout"}[outcome], took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", type=int, default=90, help="mutants to run (0: all)")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--tests", nargs="+", default=list(DEFAULT_TESTS))
    parser.add_argument("--only", nargs="+", help="run just these mutant ids")
    parser.add_argument("--list", action="store_true", help="print the sampled mutants and stop")
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument("--report", help="write the results as JSON here")
    parser.add_argument("--jobs", type=int, default=2, help="mutants run at once, each in its own copy")
    parser.add_argument("--skip-baseline", action="store_true",
                        help="do not first check that the unmutated code passes (reruns of --only)")
    args = parser.parse_args()

    mutants = [m for target in TARGETS for m in enumerate_mutants(target)]
    equivalents: dict[str, str] = json.load(open(EQUIVALENTS, encoding="utf-8")) if os.path.exists(EQUIVALENTS) else {}
    if args.only:
        chosen = [m for m in mutants if m.id in set(args.only)]
    elif args.sample and args.sample < len(mutants):
        chosen = random.Random(args.seed).sample(mutants, args.sample)
    else:
        chosen = mutants
    print(f"{len(mutants)} mutants in {', '.join(TARGETS)}; running {len(chosen)} (seed {args.seed})")
    if args.list:
        for mutant in chosen:
            print(("[equivalent] " if mutant.id in equivalents else "") + mutant.id)
        return 0

    results: dict[str, list[str]] = {"killed": [], "survived": [], "equivalent": [], "timeout": []}
    for mutant in chosen:
        if mutant.id in equivalents:
            results["equivalent"].append(mutant.id)
    pending = [m for m in chosen if m.id not in equivalents]
    with tempfile.TemporaryDirectory(prefix="mutation-") as scratch:
        workdirs = [os.path.join(scratch, str(job)) for job in range(max(args.jobs, 1))]
        for workdir in workdirs:
            _copy_repo(workdir)
        seconds = 300.0
        if not args.skip_baseline:
            baseline, seconds = run_tests(workdirs[0], args.tests, timeout=3600)
            if baseline != "passed":
                print(f"the unmutated code does not pass {args.tests}: fix that first")
                return 2
            print(f"baseline passes in {seconds:.0f}s", flush=True)
        free = queue.Queue()
        for workdir in workdirs:
            free.put(workdir)
        done = [0]
        lock = threading.Lock()

        def run(mutant: Mutant) -> None:
            workdir = free.get()
            try:
                verdict, took = run_mutant(workdir, mutant, args.tests, max(3 * seconds, 120))
            finally:
                free.put(workdir)
            with lock:
                done[0] += 1
                results[verdict].append(mutant.id)
                print(f"[{done[0]}/{len(pending)}] {verdict:<10} {took:5.0f}s  {mutant.id}", flush=True)

        with ThreadPoolExecutor(len(workdirs)) as pool:
            list(pool.map(run, pending))

    killed = len(results["killed"]) + len(results["timeout"])  # a hang is a detected change
    counted = killed + len(results["survived"])
    score = killed / counted if counted else 1.0
    print(f"\nkilled {len(results['killed'])}, timed out {len(results['timeout'])}, "
          f"survived {len(results['survived'])}, equivalent {len(results['equivalent'])}")
    print(f"score (killed / non-equivalent): {killed}/{counted} = {score:.0%}")
    for mutant_id in results["survived"]:
        print(f"  survived: {mutant_id}")
    if args.report:
        with open(args.report, "w", encoding="utf-8") as handle:
            json.dump({"seed": args.seed, "sample": len(chosen), "score": score, **results}, handle, indent=1)
    return 0 if score >= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
