"""Regenerate the loader's settings in meltano.yml and the Hub definition from the schema.

The config schema (target_pinterest_audiences/config.py) is the single source; this script
rewrites the loader's ``settings:`` block in meltano.yml (keeping the file's comments and
the SDK's own settings at the end) and the ``settings`` of the Hub definition.
tests/test_meltano.py fails when either is out of date.

Usage: python tools/sync_plugin_settings.py
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from target_pinterest_audiences.config import CONFIG_SCHEMA

ROOT = Path(__file__).resolve().parent.parent
MELTANO_YML = ROOT / "meltano.yml"
HUB_DIR = ROOT / "plugin_definition" / "loaders" / "target-pinterest-audiences"
LOADER = "target-pinterest-audiences"
_KINDS = {
    "string": "string",
    "boolean": "boolean",
    "integer": "integer",
    "number": "decimal",
    "object": "object",
}


def own_settings() -> list[dict[str, Any]]:
    """Meltano settings for every property of CONFIG_SCHEMA, in schema order."""
    settings = []
    for name, prop in CONFIG_SCHEMA["properties"].items():
        types = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
        (json_type,) = [t for t in types if t != "null"]
        setting: dict[str, Any] = {
            "name": name,
            "label": prop["title"],
            "kind": "password" if prop.get("secret") else _KINDS[json_type],
            "description": prop["description"],
        }
        if prop.get("secret"):
            setting["sensitive"] = True
        if "enum" in prop:
            setting["kind"] = "options"
            setting["options"] = [{"label": value, "value": value} for value in prop["enum"]]
        if prop.get("default") is not None:
            setting["value"] = prop["default"]
        settings.append(setting)
    return settings


def _loader(project: dict[str, Any]) -> dict[str, Any]:
    (loader,) = [p for p in project["plugins"]["loaders"] if p["name"] == LOADER]
    return loader


def all_settings(current: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ours from the schema, then the SDK's (stream maps, faker) as they are in the file."""
    ours = {p for p in CONFIG_SCHEMA["properties"]}
    return own_settings() + [s for s in current if s["name"] not in ours]


def render_meltano_yml(text: str) -> str:
    """meltano.yml with the loader's settings block regenerated, comments kept."""
    project = yaml.safe_load(text)
    settings = all_settings(_loader(project)["settings"])
    lines = text.splitlines(keepends=True)
    start = next(
        i
        for i, line in enumerate(lines)
        if line.rstrip() == "    settings:" and _in_loader(lines, i)
    )
    end = next(
        i
        for i in range(start + 1, len(lines))
        if not lines[i].startswith("    -") and not lines[i].startswith("      ")
    )
    block = yaml.safe_dump(settings, sort_keys=False, width=78, allow_unicode=True)
    indented = "".join("    " + line if line.strip() else line for line in block.splitlines(True))
    return "".join(lines[: start + 1]) + indented + "".join(lines[end:])


def _in_loader(lines: list[str], index: int) -> bool:
    for line in reversed(lines[:index]):
        if line.startswith("  - name: "):
            return line.strip() == f"- name: {LOADER}"
    return False


def render_hub(text: str, settings: list[dict[str, Any]]) -> str:
    """The Hub definition with its settings replaced, header comment kept."""
    header = "".join(line for line in text.splitlines(True) if line.startswith("#"))
    hub = yaml.safe_load(text)
    hub["settings"] = settings
    return header + yaml.safe_dump(hub, sort_keys=True, width=78, allow_unicode=True)


def main() -> int:
    """Rewrite both files; exit 1 if anything changed."""
    changed = False
    meltano_text = MELTANO_YML.read_text(encoding="utf-8")
    new_meltano = render_meltano_yml(meltano_text)
    if new_meltano != meltano_text:
        MELTANO_YML.write_text(new_meltano, encoding="utf-8")
        changed = True
    settings = _loader(yaml.safe_load(new_meltano))["settings"]
    for hub_path in HUB_DIR.glob("*.yml"):
        hub_text = hub_path.read_text(encoding="utf-8")
        new_hub = render_hub(hub_text, settings)
        if new_hub != hub_text:
            hub_path.write_text(new_hub, encoding="utf-8")
            changed = True
    if changed:
        print("Plugin settings regenerated from the config schema")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
