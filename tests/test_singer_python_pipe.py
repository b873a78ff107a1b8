"""A classic singer-python tap piped into the installed target: ``tap | target``.

Most Singer taps in the wild are not built on the Meltano SDK but on the ``singer-python``
library. The writer below emits exactly what that library's ``write_schema``,
``write_record``, ``write_version`` and ``write_state`` print (singer-python 6.x,
``singer/messages.py``): one ``json.dumps`` line per message with the default separators
and ``ensure_ascii=True``; RECORD with ``time_extracted`` formatted as
``%Y-%m-%dT%H:%M:%S.%fZ`` in UTC and ``version`` for versioned (full-table) streams;
SCHEMA with ``key_properties`` and ``bookmark_properties``; ACTIVATE_VERSION; STATE with
``value``. It runs as its own process and its stdout is connected to the target's stdin by
a real OS pipe, as a shell would do it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from target_pinterest_audiences.emulator import Emulator

from support import (
    TOKEN,
    assert_contract_kept,
    emulator_config,
    members_by_name,
    sha,
    target_command,
)

# Every test here runs the installed console script as a subprocess.
pytestmark = pytest.mark.slow

# The writer only knows how to format and print messages, like singer-python does; what to
# print comes from a JSON file the test writes (its own stdout is the pipe).
WRITER = r"""
import datetime
import json
import sys

# singer-python: singer.utils.strftime with DATETIME_FMT "%04Y-%m-%dT%H:%M:%S.%fZ"
DATETIME_FMT = "%Y-%m-%dT%H:%M:%S.%fZ"


def write_message(message):
    # singer-python: simplejson.dumps(message.asdict(), use_decimal=True,
    # ensure_ascii=True, allow_nan=False) + "\n", then flush
    sys.stdout.write(json.dumps(message, ensure_ascii=True, allow_nan=False) + "\n")
    sys.stdout.flush()


def write_schema(stream, schema, key_properties, bookmark_properties=None):
    message = {"type": "SCHEMA", "stream": stream, "schema": schema,
               "key_properties": key_properties}
    if bookmark_properties:
        message["bookmark_properties"] = bookmark_properties
    write_message(message)


def write_record(stream, record, version=None, time_extracted=None):
    message = {"type": "RECORD", "stream": stream, "record": record}
    if version is not None:
        message["version"] = version
    if time_extracted:
        message["time_extracted"] = time_extracted.astimezone(
            datetime.timezone.utc).strftime(DATETIME_FMT)
    write_message(message)


def write_version(stream, version):
    write_message({"type": "ACTIVATE_VERSION", "stream": stream, "version": version})


def write_state(value):
    write_message({"type": "STATE", "value": value})


with open(sys.argv[1], encoding="utf-8") as handle:
    script = json.load(handle)
extracted = datetime.datetime(2026, 1, 5, 6, 30, 15, 123456, tzinfo=datetime.timezone.utc)
for step in script:
    kind = step[0]
    if kind == "schema":
        write_schema(step[1], step[2], step[3], step[4])
    elif kind == "record":
        write_record(step[1], step[2], version=step[3], time_extracted=extracted)
    elif kind == "version":
        write_version(step[1], step[2])
    elif kind == "state":
        write_state(step[1])
