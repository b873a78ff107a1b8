"""The Meltano project in this repository, run by real Meltano against the emulator.

``meltano`` lives in its own venv (``make meltano-venv``, a prerequisite of ``make test``):
its pinned dependencies stay out of the dev venv. The project (meltano.yml and the sample
exports in examples/) is copied into a temporary directory with the loader's ``pip_url``
pointing at this checkout; ``meltano install`` runs once per module, then ``meltano run``
runs as a user would, with only environment variables pointing it at the emulator.

The first part of this module needs no Meltano: it keeps meltano.yml and the Meltano Hub
definition in step with the target's own settings schema and ``--about`` output.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from target_pinterest_audiences.config import CONFIG_SCHEMA
from target_pinterest_audiences.emulator import Emulator, EmulatorConfig

from support import (
    TOKEN,
    assert_contract_kept,
    lists_by_name,
    members_by_name,
    sha,
    target_command,
)

# Every test here runs the console script or real Meltano as a subprocess.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
MELTANO = REPO / ".venv-meltano" / "bin" / "meltano"
HUB_DIR = REPO / "plugin_definition" / "loaders" / "target-pinterest-audiences"
SAMPLE_DIR = Path("examples") / "memberships"
SAMPLE = SAMPLE_DIR / "2026-01-05-crm-export.csv"
TAP = "tap-spreadsheets"
LOADER = "target-pinterest-audiences"
JOB = "sync-audiences"
STATE_ID = f"dev:{TAP}-to-{LOADER}"  # Meltano's state id for `meltano run TAP LOADER`
# The tap's bookmark is the newest file modification time it read; pin the files' mtimes
# so the bookmarks are known exactly (and a new file is always newer than the old one).
FIRST_EXPORT_TIME = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
SECOND_EXPORT_TIME = datetime(2026, 1, 6, 6, 0, tzinfo=UTC)
# The day after's export, appended to the source by the test: two new members, one user
# coming back, two leaving, and an audience seen for the first time.
SECOND_EXPORT = """\
email,audience_key,in_audience
uma@example.com,vip_customers,true
  Vic@Example.com ,newsletter_subscribers,true
