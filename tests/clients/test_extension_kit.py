"""The client kit's own suite (clients/extension/test, node's built-in runner) as part of
`make test`: it fails when any node test fails, and when node is missing."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

KIT_DIR = Path(__file__).resolve().parents[2] / "clients" / "extension"


def test_the_kit_suite_passes_under_node():
    node = shutil.which("node")
    assert node, "node (18 or later) is needed for the client kit's tests: apt-get install nodejs"
    files = sorted(str(p.relative_to(KIT_DIR)) for p in (KIT_DIR / "test").glob("*.test.js"))
    assert len(files) >= 5, files
    run = subprocess.run(
        [node, "--test", *files], cwd=KIT_DIR, capture_output=True, text=True, timeout=240, check=False
    )
    summary = [line for line in run.stdout.splitlines() if line.startswith(("# pass", "# fail", "not ok"))]
    assert run.returncode == 0, "node --test failed:\n" + run.stdout[-6000:] + run.stderr[-2000:]
    assert "# fail 0" in summary, summary