"""

CONTACTS = "crm_contacts"  # explicit form, full table with a version, like tap-postgres
NEWSLETTER = "newsletter_signups"  # plain form: the stream name is the audience
VERSION = 1767594615123
EMAIL_PATTERN = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")

CONTACTS_SCHEMA = {
    "type": "object",
    "properties": {
        "contact_id": {"type": ["integer"], "inclusion": "automatic"},
        "email": {"type": ["null", "string"], "inclusion": "available"},
        "audience_key": {"type": ["null", "string"], "inclusion": "available"},
        "in_audience": {"type": ["null", "boolean"], "inclusion": "available"},
        "lifetime_value": {"type": ["null", "number"], "inclusion": "available"},
        "updated_at": {
            "type": ["null", "string"],
            "format": "date-time",
            "inclusion": "automatic",
        },
    },
}
NEWSLETTER_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": ["integer"], "inclusion": "automatic"},
        "email": {"type": ["null", "string"], "inclusion": "available"},
        "signed_up_at": {"type": ["null", "string"], "format": "date-time"},
    },
}


def contact_rows(count: int) -> list[dict[str, Any]]:
    """CRM contacts: mixed-case emails, a non-ASCII one, two audiences, some churned."""
    rows = []
    for n in range(count):
        email = f"Contact.{n}@Example.COM" if n % 7 == 0 else f"contact.{n}@example.com"
        if n == 5:
            email = "  zoë.ünïcode@example.com "  # ensure_ascii writes \u escapes
        rows.append(
            {
                "contact_id": n,
                "email": email,
                "audience_key": "high_value" if n % 3 == 0 else "repeat_buyers",
                "in_audience": True,
                "lifetime_value": round(n * 1.25, 2),
                "updated_at": f"2026-01-0{1 + n % 5}T10:00:00.000000Z",
            }
        )
    # Later in the table: churned contacts leave their audience (the last change wins).
    for n in range(0, count, 10):
        rows.append({**rows[n], "in_audience": False, "updated_at": "2026-01-05T12:00:00Z"})
    return rows


def newsletter_rows(count: int) -> list[dict[str, Any]]:
    return [
        {"id": n, "email": f"reader{n}@example.org", "signed_up_at": "2026-01-04T08:00:00Z"}
        for n in range(count)
    ]


def build_script(
    contacts: list[dict[str, Any]], newsletter: list[dict[str, Any]]
) -> tuple[list[list[Any]], list[dict[str, Any]]]:
    """The writer's messages, in a tap's order, and every STATE value it emits."""
    states: list[dict[str, Any]] = []
    script: list[list[Any]] = []

    def state(value: dict[str, Any]) -> None:
        states.append(value)
        script.append(["state", value])

    state({"currently_syncing": CONTACTS, "bookmarks": {}})
    script.append(["schema", CONTACTS, CONTACTS_SCHEMA, ["contact_id"], ["updated_at"]])
    for index, row in enumerate(contacts, start=1):
        script.append(["record", CONTACTS, row, VERSION])
        if index % 1000 == 0:
            state(
                {
                    "currently_syncing": CONTACTS,
                    "bookmarks": {CONTACTS: {"version": VERSION, "last_pk_fetched": index}},
                }
            )
    script.append(["version", CONTACTS, VERSION])
    state({"currently_syncing": NEWSLETTER, "bookmarks": {CONTACTS: {"version": VERSION}}})
    script.append(["schema", NEWSLETTER, NEWSLETTER_SCHEMA, ["id"], ["signed_up_at"]])
    for row in newsletter:
        script.append(["record", NEWSLETTER, row, None])
    state(
        {
            "currently_syncing": None,
            "bookmarks": {
                CONTACTS: {"version": VERSION},
                NEWSLETTER: {"signed_up_at": "2026-01-04T08:00:00Z"},
            },
        }
    )
    return script, states


def expected_members(
    contacts: list[dict[str, Any]], newsletter: list[dict[str, Any]]
) -> dict[str, set[str]]:
    """Computed from the raw rows: trim and lowercase, the last change per user wins."""
    members: dict[str, set[str]] = {}
    for row in contacts:
        hashes = members.setdefault(row["audience_key"], set())
        if row["in_audience"]:
            hashes.add(sha(row["email"].strip().lower()))
        else:
            hashes.discard(sha(row["email"].strip().lower()))
    members[NEWSLETTER] = {sha(row["email"].strip().lower()) for row in newsletter}
    return members


def test_singer_python_tap_piped_into_the_target(emulator: Emulator, tmp_path: Path) -> None:
    contacts = contact_rows(2500)
    newsletter = newsletter_rows(120)
    script, states = build_script(contacts, newsletter)
    script_path = tmp_path / "messages.json"
    script_path.write_text(json.dumps(script), encoding="utf-8")
    writer_path = tmp_path / "singer_python_tap.py"
    writer_path.write_text(WRITER, encoding="utf-8")
    config_path = tmp_path / "config.json"
    # Small requests so the run makes several per list while the pipe stays busy.
    config_path.write_text(
        json.dumps(emulator_config(emulator, records_per_request=400)), encoding="utf-8"
    )

    # tap | target, as a shell runs it: the target reads the writer's stdout directly.
    writer = subprocess.Popen(
        [sys.executable, str(writer_path), str(script_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert writer.stdout is not None
    target = subprocess.Popen(
        [*target_command(), "--config", str(config_path)],
        stdin=writer.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    writer.stdout.close()  # the target holds the only read end now
    try:
        stdout, stderr = target.communicate(timeout=180)
        _, writer_stderr = writer.communicate(timeout=30)
    finally:
        for process in (writer, target):
            if process.poll() is None:
                process.kill()
                process.wait()

    assert writer.returncode == 0, writer_stderr.decode()
    assert target.returncode == 0, stderr
    assert members_by_name(emulator) == expected_members(contacts, newsletter)
    assert_contract_kept(emulator)
    # A target prints the value of each STATE it confirms, one JSON document a line.
    emitted = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    assert emitted, "no STATE was emitted"
    assert emitted[-1] == states[-1]
    # Every STATE the target passed on is one the tap sent, in the tap's order.
    positions = [states.index(value) for value in emitted]
    assert positions == sorted(positions)
    # Several requests per list were needed, and all of them carried hashes only.
    writes = [r for r in emulator.requests() if r["record_count"]]
    assert len(writes) > len(members_by_name(emulator))
    assert TOKEN not in stderr
    assert not EMAIL_PATTERN.findall(stderr), EMAIL_PATTERN.findall(stderr)[:5]
