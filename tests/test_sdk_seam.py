"""The singer-sdk seam: a canary for every private SDK name, and the fence around them.

``sdk_seam.HOOKS`` is the list of private singer-sdk names the target relies on. The canary
checks each against the installed SDK; the tests after it show that the canary does fail
when a hook disappears, changes its parameters or stops being called, and that no other
module of the package uses a private SDK name.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from singer_sdk import Target
from singer_sdk.contrib.msgspec import MsgSpecReader
from singer_sdk.plugin_base import BaseSingerReader
from singer_sdk.sinks import Sink

from target_pinterest_audiences import sdk_seam
from target_pinterest_audiences.sdk_seam import HOOKS, SDKSeam, seam_problems
from target_pinterest_audiences.target import TargetPinterestAudiences

PACKAGE = Path(sdk_seam.__file__).parent


def test_every_private_hook_still_exists_in_the_installed_sdk() -> None:
    """The canary: on failure, each line names the hook and why the target needs it."""
    problems = seam_problems()
    assert problems == [], "\n".join(problems)


def test_the_canary_reports_a_hook_that_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    assert seam_problems() == []
    monkeypatch.delattr(Target, "_write_state_message")

    problems = seam_problems()

    assert len(problems) == 1
    assert problems[0].startswith("singer-sdk Target._write_state_message is gone.")
    assert "STATE must wait until Pinterest acknowledged" in problems[0]


def test_the_canary_reports_a_hook_whose_parameters_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def renamed(self: Target, *, fail: bool = True) -> list[str]:
        return []

    monkeypatch.setattr(Target, "_validate_config", renamed)

    (problem,) = seam_problems()

    assert problem.startswith(
        "singer-sdk Target._validate_config now takes (self, *, fail=True), "
        "not (self, *, raise_errors=True)."
    )


def test_the_canary_reports_a_hook_the_sdk_no_longer_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def drain_all(self: Target, *, is_endofpipe: bool = False) -> None:
        """A release that writes STATE some other way: the override would never run."""

    monkeypatch.setattr(Target, "drain_all", drain_all)

    (problem,) = seam_problems()

    assert problem.startswith(
        "singer-sdk Target._write_state_message is no longer used by Target.drain_all"
    )


def test_the_canary_reports_a_class_property_that_became_something_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # raising=False: reading the class property on the abstract Target itself fails.
    monkeypatch.setattr(Target, "_env_var_config", {}, raising=False)

    (problem,) = seam_problems()

    assert problem.startswith("singer-sdk Target._env_var_config is no longer a class property.")


def test_a_removed_caller_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(BaseSingerReader, "process_lines")

    problems = seam_problems()

    assert len(problems) == 3  # the RECORD, SCHEMA and BATCH handlers
    assert all("its caller BaseSingerReader.process_lines is gone" in p for p in problems)


def test_every_private_override_of_the_seam_is_checked_by_the_canary() -> None:
    checked = {hook.name for hook in HOOKS}
    overridden = {name for name in vars(SDKSeam) if _is_private(name) and hasattr(Target, name)}
    assert overridden <= checked
    assert all(hook.why for hook in HOOKS)


def test_the_target_overrides_no_private_sdk_name_outside_the_seam() -> None:
    """A private SDK method redefined on the target class itself would bypass the seam."""
    sdk_names = {name for name in dir(Target) if _is_private(name)}
    for cls in TargetPinterestAudiences.__mro__:
        if cls is SDKSeam:
            break
        own = {name for name in vars(cls) if name in sdk_names}
        assert own == set(), f"{cls.__name__} overrides {sorted(own)} outside sdk_seam.py"


def _sdk_private_names() -> set[str]:
    """Private names of the SDK classes the package subclasses: methods and attributes."""
    names: set[str] = set()
    for base in (Target, Sink, MsgSpecReader):
        for cls in base.__mro__:
            if not cls.__module__.startswith("singer_sdk"):
                continue
            names.update(name for name in vars(cls) if _is_private(name))
            names.update(re.findall(r"self\.(_[A-Za-z]\w*)", inspect.getsource(cls)))
    return names


def _is_private(name: str) -> bool:
    """A single-underscore name (``_abc_impl`` is Python's, on every abstract class)."""
    return name.startswith("_") and not name.startswith("__") and name != "_abc_impl"


SDK_PRIVATE_NAMES = _sdk_private_names()
_ATTRIBUTE = re.compile(r"(?:self|cls|super\(\))\.(_[A-Za-z]\w*)")
_PRIVATE_IMPORT = re.compile(
    r"from singer_sdk[\w.]* import [^\n]*\b_[A-Za-z]\w*|singer_sdk(?:\.\w+)*\._\w+"
)


def private_sdk_names_in(source: str) -> list[str]:
    """The private singer-sdk names ``source`` uses: SDK attributes, imports, base-skipping."""
    found = sorted({m.group(1) for m in _ATTRIBUTE.finditer(source)} & SDK_PRIVATE_NAMES)
    found += [m.group(0) for m in _PRIVATE_IMPORT.finditer(source)]
    if "__func__" in source:  # calling a base class's method past the SDK class in between
        found.append("__func__")
    return found


def test_no_other_module_uses_a_private_sdk_name() -> None:
    """``git grep`` by test: outside sdk_seam.py, no module names a private SDK attribute."""
    offenders: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "sdk_seam.py":
            continue
        uses = private_sdk_names_in(path.read_text(encoding="utf-8"))
        if uses:
            offenders[str(path.relative_to(PACKAGE))] = uses
    assert offenders == {}


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("sink = self._sinks_active.get(name)", ["_sinks_active"]),
        ("super()._write_state_message(state)", ["_write_state_message"]),
        ("self._MAX_RECORD_AGE_IN_MINUTES = 1", ["_MAX_RECORD_AGE_IN_MINUTES"]),
        ("config.update(cls._env_var_config)", ["_env_var_config"]),
        (
            "from singer_sdk.plugin_base import PluginBase, _ConfigInput",
            ["from singer_sdk.plugin_base import PluginBase, _ConfigInput"],
        ),
        ("PluginBase.invoke.__func__(cls)", ["__func__"]),
        ("self._routes.clear()", []),  # the target's own
    ],
)
def test_the_fence_check_sees_private_names(source: str, found: list[str]) -> None:
    assert private_sdk_names_in(source) == found
