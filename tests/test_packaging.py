"""The habits of a published plugin: licence, CI on every claimed Python, updates, hooks."""

from __future__ import annotations

import shlex
import subprocess
import tomllib
from importlib.metadata import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from pre_commit.clientlib import load_config

ROOT = Path(__file__).resolve().parent.parent


def test_the_licence_is_apache_2_and_ships_in_the_package_metadata() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    installed = metadata("target-pinterest-audiences")

    assert "Apache License" in text
    assert "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text  # the full text, not a notice
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    assert installed["License-Expression"] == "Apache-2.0"
    assert installed.get_all("License-File") == ["LICENSE"]


def load_yaml(relative: str) -> dict[Any, Any]:
    loaded: dict[Any, Any] = yaml.safe_load((ROOT / relative).read_text(encoding="utf-8"))
    return loaded


def claimed_pythons() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    prefix = "Programming Language :: Python :: "
    return [c.removeprefix(prefix) for c in project["classifiers"] if c.count(".") == 1]


def test_the_workflow_runs_ci_run_on_every_python_the_classifiers_claim() -> None:
    workflow = load_yaml(".github/workflows/ci.yml")
    (job,) = workflow["jobs"].values()

    assert claimed_pythons() == ["3.11", "3.12", "3.13"]
    assert job["strategy"]["matrix"]["python-version"] == claimed_pythons()
    setup = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/setup-python")]
    assert setup[0]["with"]["python-version"] == "${{ matrix.python-version }}"
    # .ci/run is the single entry point (it runs exactly the README's `make test`).
    assert [s["run"] for s in job["steps"] if "run" in s] == ["bash .ci/run"]
    on = workflow[True]  # YAML reads the bare key `on` as a boolean
    assert "pull_request" in on
    assert on["push"]["branches"] == ["main"]


def test_dependabot_updates_the_python_dependencies_and_the_actions() -> None:
    updates = load_yaml(".github/dependabot.yml")["updates"]
    assert {u["package-ecosystem"] for u in updates} == {"pip", "github-actions"}
    assert all(u["directory"] == "/" for u in updates)


def test_pre_commit_config_is_valid_and_runs_the_dev_venv_tools() -> None:
    config = load_config(str(ROOT / ".pre-commit-config.yaml"))
    hooks = [hook for repo in config["repos"] for hook in repo["hooks"]]
    entries = {hook["id"]: shlex.split(hook["entry"]) for hook in hooks}

    assert {"ruff-check", "ruff-format", "mypy", "plugin-settings", "readme"} <= set(entries)
    for hook_id, argv in entries.items():
        assert (ROOT / argv[0]).exists(), f"{hook_id}: {argv[0]} is not in the dev venv"
        scripts = [arg for arg in argv[1:] if arg.endswith(".py")]
        assert all((ROOT / script).exists() for script in scripts), hook_id


@pytest.mark.slow  # runs git
def test_no_virtual_environment_is_tracked() -> None:
    """A committed .venv-* symlink replaces the real venv in every checkout it lands in."""
    listed = subprocess.run(
        ["git", "ls-files", "--", ".venv*"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert listed.stdout == ""
