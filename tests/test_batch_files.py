"""BATCH messages: records in files, read through the same record path as RECORD lines.

The end-to-end tests write batch files with the SDK's own JSON-lines batcher (what an SDK
tap with ``batch_config`` writes) and its own BATCH message class, pipe the messages into
the installed console script against the emulator, and check membership, counts, rejects
and STATE; unit tests read files directly through ``batch_files``.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from singer_sdk.contrib.batch_encoder_jsonl import JSONLinesBatcher
from singer_sdk.helpers._batch import BaseBatchFileEncoding, BatchConfig, SDKBatchMessage
from singer_sdk.singerlib.json import serialize_json

from target_pinterest_audiences import reader as reader_module
from target_pinterest_audiences.batch_files import BatchFileError, BatchFiles, display_url
from target_pinterest_audiences.emulator import Emulator

from support import (
    TOKEN,
    StderrLines,
    assert_contract_kept,
    emulator_config,
    members_by_name,
    record,
    run_target,
    schema,
    sha,
    state,
    target_command,
)

STREAM = "users"


def emails(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{n:03d}@example.com" for n in range(count)]


def sdk_batches(tmp_path: Path, records: list[dict[str, Any]], batch_size: int) -> list[str]:
    """Files as an SDK tap writes them (gzipped JSON lines), one manifest per batch."""
    config = BatchConfig.from_dict(
        {
            "encoding": {"format": "jsonl", "compression": "gzip"},
            "storage": {"root": (tmp_path / "batches").as_uri(), "prefix": "tap-"},
            "batch_size": batch_size,
        }
    )
    batcher = JSONLinesBatcher("tap-test", STREAM, config)
    return [url for manifest in batcher.get_batches(iter(records)) for url in manifest]


def batch(manifest: list[str], compression: str | None = "gzip", fmt: str = "jsonl") -> str:
    """The BATCH line an SDK tap writes."""
    message = SDKBatchMessage(
        stream=STREAM,
        encoding=BaseBatchFileEncoding(format=fmt, compression=compression),
        manifest=manifest,
    )
    return serialize_json(message.to_dict())


def write_lines(path: Path, lines: list[str], *, gzipped: bool = False) -> str:
    data = "".join(f"{line}\n" for line in lines).encode()
    path.write_bytes(gzip.compress(data) if gzipped else data)
    return path.as_uri()


def assert_stopped_cleanly(run: Any, *names: str) -> None:
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if "| ERROR" in line]
    assert errors, run.stderr
    for name in names:
        assert name in errors[-1], errors


# End to end: the console script against the emulator ----------------------------------


@pytest.mark.slow  # runs the console script
def test_batch_files_of_an_sdk_tap_are_read_like_record_lines(
    emulator: Emulator, tmp_path: Path
) -> None:
    batched = emails("batched", 25)
    bad = {"email": "not-an-email", "user_id": 99}
    manifest = sdk_batches(
        tmp_path, [{"email": e, "user_id": n} for n, e in enumerate(batched)] + [bad], batch_size=10
    )
    assert len(manifest) == 3
    reject_file = tmp_path / "rejects.jsonl"
    messages: list[Any] = [
        schema(STREAM, "email", key_properties=["email"]),
        record(STREAM, email="line.before@example.com"),
        batch(manifest[:2]),
        state({"bookmarks": {STREAM: "after-two-files"}}),
        batch(manifest[2:]),
        record(STREAM, email="line.after@example.com"),
        state({"bookmarks": {STREAM: "end"}}),
    ]

    run = run_target(tmp_path, emulator_config(emulator, reject_file=str(reject_file)), messages)

    assert run.returncode == 0, run.stderr
    expected = {sha(e) for e in [*batched, "line.before@example.com", "line.after@example.com"]}
    assert members_by_name(emulator) == {STREAM: expected}
    assert run.state_lines[-1] == {"bookmarks": {STREAM: "end"}}
    # Counted like records: 1 line + 26 from files + 1 line; the bad one is record 27.
    assert f"Stream '{STREAM}': 28 records read, 27 used, skipped no_valid_identifier=1" in (
        run.stderr
    )
    assert "2 batch manifests" in run.stderr
    rejects = [json.loads(line) for line in reject_file.read_text().splitlines()]
    assert [(r["record_number"], r["reason"]) for r in rejects] == [
        (27, "email_malformed"),
        (27, "no_valid_identifier"),
    ]
    assert_contract_kept(emulator)
    assert not any(e in run.output for e in batched)
    assert TOKEN not in run.output


@pytest.mark.slow  # runs the console script
@pytest.mark.parametrize(
    ("gzipped", "declared"),
    [(False, None), (False, "none"), (True, None), (False, "gzip")],
    ids=["plain-undeclared", "plain-none", "gzip-undeclared", "plain-declared-gzip"],
)
def test_compression_is_recognized_from_the_file_not_the_message(
    emulator: Emulator, tmp_path: Path, gzipped: bool, declared: str | None
) -> None:
    users = emails("plain", 3)
    url = write_lines(
        tmp_path / "users.jsonl", [json.dumps({"email": e}) for e in users], gzipped=gzipped
    )

    run = run_target(
        tmp_path, emulator_config(emulator), [schema(STREAM, "email"), batch([url], declared)]
    )

    assert run.returncode == 0, run.stderr
    assert members_by_name(emulator) == {STREAM: {sha(e) for e in users}}


@pytest.mark.slow  # runs the console script
def test_a_plain_path_in_the_manifest_is_read(emulator: Emulator, tmp_path: Path) -> None:
    path = tmp_path / "users.jsonl"
    write_lines(path, [json.dumps({"email": "path@example.com"})])

    run = run_target(
        tmp_path, emulator_config(emulator), [schema(STREAM, "email"), batch([str(path)])]
    )

    assert run.returncode == 0, run.stderr
    assert members_by_name(emulator) == {STREAM: {sha("path@example.com")}}


@pytest.mark.slow  # runs the console script
def test_stream_maps_apply_to_batch_records(emulator: Emulator, tmp_path: Path) -> None:
    manifest = sdk_batches(
        tmp_path, [{"user_email": "mapped@example.com", "segment": "vip"}], batch_size=10
    )
    config = emulator_config(
        emulator,
        stream_maps={
            STREAM: {
                "email": "user_email",
                "audience_key": "segment",
                "user_email": "__NULL__",
                "segment": "__NULL__",
            }
        },
    )

    run = run_target(tmp_path, config, [schema(STREAM, "user_email", "segment"), batch(manifest)])

    assert run.returncode == 0, run.stderr
    assert members_by_name(emulator) == {"vip": {sha("mapped@example.com")}}


@pytest.mark.slow  # runs the console script
def test_a_mirror_snapshot_in_batch_files(emulator: Emulator, tmp_path: Path) -> None:
    config = emulator_config(
        emulator, sync_mode="mirror", ledger_path=str(tmp_path / "ledger.sqlite3")
    )
    for members in (emails("m", 20), emails("m", 15)):
        manifest = sdk_batches(tmp_path, [{"email": e} for e in members], batch_size=7)
        run = run_target(tmp_path, config, [schema(STREAM, "email"), batch(manifest)])
        assert run.returncode == 0, run.stderr
        assert members_by_name(emulator) == {STREAM: {sha(e) for e in members}}


@pytest.mark.slow  # runs the console script
@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "does not exist; stopping"),
        ("truncated-gzip", "is not a complete gzip file"),
        ("bad-json-line", "line 2 is not valid JSON"),
        ("not-an-object", "line 2 is not a JSON object (one record per line)"),
        ("deeply-nested", "line 2 is nested too deeply to read"),
    ],
)
def test_a_file_that_cannot_be_read_stops_the_run_after_delivering_what_came_before(
    emulator: Emulator, tmp_path: Path, kind: str, message: str
) -> None:
    good = sdk_batches(tmp_path, [{"email": e} for e in emails("good", 4)], batch_size=10)
    path = tmp_path / "broken.json.gz"
    first = json.dumps({"email": "in.broken.file@example.com"})
    in_file = [f"in.file.{n:05d}@example.com" for n in range(5000)]
    if kind == "truncated-gzip":  # the tap died while writing it
        lines = "".join(json.dumps({"email": e}) + "\n" for e in in_file)
        data = gzip.compress(lines.encode())
        path.write_bytes(data[: len(data) // 2])
    elif kind != "missing":
        second = {
            "bad-json-line": '{"email": "x@example.com",}',
            "not-an-object": '["secret.user@example.com"]',
            "deeply-nested": '{"email": "deep@example.com", "t": '
            + "[" * 10_000
            + "]" * 10_000
            + "}",
        }[kind]
        write_lines(path, [first, second, json.dumps({"email": "never@example.com"})], gzipped=True)
    messages: list[Any] = [
        schema(STREAM, "email"),
        record(STREAM, email="line.before@example.com"),
        batch(good),
        state({"bookmarks": {STREAM: "before-the-broken-batch"}}),
        batch([path.as_uri(), *good]),
        record(STREAM, email="never.read@example.com"),
        state({"bookmarks": {STREAM: "end"}}),
    ]

    run = run_target(tmp_path, emulator_config(emulator), messages)

    assert_stopped_cleanly(
        run, f"stream '{STREAM}' (input line 5): batch file {path.as_uri()}", message
    )
    delivered = {sha(e) for e in [*emails("good", 4), "line.before@example.com"]}
    members = members_by_name(emulator)[STREAM]
    if kind == "truncated-gzip":  # what could be decompressed before the cut is delivered
        read_from_file = members - delivered
        assert read_from_file
        assert read_from_file < {sha(e) for e in in_file}
    else:
        if kind != "missing":  # the line read before the broken one is delivered too
            delivered.add(sha("in.broken.file@example.com"))
        assert members == delivered
    assert run.state_lines == [{"bookmarks": {STREAM: "before-the-broken-batch"}}]
    # No value of the broken file reaches the output, whatever broke it.
    raw = ["in.broken.file@example.com", "x@example.com", "secret.user@example.com"]
    raw += ["deep@example.com", "never@example.com", *in_file[:100], *in_file[-100:]]
    assert [value for value in raw if value in run.output] == []
    assert_contract_kept(emulator)


@pytest.mark.slow  # runs the console script
def test_a_batch_record_missing_its_key_property_names_the_file_and_line(
    emulator: Emulator, tmp_path: Path
) -> None:
    url = write_lines(
        tmp_path / "keys.jsonl",
        [
            json.dumps({"user_id": "u1", "email": "keyed@example.com"}),
            json.dumps({"email": "keyless@example.com"}),
        ],
    )

    run = run_target(
        tmp_path,
        emulator_config(emulator),
        [schema(STREAM, "user_id", "email", key_properties=["user_id"]), batch([url])],
    )

    assert_stopped_cleanly(
        run,
        f"stream '{STREAM}', record 2 (input line 2) lacks key properties ['user_id']",
        f"(in batch file {url} line 2)",
    )
    assert members_by_name(emulator) == {STREAM: {sha("keyed@example.com")}}


@pytest.mark.slow  # runs the console script
def test_sigterm_during_a_long_batch_stops_between_its_records(
    emulator: Emulator, tmp_path: Path
) -> None:
    # The batch file is a pipe the test writes to: the target reads it record by record and
    # never sees its end, so only a stop between records lets it exit.
    fifo = tmp_path / "endless.jsonl"
    os.mkfifo(fifo)
    config_path = tmp_path / "config.json"
    # A progress line says when the records written so far were read (see below).
    config = {**emulator_config(emulator), "progress_interval_seconds": 0.05}
    config_path.write_text(json.dumps(config))
    process = subprocess.Popen(
        [*target_command(), "--config", str(config_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None
    stderr_lines = StderrLines(process)
    lines = [schema(STREAM, "email"), state({"bookmarks": {STREAM: "before"}})]
    process.stdin.write("".join(json.dumps(m) + "\n" for m in lines) + batch([str(fifo)]) + "\n")
    process.stdin.flush()
    users = emails("piped", 50)
    with fifo.open("w") as pipe:  # blocks until the target opens the file
        for user in users[:-1]:
            pipe.write(json.dumps({"email": user}) + "\n")
        pipe.flush()
        stderr_lines.wait_for(f"Progress: {len(users) - 1} records read")
        process.send_signal(signal.SIGTERM)
        # Nothing tells when the signal has arrived: give it time to, while the target waits
        # for the next record (a record sent first would leave it waiting for more).
        time.sleep(0.5)
        pipe.write(json.dumps({"email": users[-1]}) + "\n")  # the record after the signal
        pipe.flush()
        process.wait(timeout=60)
    assert process.stdout is not None
    stdout = process.stdout.read()  # a few STATE lines: the pipe held them while it ran
    stderr = stderr_lines.all()

    assert process.returncode == 0, stderr
    assert "Received signal 15: sending what was read, then stopping" in stderr
    assert members_by_name(emulator) == {STREAM: {sha(user) for user in users}}
    assert [json.loads(line) for line in stdout.splitlines()] == [{"bookmarks": {STREAM: "before"}}]


@pytest.mark.slow  # runs the console script
@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"encoding": {"format": "parquet"}, "manifest": []}, "format 'parquet' cannot be read"),
        ({"manifest": []}, "the BATCH message has no 'encoding' object"),
        ({"encoding": {"format": "jsonl"}, "manifest": "a.jsonl"}, "is not a list of files"),
    ],
    ids=["parquet", "no-encoding", "manifest-a-string"],
)
def test_a_batch_message_the_target_cannot_read_stops_naming_the_stream(
    emulator: Emulator, tmp_path: Path, message: dict[str, Any], expected: str
) -> None:
    run = run_target(
        tmp_path,
        emulator_config(emulator),
        [
            schema(STREAM, "email"),
            record(STREAM, email="before@example.com"),
            {"type": "BATCH", "stream": STREAM, **message},
        ],
    )

    assert_stopped_cleanly(run, f"stream '{STREAM}' (input line 3)", expected)
    assert members_by_name(emulator) == {STREAM: {sha("before@example.com")}}


@pytest.mark.slow  # runs the console script
def test_a_batch_before_its_schema_stops_like_a_record_would(
    emulator: Emulator, tmp_path: Path
) -> None:
    url = write_lines(tmp_path / "x.jsonl", [json.dumps({"email": "early@example.com"})])

    run = run_target(tmp_path, emulator_config(emulator), [batch([url])])

    assert_stopped_cleanly(run, "a RECORD arrived before the stream's SCHEMA message")
    assert emulator.counters()["total_requests"] == 0


# Unit: reading files ----------------------------------------------------------------------


def files(tmp_path: Path, *urls: str) -> BatchFiles:
    return BatchFiles(
        {"stream": STREAM, "encoding": {"format": "jsonl"}, "manifest": list(urls)}, 7
    )


def test_records_stream_in_manifest_order_with_their_position(tmp_path: Path) -> None:
    first = write_lines(tmp_path / "a.jsonl", ['{"n": 1}', "", '{"n": 2}'])
    second = write_lines(tmp_path / "b.jsonl.gz", ['{"n": 3}'], gzipped=True)
    reader = files(tmp_path, first, second)
    seen = []
    for item in reader:
        seen.append((item["n"], reader.position))
    assert seen == [
        (1, f"batch file {first} line 1"),
        (2, f"batch file {first} line 3"),
        (3, f"batch file {second} line 1"),
    ]


def test_values_python_writes_are_read(tmp_path: Path) -> None:
    url = write_lines(tmp_path / "a.jsonl", ['{"email": "a@example.com", "x": NaN, "y": 1e999}'])
    (item,) = list(files(tmp_path, url))
    assert item["y"] == float("inf")


def test_a_file_line_too_large_for_memory_names_the_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class OutOfMemory:
        """msgspec's decoder as it behaves when a line does not fit in memory."""

        def decode(self, line: bytes | str) -> Any:
            if b"huge" in (line if isinstance(line, bytes) else line.encode()):
                raise MemoryError
            return json.loads(line)

    monkeypatch.setattr(reader_module, "_decoder", OutOfMemory())
    url = write_lines(tmp_path / "big.jsonl", ['{"email": "a@example.com"}', '{"x": "huge"}'])
    with pytest.raises(BatchFileError, match=r"big\.jsonl line 2 is too large to read"):
        list(files(tmp_path, url))


