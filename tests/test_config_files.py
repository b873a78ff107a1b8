"""Tests for target_pinterest_audiences.config_files: --config files with one-line errors."""

from __future__ import annotations

import decimal
import os
import re
from pathlib import Path

import pytest

from target_pinterest_audiences.config_files import (
    ConfigFileError,
    read_config_file,
    read_config_files,
)

SECRET = "pina_secret_in_the_file_123456"


def write(tmp_path: Path, content: str | bytes, name: str = "config.json") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_a_json_object_is_read_with_decimal_fractions_as_the_sdk_does(tmp_path: Path) -> None:
    path = write(tmp_path, '{"ad_account_id": "1", "max_removal_fraction": 0.25, "n": 3}')
    assert read_config_file(path) == {
        "ad_account_id": "1",
        "max_removal_fraction": decimal.Decimal("0.25"),
        "n": 3,
    }


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "is not valid JSON: Expecting value at line 1, column 1"),
        (
            "{\n  'ad_account_id': 1}",
            "is not valid JSON: Expecting property name enclosed in "
            "double quotes at line 2, column 3",
        ),
        (
            # Python 3.13 words this one differently ("Illegal trailing comma before end of
            # object", one column earlier): the decoder's own message, whichever it is.
            f'{{"access_token": "{SECRET}",}}',
            re.compile(r"is not valid JSON: [^\n]+ at line 1, column 5[01]"),
        ),
        (
            f'{{"access_token": "{SECRET}"',
            "is not valid JSON: Expecting ',' delimiter at line 1, column 50",
        ),
        ("[]", "must hold a JSON object of settings, not an array"),
        ('"ad_account_id"', "must hold a JSON object of settings, not a string"),
        ("null", "must hold a JSON object of settings, not null"),
        ("42", "must hold a JSON object of settings, not a number"),
        ("true", "must hold a JSON object of settings, not a boolean"),
        (b'{"a": "\xff"}', "is not UTF-8 text"),
    ],
)
def test_a_broken_file_is_one_line_naming_the_file_and_never_its_content(
    tmp_path: Path, content: str | bytes, problem: str | re.Pattern[str]
) -> None:
    path = write(tmp_path, content)
    with pytest.raises(ConfigFileError) as raised:
        read_config_file(path)
    if isinstance(problem, re.Pattern):
        assert re.fullmatch(
            f"config file {re.escape(str(path))} {problem.pattern}", str(raised.value)
        )
    else:
        assert str(raised.value) == f"config file {path} {problem}"
    assert SECRET not in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match=r"config file .*nope\.json does not exist$"):
        read_config_file(tmp_path / "nope.json")


def test_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match=r"is a directory, not a JSON file$"):
        read_config_file(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_file(tmp_path: Path) -> None:
    path = write(tmp_path, "{}")
    path.chmod(0)
    with pytest.raises(ConfigFileError, match=r"cannot be read \(Permission denied\)$"):
        read_config_file(path)


def test_files_merge_in_order_and_env_is_a_flag(tmp_path: Path) -> None:
    first = write(tmp_path, '{"a": 1, "b": 1}', "first.json")
    second = write(tmp_path, '{"b": 2}', "second.json")
    assert read_config_files((str(first), "ENV", str(second))) == ({"a": 1, "b": 2}, True)
    assert read_config_files(()) == ({}, False)