bob@example.com,newsletter_subscribers,true
ann@example.com,newsletter_subscribers,false
KIM@example.com,vip_customers,false
wes@example.com,lapsed_customers,true
"""
EMAIL_PATTERN = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")
# Settings every SDK target gets from the SDK (stream maps), not from CONFIG_SCHEMA.
SDK_BUILTINS = {"stream_maps", "stream_map_config", "faker_config"}
SDK_SETTINGS = {"stream_maps", "stream_map_config", "faker_config.seed", "faker_config.locale"}


# --- meltano.yml and the Hub definition against the target's own description -------------


def load_project() -> dict[str, Any]:
    project: dict[str, Any] = yaml.safe_load((REPO / "meltano.yml").read_text(encoding="utf-8"))
    return project


def project_loader() -> dict[str, Any]:
    loaders: list[dict[str, Any]] = load_project()["plugins"]["loaders"]
    (loader,) = [p for p in loaders if p["name"] == LOADER]
    return loader


def about() -> dict[str, Any]:
    completed = subprocess.run(
        [*target_command(), "--about", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    info: dict[str, Any] = json.loads(completed.stdout)
    return info


def expected_kind(prop: dict[str, Any]) -> str:
    if prop.get("secret"):
        return "password"
    if "enum" in prop:
        return "options"
    types = set(prop["type"] if isinstance(prop["type"], list) else [prop["type"]]) - {"null"}
    (json_type,) = types
    return {
        "string": "string",
        "boolean": "boolean",
        "integer": "integer",
        "number": "decimal",
        "object": "object",
    }[json_type]


def test_meltano_yml_settings_match_the_config_schema() -> None:
    settings = {s["name"]: s for s in project_loader()["settings"]}
    # Creating a target in-process appends the SDK's settings to CONFIG_SCHEMA itself (the
    # class attribute is the same dict), so leave those out: they are checked via --about.
    own = {k: v for k, v in CONFIG_SCHEMA["properties"].items() if k not in SDK_BUILTINS}

    assert set(settings) == set(own) | SDK_SETTINGS
    for name, prop in own.items():
        setting = settings[name]
        assert setting["label"] == prop["title"], name
        assert setting["description"] == prop["description"], name
        assert setting["kind"] == expected_kind(prop), name
        assert setting.get("sensitive", False) == prop.get("secret", False), name
        assert setting.get("value") == prop.get("default"), name
    # Every setting --about describes is in meltano.yml, the SDK's nested ones flattened.
    described = about()["settings"]["properties"]
    flattened: set[str] = set()
    for name, prop in described.items():
        if name == "faker_config":
            flattened |= {f"faker_config.{sub}" for sub in prop["properties"]}
        else:
            flattened.add(name)
    assert set(settings) == flattened


def test_plugin_settings_are_generated_from_the_schema() -> None:
    """tools/sync_plugin_settings.py would change nothing: meltano.yml and the Hub agree."""
    spec = importlib.util.spec_from_file_location(
        "sync_plugin_settings", REPO / "tools" / "sync_plugin_settings.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    meltano_text = (REPO / "meltano.yml").read_text(encoding="utf-8")
    assert module.render_meltano_yml(meltano_text) == meltano_text, (
        "run python tools/sync_plugin_settings.py"
    )
    settings = project_loader()["settings"]
    for hub_path in HUB_DIR.glob("*.yml"):
        hub_text = hub_path.read_text(encoding="utf-8")
        assert module.render_hub(hub_text, settings) == hub_text


def test_meltano_yml_capabilities_and_groups_match_the_target() -> None:
    loader = project_loader()
    described = about()

    assert loader["capabilities"] == described["capabilities"]
    assert loader["namespace"] == "target_pinterest_audiences"
    assert loader["executable"] == LOADER
    assert loader["pip_url"] == "-e ."
    names = {s["name"] for s in loader["settings"]}
    for group in loader["settings_group_validation"]:
        assert set(group) <= names
        assert set(described["settings"]["required"]) <= set(group)


def test_meltano_yml_project_wiring() -> None:
    project = load_project()
    (tap,) = project["plugins"]["extractors"]
    assert tap["name"] == TAP
    assert re.fullmatch(r"tap-spreadsheets==[\d.]+", tap["pip_url"]), "pin the tap"
    assert "state" in tap["capabilities"]
    assert project["jobs"] == [{"name": JOB, "tasks": [f"{TAP} {LOADER}"]}]
    assert project["default_environment"] == "dev"
    (dev,) = [env for env in project["environments"] if env["name"] == "dev"]
    (dev_loader,) = dev["config"]["plugins"]["loaders"]
    assert dev_loader["config"]["api_url"] == "$PINTEREST_API_URL"
    # No secret is written in the project file: they come from the environment or .env.
    secrets = {s["name"] for s in project_loader()["settings"] if s.get("sensitive")}
    configs = [tap.get("config", {}), project_loader().get("config", {})]
    for env in project["environments"]:
        configs += [p.get("config", {}) for p in env["config"]["plugins"].get("loaders", [])]
    for config in configs:
        assert not secrets & set(config), config


def test_hub_definition_matches_the_project_and_the_package() -> None:
    (path,) = HUB_DIR.glob("*.yml")
    hub = yaml.safe_load(path.read_text(encoding="utf-8"))
    loader = project_loader()
    package = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]

    assert hub["variant"] == path.stem  # Hub layout: loaders/<name>/<variant>.yml
    assert hub["name"] == LOADER == path.parent.name
    assert hub["namespace"] == loader["namespace"]
    assert hub["executable"] == loader["executable"]
    # Not on PyPI: installed from the repository's git URL, which the user's project provides
    # (README "In your own project"; tests/test_readme.py runs it from a fresh project).
    assert hub["pip_url"] == "git+${PINTEREST_AUDIENCES_GIT_URL}"
    assert package["name"] == LOADER
    assert "OWNER" not in path.read_text(encoding="utf-8")
    assert hub["label"]
    assert hub["description"]
    assert "meltano_sdk" in hub["keywords"]
    assert hub["capabilities"] == loader["capabilities"]
    assert hub["settings"] == loader["settings"]
    assert hub["settings_group_validation"] == loader["settings_group_validation"]


# --- real Meltano -----------------------------------------------------------------------


@dataclass
class Write:
    """One customer-list write the emulator acknowledged."""

    list_id: str | None  # None for a create (the list has no id yet)
    name: str | None
    operation: str  # CREATE, ADD or REMOVE
    records: frozenset[str]


@dataclass
class WriteSpy:
    """Records every acknowledged customer-list write, with its hashed identifiers.

    The emulator's request log keeps only counts; the test wants the exact hashes each
    run sent, so it wraps the in-process emulator's request handler.
    """

    emulator: Emulator
    writes: list[Write] = field(default_factory=list)

    def install(self) -> None:
        original = self.emulator.handle_http

        def spy(method: str, target: str, headers: dict[str, str], body: bytes) -> Any:
            outcome = original(method, target, headers, body)
            if method in ("POST", "PATCH") and "/customer_lists" in target and outcome.status < 300:
                payload = json.loads(body)
                list_id = target.rsplit("/", 1)[1] if method == "PATCH" else None
                self.writes.append(
                    Write(
                        list_id=list_id,
                        name=payload.get("name"),
                        operation=payload.get("operation_type", "CREATE"),
                        records=frozenset(payload["records"].split(",")),
                    )
                )
            return outcome

        self.emulator.handle_http = spy  # type: ignore[method-assign]

    def take(self) -> dict[tuple[str, str], frozenset[str]]:
        """Hashes sent since the last call, by (list name, ADD or REMOVE)."""
        names = {item["id"]: name for name, item in lists_by_name(self.emulator).items()}
        sent: dict[tuple[str, str], frozenset[str]] = {}
        for write in self.writes:
            name = write.name if write.list_id is None else names[write.list_id]
            operation = "ADD" if write.operation == "CREATE" else write.operation
            key = (str(name), operation)
            sent[key] = sent.get(key, frozenset()) | write.records
        self.writes.clear()
        return sent


@dataclass
class MeltanoProject:
    root: Path
    env: dict[str, str]
    emulator: Emulator
    spy: WriteSpy

    def meltano(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(MELTANO), *args],
            cwd=self.root,
            env=env if env is not None else self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ok(self, *args: str, timeout: float = 300) -> str:
        """Run meltano, require success, return everything it printed."""
        completed = self.meltano(*args, timeout=timeout)
        output = completed.stdout + completed.stderr
        assert completed.returncode == 0, f"meltano {' '.join(args)} failed:\n{output}"
        return output

    def state(self) -> dict[str, Any]:
        completed = self.meltano("state", "get", STATE_ID)
        assert completed.returncode == 0, completed.stdout + completed.stderr
        state: dict[str, Any] = json.loads(completed.stdout)
        return state


def clean_environment() -> dict[str, str]:
    """The caller's environment without anything that would steer Meltano or a plugin."""
    prefixes = ("MELTANO_", "TAP_SPREADSHEETS_", "TARGET_PINTEREST_AUDIENCES_", "PINTEREST_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.pop("VIRTUAL_ENV", None)  # the dev venv must not leak into the plugins' venvs
    env["MELTANO_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    return env


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeltanoProject]:
    if not MELTANO.exists():
        pytest.fail(
            f"{MELTANO} is missing: run `make meltano-venv` (make test does) to install "
            "Meltano in its own venv; these tests must not be skipped"
        )
    root = tmp_path_factory.mktemp("meltano-project")
    text = (REPO / "meltano.yml").read_text(encoding="utf-8")
    assert text.count("    pip_url: -e .\n") == 1
    # The loader is installed from this checkout, editable, as in the repository's project.
    (root / "meltano.yml").write_text(text.replace("-e .\n", f"-e {REPO}\n"), encoding="utf-8")
    shutil.copytree(REPO / "examples", root / "examples")
    stamp = FIRST_EXPORT_TIME.timestamp()
    os.utime(root / SAMPLE, (stamp, stamp))

    emulator = Emulator(EmulatorConfig()).start()
    spy = WriteSpy(emulator)
    spy.install()
    env = clean_environment()
    env["PINTEREST_API_URL"] = emulator.url
    env["TARGET_PINTEREST_AUDIENCES_ACCESS_TOKEN"] = TOKEN
    meltano_project = MeltanoProject(root, env, emulator, spy)
    try:
        meltano_project.ok("install", timeout=900)
        yield meltano_project
    finally:
        emulator.stop()


def changes(path: Path) -> list[tuple[str, str, bool]]:
    """(audience, normalized email, in_audience) per row of a sample CSV, in file order.

    Computed here from the raw file, independently of the target: emails trimmed and
    lowercased; only an explicit "false" removes (the stream map in meltano.yml).
    """
    with path.open(newline="", encoding="utf-8") as handle:
        return [
            (
                row["audience_key"],
                row["email"].strip().lower(),
                row["in_audience"].strip().lower() != "false",
            )
            for row in csv.DictReader(handle)
        ]


def apply(members: dict[str, set[str]], rows: list[tuple[str, str, bool]]) -> dict[str, set[str]]:
    result = {name: set(hashes) for name, hashes in members.items()}
    for audience, email, present in rows:
        hashes = result.setdefault(audience, set())
        if present:
            hashes.add(sha(email))
        else:
            hashes.discard(sha(email))
    return result


def net_changes(rows: list[tuple[str, str, bool]]) -> dict[tuple[str, str], frozenset[str]]:
    """What a run must send: the last change per (audience, user), grouped."""
    last: dict[tuple[str, str], bool] = {}
    for audience, email, present in rows:
        last[(audience, email)] = present
    grouped: dict[tuple[str, str], frozenset[str]] = {}
    for (audience, email), present in last.items():
        key = (audience, "ADD" if present else "REMOVE")
        grouped[key] = grouped.get(key, frozenset()) | {sha(email)}
    return grouped


def bookmark(when: datetime) -> dict[str, Any]:
    """The state tap-spreadsheets leaves after reading files up to ``when``."""
    value = when.isoformat()
    return {
        "singer_state": {
            "bookmarks": {
                "memberships": {
                    "replication_key": "_sdc_last_modified",
                    "replication_key_value": value,
                }
            }
        }
    }


def assert_private(output: str) -> None:
    assert TOKEN not in output
    assert not EMAIL_PATTERN.findall(output), EMAIL_PATTERN.findall(output)


@pytest.mark.meltano
def test_meltano_run_syncs_the_export_then_only_what_changed(project: MeltanoProject) -> None:
    emulator = project.emulator
    first_rows = changes(project.root / SAMPLE)

    # 0. Without credentials the loader refuses to start, nothing is sent, no state is kept.
    no_token = {
        k: v for k, v in project.env.items() if k != "TARGET_PINTEREST_AUDIENCES_ACCESS_TOKEN"
    }
    failed = project.meltano("run", TAP, LOADER, env=no_token)
    assert failed.returncode != 0
    assert "config['access_token'] is required" in failed.stdout + failed.stderr
    assert emulator.counters()["total_requests"] == 0
    assert STATE_ID not in project.ok("state", "list")

    # 1. First run: the whole export.
    output = project.ok("run", TAP, LOADER)

    expected = apply({}, first_rows)
    assert members_by_name(emulator) == expected
    sent = project.spy.take()
    wanted = net_changes(first_rows)
    assert {k: v for k, v in sent.items() if k[1] == "ADD"} == {
        k: v for k, v in wanted.items() if k[1] == "ADD"
    }
    for key, hashes in sent.items():  # removals for a list created this run may be skipped
        assert hashes <= wanted[key], key
    assert project.state() == bookmark(FIRST_EXPORT_TIME)
    assert STATE_ID in project.ok("state", "list")
    assert (project.root / ".meltano" / "meltano.db").exists()  # Meltano's system database
    assert_private(output)

    # 2. A new export lands in the folder; the job runs: only its rows are sent.
    second = project.root / SAMPLE_DIR / "2026-01-06-crm-export.csv"
    second.write_text(SECOND_EXPORT, encoding="utf-8")
    stamp = SECOND_EXPORT_TIME.timestamp()
    os.utime(second, (stamp, stamp))
    second_rows = changes(second)
    writes_before = emulator.counters()["requests_by_route"]

    output = project.ok("run", JOB)

    expected = apply(expected, second_rows)
    assert members_by_name(emulator) == expected
    assert project.spy.take() == net_changes(second_rows)
    assert project.state() == bookmark(SECOND_EXPORT_TIME)
    assert_private(output)
    writes_after = emulator.counters()["requests_by_route"]
    new_writes = {
        route: count - writes_before.get(route, 0)
        for route, count in writes_after.items()
        if "customer_lists" in route
        and not route.startswith("GET")
        and count != writes_before.get(route, 0)
    }
    # One create (the new audience) and one update per operation and existing list.
    assert sum(new_writes.values()) == len(net_changes(second_rows)), new_writes

    # 3. Nothing new: nothing is sent and the bookmark stays.
    project.ok("run", JOB)

    assert project.spy.take() == {}
    assert members_by_name(emulator) == expected
    assert project.state() == bookmark(SECOND_EXPORT_TIME)
    assert_contract_kept(emulator)


@pytest.mark.meltano
def test_an_unset_api_url_is_an_error_not_the_real_pinterest(project: MeltanoProject) -> None:
    # Without strict_env_var_mode Meltano would drop api_url and the loader would default
    # to https://api.pinterest.com/v5 with the dev environment's settings.
    env = {k: v for k, v in project.env.items() if k != "PINTEREST_API_URL"}
    completed = project.meltano("--environment", "dev", "config", "print", LOADER, env=env)

    assert completed.returncode != 0
    assert "'PINTEREST_API_URL' referenced but not set" in completed.stdout + completed.stderr


@pytest.mark.meltano
def test_meltano_config_shows_the_settings_and_hides_the_token(project: MeltanoProject) -> None:
    output = project.ok("--environment", "dev", "config", "list", LOADER)

    assert "ad_account_id (required)" in output
    assert f"'{project.emulator.url}'" in output  # the dev environment's $PINTEREST_API_URL
    assert "Group 1: access_token, ad_account_id" in output
    assert "current value: (redacted)" in output  # the access token, from the environment
    assert TOKEN not in output
