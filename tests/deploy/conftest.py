"""Deployment checks: the AWS-call recorder (whole session) and one `chalice package` run.

The recorder is installed when this conftest loads, during collection, so it sees every
test of the session; the tests marked `after_suite` are moved to the end of the run, where
the recording is complete.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from typing import Any

import pytest

from tests.deploy.recording import RECORDER, ROOT

PACKAGE_STAGE = "prod"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "after_suite: runs last, after every other test of the session")
    RECORDER.install()


def pytest_unconfigure(config: pytest.Config) -> None:
    RECORDER.uninstall()


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    last = [item for item in items if item.get_closest_marker("after_suite")]
    items[:] = [item for item in items if not item.get_closest_marker("after_suite")] + last


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if RECORDER.calls:
        operations = {(c.service, c.operation) for c in RECORDER.calls}
        terminalreporter.write_line(
            f"AWS calls recorded from the application code: {len(RECORDER.calls)} "
            f"({len(operations)} distinct operations)"
        )


@dataclass
class Package:
    directory: str
    sam: dict[str, Any]

    @property
    def zip_path(self) -> str:
        return os.path.join(self.directory, "deployment.zip")

    def zip_sizes(self) -> tuple[int, int]:
        """(compressed file size, total uncompressed size) in bytes."""
        with zipfile.ZipFile(self.zip_path) as archive:
            return os.path.getsize(self.zip_path), sum(i.file_size for i in archive.infolist())

    def resource(self, logical_id: str) -> dict[str, Any]:
        return self.sam["Resources"][logical_id]


@pytest.fixture(scope="session")
def chalice_package(tmp_path_factory: pytest.TempPathFactory) -> Package:
    """`chalice package --stage prod` run once per session, exactly as a pipeline runs it."""
    out = tmp_path_factory.mktemp("chalice-package") / "out"
    env = {k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL"}
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    chalice = os.path.join(os.path.dirname(sys.executable), "chalice")
    completed = subprocess.run(
        [chalice, "package", "--stage", PACKAGE_STAGE, str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    with open(out / "sam.json", encoding="utf-8") as handle:
        return Package(str(out), json.load(handle))
