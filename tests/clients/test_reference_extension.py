"""The reference extension (clients/reference-extension) is built only on the kit, and
carries an unmodified copy of it: what an extension author copies is what is tested."""
from __future__ import annotations

import json
import re
from pathlib import Path

CLIENTS = Path(__file__).resolve().parents[2] / "clients"
KIT = CLIENTS / "extension"
REFERENCE = CLIENTS / "reference-extension"
KIT_FILES = ("kit.js", "pcm-worklet.js")


def own_scripts() -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in REFERENCE.glob("*.js")}


def test_the_kit_copy_is_the_kit():
    for name in KIT_FILES:
        assert (REFERENCE / "kit" / name).read_bytes() == (KIT / name).read_bytes(), (
            f"clients/reference-extension/kit/{name} differs from clients/extension/{name}: copy it again"
        )


def test_the_backend_is_reached_only_through_the_kit():
    scripts = own_scripts()
    assert {"background.js", "popup.js", "offscreen.js", "overlay.js"} <= set(scripts)
    for name, text in scripts.items():
        assert not re.search(r"\bfetch\(|XMLHttpRequest|new WebSocket", text), f"{name} calls the network itself"
        assert not re.search(r"['\"`]/(auth|credits|transcription)/", text), f"{name} names an API path"
    assert "kit.startCaptions(" in scripts["background.js"]
    assert "kit.buy(" in scripts["background.js"]
    assert "kit.catchUp(" in scripts["background.js"]
    assert "kit.ask(" in scripts["popup.js"]


def test_the_manifest_names_files_that_exist():
    manifest = json.loads((REFERENCE / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["manifest_version"] == 3
    assert manifest["background"] == {"service_worker": "background.js", "type": "module"}
    for path in (manifest["background"]["service_worker"], manifest["action"]["default_popup"], "offscreen.html", "overlay.css"):
        assert (REFERENCE / path).is_file(), path
    html = (REFERENCE / "popup.html").read_text(encoding="utf-8") + (REFERENCE / "offscreen.html").read_text(encoding="utf-8")
    for script in re.findall(r'src="([^"]+)"', html):
        assert (REFERENCE / script).is_file(), script
    imports = set()
    for text in own_scripts().values():
        imports |= set(re.findall(r"from '\./([^']+)'", text))
    for module in imports:
        assert (REFERENCE / module).is_file(), module
