"""The lock files in requirements/ agree with pyproject.toml and with each other.

`make install` and `make demo` install exactly these pins (with uv); a dependency added to
pyproject.toml without `make lock` would otherwise go untested until someone's fresh clone.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
DEV_TOOLS = {"pytest", "ruff", "mypy"}


def pins(name: str) -> dict[str, str]:
    """Package name -> pinned version, for one lock file."""
    found: dict[str, str] = {}
    for line in (ROOT / "requirements" / name).read_text(encoding="utf-8").splitlines():
        match = PIN.match(line)
        if match:
            found[canonicalize_name(match[1])] = match[2]
    return found


def project() -> dict[str, object]:
    found: dict[str, object] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))[
        "project"
    ]
    return found


def assert_locked(requirements: list[str], locked: dict[str, str], lock: str) -> None:
    for text in requirements:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is not in requirements/{lock}: run make lock"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"requirements/{lock} pins {name}=={locked[name]}, outside {requirement}: run make lock"
        )


def test_runtime_lock_pins_every_dependency_and_no_dev_tool() -> None:
    runtime = pins("runtime.txt")
    assert_locked(project()["dependencies"], runtime, "runtime.txt")  # type: ignore[arg-type]
    assert not DEV_TOOLS & set(runtime), "make demo must not install development tools"


def test_dev_lock_pins_every_dependency_and_dev_extra() -> None:
    extras = project()["optional-dependencies"]
    wanted = [*project()["dependencies"], *extras["dev"], *extras["postgres"]]  # type: ignore[index, misc]
    assert_locked(wanted, pins("dev.txt"), "dev.txt")


def test_runtime_and_dev_locks_agree_on_every_shared_package() -> None:
    dev = pins("dev.txt")
    for name, version in pins("runtime.txt").items():
        assert dev.get(name) == version, f"{name}: runtime {version}, dev {dev.get(name)}"


def test_every_locked_package_carries_hashes() -> None:
    for lock in ("runtime.txt", "dev.txt", "meltano.txt"):
        text = (ROOT / "requirements" / lock).read_text(encoding="utf-8")
        blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
        for block in blocks:
            if PIN.match(block):
                assert "--hash=sha256:" in block, f"{lock}: {block.splitlines()[0]}"


def test_meltano_lock_pins_the_makefile_meltano_version() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    (version,) = re.findall(r"^MELTANO_VERSION := (\S+)$", makefile, re.MULTILINE)
    assert pins("meltano.txt").get("meltano") == version, "run make lock"
