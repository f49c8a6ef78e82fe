"""What `make run` keeps and where: the local JWT secret, the data folder, the reloader's watch."""
from __future__ import annotations

import json
import os
import stat

from devstack import local_data
from devstack.chalice_local import source_files


def test_the_jwt_secret_is_made_once_and_kept_private(tmp_path):
    folder = str(tmp_path / "local")
    secret, made = local_data.jwt_secret(folder)
    assert made and len(secret) >= 32
    assert local_data.jwt_secret(folder) == (secret, False)
    path = os.path.join(folder, local_data.JWT_SECRET_FILE)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    one, _ = local_data.jwt_secret(None)  # LOCAL_DATA=off: a new one each run, nothing written
    assert one != local_data.jwt_secret(None)[0]


def test_the_data_folder_and_the_switch():
    assert local_data.data_dir({}) == os.path.join(local_data.ROOT, ".local")
    assert local_data.data_dir({"LOCAL_DATA_DIR": "/tmp/x"}) == "/tmp/x"
    assert local_data.keeping({}) and local_data.keeping({"LOCAL_DATA": "on"})
    assert not local_data.keeping({"LOCAL_DATA": "off"}) and not local_data.keeping({"LOCAL_DATA": "0"})


def test_the_admin_command_looks_where_make_run_writes(monkeypatch, tmp_path):
    """`make admin` finds `make run` by the state file in the same default folder."""
    from chalicelib.ops import admin

    assert admin.PROJECT_ROOT == local_data.ROOT
    monkeypatch.delenv("DEVSTACK_STATE_FILE", raising=False)
    monkeypatch.delenv("LOCAL_DATA_DIR", raising=False)
    monkeypatch.setattr(admin, "PROJECT_ROOT", str(tmp_path))  # a project of our own
    assert admin.local_stack() is None
    (tmp_path / ".local").mkdir()
    state = {"pid": os.getpid(), "env": {"AWS_ENDPOINT_URL": "http://127.0.0.1:1"}}
    (tmp_path / ".local" / local_data.STATE_FILE).write_text(json.dumps(state))
    assert admin.local_stack() == {"AWS_ENDPOINT_URL": "http://127.0.0.1:1"}
    monkeypatch.setenv("LOCAL_DATA_DIR", str(tmp_path / "elsewhere"))
    assert admin.local_stack() is None


def test_the_reloader_watches_sources_not_data_caches_or_the_venv(tmp_path):
    for name in ("app.py", "chalicelib/core/settings.py", ".chalice/config.json", ".chalice/deployments/x.json",
                 ".venv/lib/site.py", ".local/aws-state.zip", ".local/devstack.json", "chalicelib/__pycache__/a.pyc",
                 "tests/test_x.py", "docs/sandbox.md", "README.md", ".git/HEAD", "node_modules/a/index.json"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    watched = sorted(os.path.relpath(path, tmp_path) for path in source_files(str(tmp_path)))
    assert watched == [".chalice/config.json", "app.py", "chalicelib/core/settings.py"]