def test_an_empty_manifest_has_no_records(tmp_path: Path) -> None:
    assert list(files(tmp_path)) == []


def test_invalid_utf8_in_a_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"n": 1}\n{"email": "\xff"}\n')
    with pytest.raises(BatchFileError, match=r"bad\.jsonl line 2 is not valid"):
        list(files(tmp_path, path.as_uri()))


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("file:///tmp/a.json.gz", "file:///tmp/a.json.gz"),
        ("/tmp/a.json.gz", "/tmp/a.json.gz"),
        ("s3://key:secret@bucket/path/a.json.gz?X-Amz-Signature=abc", "s3://bucket/path/a.json.gz"),
        ("https://user@host.example:8443/a.jsonl?token=t", "https://host.example:8443/a.jsonl"),
    ],
)
def test_file_locations_are_shown_without_credentials(url: str, shown: str) -> None:
    assert display_url(url) == shown


def test_an_unknown_protocol_is_a_clean_error(tmp_path: Path) -> None:
    with pytest.raises(BatchFileError, match=r"batch file nosuchproto://b/a\.jsonl cannot be read"):
        list(files(tmp_path, "nosuchproto://b/a.jsonl"))


def test_an_error_quoting_the_location_keeps_its_credentials_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Remote filesystems (fsspec) may quote the whole URL, signature included, in an error."""
    signed = "s3://bucket/part-1.jsonl.gz?X-Amz-Signature=sEcReT-signature"

    def refuse(url: str) -> Any:
        raise ValueError(f"cannot open {url}: access denied")

    monkeypatch.setattr("target_pinterest_audiences.batch_files._open", refuse)
    with pytest.raises(BatchFileError) as raised:
        list(files(tmp_path, signed))

    message = str(raised.value)
    assert "sEcReT-signature" not in message
    assert "cannot open s3://bucket/part-1.jsonl.gz: access denied" in message
