"""Deployment checks: the AWS-call recorder (whole session) and one `chalice package` run.

The recorder is installed when this conftest loads, during collection, so it sees every
test of the session; the tests marked `after_suite` are moved to the end of the run, where
the recording is complete.
"""
from __future__ import annotations

import json
import os
import subprocess
import zipfile
from dataclasses import dataclass, replace
from typing import Any

import pytest

from tests.conftest import ORIGIN
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
    if PACKAGE_SIZES:
        terminalreporter.write_line(
            f"deployment.zip (prod): {PACKAGE_SIZES['zipped'] / 2**20:.1f} MiB zipped, "
            f"{PACKAGE_SIZES['unzipped'] / 2**20:.1f} MiB unzipped"
        )
    if RECORDER.calls:
        operations = {(c.service, c.operation) for c in RECORDER.calls}
        terminalreporter.write_line(
            f"AWS calls recorded from the application code: {len(RECORDER.calls)} "
            f"({len(operations)} distinct operations)"
        )


@dataclass
class Package:
    directory: str
    sam: dict[str, Any]  # as `make package` writes it: repaired, gateway responses merged
    raw_sam: dict[str, Any]  # as `chalice package` wrote it

    @property
    def zip_path(self) -> str:
        return os.path.join(self.directory, "deployment.zip")

    def zip_sizes(self) -> tuple[int, int]:
        """(compressed file size, total uncompressed size) in bytes."""
        with zipfile.ZipFile(self.zip_path) as archive:
            return os.path.getsize(self.zip_path), sum(i.file_size for i in archive.infolist())

    def resource(self, logical_id: str) -> dict[str, Any]:
        return self.sam["Resources"][logical_id]


PACKAGE_SIZES: dict[str, int] = {}


@pytest.fixture(scope="session")
def chalice_package(tmp_path_factory: pytest.TempPathFactory) -> Package:
    """`make package STAGE=prod`'s build, run once per session with the real `chalice package`.

    Only the configured extension origin is replaced (config.json holds a placeholder the
    deploy command refuses); everything else is the prod stage as committed.
    """
    from infra import deploy

    out = tmp_path_factory.mktemp("package")
    env = {k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL"}
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    raw: dict[str, Any] = {}

    def runner(command: list[str]) -> None:
        completed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert completed.returncode == 0, completed.stdout + completed.stderr
        with open(os.path.join(command[-1], "sam.json"), encoding="utf-8") as handle:
            raw.update(json.load(handle))

    cfg = deploy.stage_config(PACKAGE_STAGE)
    cfg = replace(cfg, environment={**cfg.environment, "ALLOWED_ORIGINS": ORIGIN})
    deploy.build_package(cfg, str(out), runner)
    with open(out / "sam.json", encoding="utf-8") as handle:
        package = Package(str(out), json.load(handle), raw)
    PACKAGE_SIZES["zipped"], PACKAGE_SIZES["unzipped"] = package.zip_sizes()
    return package
