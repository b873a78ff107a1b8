"""The README's settings table is generated from the config schema and must match it."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def _update_readme_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("update_readme", ROOT / "tools/update_readme.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_settings_table_matches_the_schema() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert _update_readme_module().render(readme) == readme, (
        "README.md is out of date: run python tools/update_readme.py"
    )


def test_every_setting_is_in_the_readme() -> None:
    from target_pinterest_audiences.config import CONFIG_SCHEMA

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in CONFIG_SCHEMA["properties"]:
        assert f"| `{name}` |" in readme


def test_the_readme_test_command_is_what_ci_runs() -> None:
    ci = (ROOT / ".ci/run").read_text(encoding="utf-8")
    assert "make test" in ci
    assert "make test" in (ROOT / "README.md").read_text(encoding="utf-8")
