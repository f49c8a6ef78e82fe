"""The lock files are what `make lock` makes of requirements*.txt (checked offline).

requirements.txt / requirements-dev.txt are the pins people edit; requirements.lock /
requirements-dev.lock pin every transitive dependency with hashes, and are what the venv
installs (`--require-hashes`) and what the deployment package is built from. `make
lock-check` re-resolves against PyPI; this test catches the usual slip without a network:
a pin edited or added in a .txt file without regenerating its lock.
"""
from __future__ import annotations

import os
import re

import pytest

from tests.deploy.recording import ROOT

LOCKS = {"requirements.lock": "requirements.txt", "requirements-dev.lock": "requirements-dev.txt"}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def _name(raw: str) -> str:
    return re.sub(r"[-_.]+", "-", raw).lower()


def _read(path: str) -> str:
    with open(os.path.join(ROOT, path), encoding="utf-8") as handle:
        return handle.read()


def top_level_pins(path: str) -> dict[str, str]:
    """{name: version} of a human-edited file, following its `-r` includes."""
    pins: dict[str, str] = {}
    for line in _read(path).splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            pins.update(top_level_pins(line[3:].strip()))
        elif line:
            match = PIN.match(line)
            assert match, f"{path}: {line!r} is not an exact pin (name==version)"
            pins[_name(match.group(1))] = match.group(2)
    return pins


def locked(path: str) -> dict[str, dict]:
    """{name: {version, hashes, via}} of a pip-compile output."""
    entries: dict[str, dict] = {}
    current = None
    via_block = False
    for line in _read(path).splitlines():
        match = PIN.match(line)
        if match:
            current = entries.setdefault(_name(match.group(1)), {"version": match.group(2), "hashes": 0, "via": set()})
            via_block = False
        elif current is not None and "--hash=sha256:" in line:
            current["hashes"] += 1
        elif current is not None and line.strip().startswith("# via"):
            rest = line.split("# via", 1)[1].strip()
            via_block = not rest
            if rest:
                current["via"].add(rest)
        elif current is not None and via_block and line.strip().startswith("#   "):
            current["via"].add(line.strip()[1:].strip())
    return entries


@pytest.mark.parametrize("lock, source", sorted(LOCKS.items()))
def test_every_top_level_pin_is_locked_at_its_version(lock, source):
    entries = locked(lock)
    for name, version in top_level_pins(source).items():
        assert name in entries, f"{name} is in {source} but not in {lock}: run `make lock`"
        assert entries[name]["version"] == version, (
            f"{name}: {source} says {version}, {lock} has {entries[name]['version']}: run `make lock`")


@pytest.mark.parametrize("lock, source", sorted(LOCKS.items()))
def test_every_locked_package_has_hashes_and_a_reason(lock, source):
    entries = locked(lock)
    pins = top_level_pins(source)
    for name, entry in entries.items():
        assert entry["hashes"] >= 1, f"{lock}: {name} has no --hash"
        assert entry["via"], f"{lock}: {name} says nothing about why it is there"
        direct = {via for via in entry["via"] if via.startswith("-r ")}
        if direct:  # pip-compile says a requirements file asked for it: it still must
            assert name in pins, f"{lock}: {name} is no longer in {source}: run `make lock`"


def test_the_runtime_lock_agrees_with_the_dev_lock():
    """Tests run on exactly the versions the Lambda gets."""
    runtime, dev = locked("requirements.lock"), locked("requirements-dev.lock")
    differ = {name: (entry["version"], dev.get(name, {}).get("version")) for name, entry in runtime.items()
              if dev.get(name, {}).get("version") != entry["version"]}
    assert not differ, f"requirements.lock vs requirements-dev.lock: {differ}"


def test_make_installs_and_packages_from_the_locks_with_hashes():
    makefile = _read("Makefile")
    assert "--require-hashes -r requirements-dev.lock" in makefile
    from infra import deploy

    assert deploy.RUNTIME_LOCK == "requirements.lock"
