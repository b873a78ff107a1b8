"""Read the files of a Singer BATCH message, one record at a time.

SDK taps with ``batch_config`` (tap-postgres, for one) do not send RECORD lines: they write
the records to files and send one BATCH message naming them::

    {"type": "BATCH", "stream": "users",
     "encoding": {"format": "jsonl", "compression": "gzip"},
     "manifest": ["file:///tmp/tap-users-1.json.gz", ...]}

Each file holds one JSON record per line (not Singer messages). The SDK's JSON-lines
encoder gzips its files whatever ``compression`` says, so compression is recognized by the
file's first bytes, not taken from the message. Files are streamed (the SDK's own reader
loads each file into a list), and every record goes through the same record path as a
RECORD line, so counting, rejects and STATE follow the same rules.

A file that cannot be read (missing, not gzip after all, truncated, a line that is not a
JSON object) raises :class:`BatchFileError`, which stops the run like a bad input line:
what was read before it is still delivered. Messages name the stream, the file and the
line in it, never a line's content; the file's location is shown without any credentials
or query string its URL may carry. Only the ``jsonl`` format is read.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Iterator
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit
from urllib.request import url2pathname

import fsspec

from target_pinterest_audiences.errors import InputError
from target_pinterest_audiences.reader import UnreadableLineError, decode_line

_GZIP_MAGIC = b"\x1f\x8b"
SUPPORTED_FORMATS = ("jsonl",)


class BatchFileError(InputError):
    """A BATCH message or one of its files cannot be read; the run stops."""


class BatchFiles:
    """The records of one BATCH message's files, in manifest order.

    ``position`` says where the last record came from (file and line), for messages about
    that record.
    """

    def __init__(self, message: dict[str, Any], input_line: int) -> None:
        self._where = f"stream '{message.get('stream')}' (input line {input_line})"
        self.manifest = _manifest(message, self._where)
        self.position = f"BATCH message of {self._where}"

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for url in self.manifest:
            yield from self._file_records(url)

    def _file_records(self, url: str) -> Iterator[dict[str, Any]]:
        name = f"batch file {display_url(url)}"
        where = f"{self._where}: {name}"
        line_number = 0
        try:
            with _open(url) as raw:
                gzipped = _starts_with_gzip_magic(raw)
                lines: IO[bytes] | gzip.GzipFile = gzip.GzipFile(fileobj=raw) if gzipped else raw
                for line in lines:
                    line_number += 1
                    if not line.strip():
                        continue
                    self.position = f"{name} line {line_number}"
                    yield _record(line, f"{where} line {line_number}")
        except BatchFileError:
            raise
        except FileNotFoundError:
            raise BatchFileError(f"{where} does not exist; stopping") from None
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            msg = f"{where} is not a complete gzip file ({exc}) after line {line_number}"
            raise BatchFileError(f"{msg}; stopping") from None
        except (OSError, ValueError, ImportError) as exc:  # permissions, unknown protocols
            detail = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            detail = detail.replace(url, display_url(url))  # no query string or credentials
            raise BatchFileError(f"{where} cannot be read ({detail}); stopping") from None


def display_url(url: str) -> str:
    """``url`` without user, password or query (they may carry credentials)."""
    parts = urlsplit(url)
    if not parts.scheme or len(parts.scheme) == 1:  # a plain path (or a Windows drive)
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _manifest(message: dict[str, Any], where: str) -> list[str]:
    """The manifest's file URLs, after checking the message says what we can read."""
    encoding = message.get("encoding")
    if not isinstance(encoding, dict):
        raise BatchFileError(f"{where}: the BATCH message has no 'encoding' object")
    file_format = encoding.get("format")
    if file_format not in SUPPORTED_FORMATS:
        msg = (
            f"{where}: BATCH files in format {file_format!r} cannot be read; set the tap's "
            "batch_config encoding format to 'jsonl' (gzip or not)"
        )
        raise BatchFileError(msg)
    manifest = message.get("manifest")
    if not isinstance(manifest, list) or not all(isinstance(url, str) for url in manifest):
        raise BatchFileError(f"{where}: the BATCH message's 'manifest' is not a list of files")
    return manifest


def _open(url: str) -> IO[bytes]:
    """Open a local path, a ``file://`` URL or anything fsspec has a filesystem for."""
    parts = urlsplit(url)
    if not parts.scheme or len(parts.scheme) == 1:
        return open(url, "rb")
    if parts.scheme == "file" and parts.netloc in ("", "localhost"):
        return open(url2pathname(parts.path), "rb")
    # s3://, gs://, ... as the SDK's batch storage allows (needs the filesystem's package).
    return fsspec.open(url, "rb").open()  # type: ignore[no-any-return]


def _starts_with_gzip_magic(raw: IO[bytes]) -> bool:
    """Look at the first bytes without consuming them (local files and pipes can peek)."""
    if isinstance(raw, io.BufferedReader):
        return raw.peek(2)[:2] == _GZIP_MAGIC
    head = raw.read(2)
    raw.seek(0)
    return head == _GZIP_MAGIC


def _record(line: bytes, where: str) -> dict[str, Any]:
    """Decode one file line as the reader decodes standard input's (NaN, huge numbers)."""
    try:
        record = decode_line(line, where)
    except UnreadableLineError as exc:
        raise BatchFileError(str(exc)) from None
    if not isinstance(record, dict):
        raise BatchFileError(f"{where} is not a JSON object (one record per line); stopping")
    return record
