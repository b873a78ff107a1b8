"""Read ``--config`` files with one-line errors a user can act on.

The SDK reads them in a command-line callback, where a missing file or a stray comma ends
in a library traceback before the target has a say. This reader gives one message per
problem that names the file and what is wrong with it (for JSON: the line and column),
never its content: a config file holds secrets.
"""

from __future__ import annotations

import decimal
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from target_pinterest_audiences.errors import TargetError

ENV = "ENV"
"""The ``--config`` value that means "read settings from environment variables"."""


@dataclass(frozen=True)
class ConfigInput:
    """What ``--config`` said: the merged settings, and whether to read the environment.

    The target's own type, not the SDK's (a private class): the target both reads
    ``--config`` (``cb_config``) and consumes the result (``invoke``).
    """

    config: dict[str, Any] = field(default_factory=dict)
    parse_env: bool = False


class ConfigFileError(TargetError):
    """A ``--config`` file that cannot be read as a JSON object."""


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The JSON object in ``path`` (numbers with a fraction as Decimal, as the SDK reads)."""
    where = f"config file {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigFileError(f"{where} does not exist") from None
    except IsADirectoryError:
        raise ConfigFileError(f"{where} is a directory, not a JSON file") from None
    except UnicodeDecodeError:
        raise ConfigFileError(f"{where} is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigFileError(f"{where} cannot be read ({exc.strerror})") from None
    try:
        config = json.loads(text, parse_float=decimal.Decimal)
    except json.JSONDecodeError as exc:
        msg = f"{where} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        raise ConfigFileError(msg) from None
    if not isinstance(config, dict):
        msg = f"{where} must hold a JSON object of settings, not {_json_kind(config)}"
        raise ConfigFileError(msg)
    return config


def read_config_files(values: tuple[str, ...]) -> tuple[dict[str, Any], bool]:
    """Merge the ``--config`` files in order; also say whether ``ENV`` was among them."""
    config: dict[str, Any] = {}
    parse_env = False
    for value in values:
        if value == ENV:
            parse_env = True
        else:
            config |= read_config_file(value)
    return config, parse_env


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"
