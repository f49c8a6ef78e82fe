"""The copy the browser suite loads differs from the published extension only by its
backend URL (popup.js, background.js) and that URL in host_permissions (no Chromium needed)."""
from __future__ import annotations

import difflib
import json

from tests.browser.conftest import PUBLISHED, PUBLISHED_BACKEND, copy_published_extension, unpacked_extension_id

LOCAL = "http://127.0.0.1:8105"


def test_only_the_backend_url_changes(tmp_path):
    copy = copy_published_extension(tmp_path / "ext", LOCAL)
    changed = {}
    for original in sorted(p for p in PUBLISHED.rglob("*") if p.is_file()):
        relative = original.relative_to(PUBLISHED)
        if relative.name == "manifest.json":
            continue
        before, after = original.read_bytes(), (copy / relative).read_bytes()
        if before != after:
            diff = difflib.unified_diff(before.decode().splitlines(), after.decode().splitlines(), n=0, lineterm="")
            changed[str(relative)] = [line for line in diff if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert set(changed) == {"popup.js", "background.js"}
    for lines in changed.values():
        assert lines == [f"-    this.backendUrl = '{PUBLISHED_BACKEND}';", f"+    this.backendUrl = '{LOCAL}';"]
    manifest = json.loads((PUBLISHED / "manifest.json").read_text())
    manifest["host_permissions"].append(LOCAL + "/*")
    assert json.loads((copy / "manifest.json").read_text()) == manifest  # no `key` either


def test_the_unpacked_id_follows_the_path():
    assert unpacked_extension_id(PUBLISHED) != unpacked_extension_id(PUBLISHED.parent)
    assert len(unpacked_extension_id(PUBLISHED)) == 32 and set(unpacked_extension_id(PUBLISHED)) <= set("abcdefghijklmnop")
