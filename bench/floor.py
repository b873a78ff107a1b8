"""The floor: the least work any target must do per record, in plain Python.

Decode each line with the standard library's ``json.loads``, normalize every identifier
(trim, case) and SHA-256 it; nothing else (no validation, no batching, no I/O besides
reading stdin). A target cannot be faster than this in pure Python without a faster JSON
decoder, so "target records/s divided by floor records/s" says how much of the target's
time goes to things other than the unavoidable work.

Run as ``python -m bench.floor < stream.jsonl``; prints one JSON line with the counts, so
the benchmark can check the loop saw every record.
"""

from __future__ import annotations

import hashlib
import json
import sys

_SHA256_HEX_LENGTH = 64


def main() -> None:
    """Read Singer lines from stdin; print ``{"records": N, "hashes": M}``."""
    loads = json.loads
    sha256 = hashlib.sha256
    records = 0
    hashes = 0
    for line in sys.stdin:
        message = loads(line)
        if message.get("type") != "RECORD":
            continue
        record = message["record"]
        records += 1
        for field_name, upper in (("email", False), ("ios_idfa", True), ("android_id", False)):
            value = record.get(field_name)
            if not isinstance(value, str):
                continue
            text = value.strip()
            text = text.upper() if upper else text.lower()
            if len(text) == _SHA256_HEX_LENGTH:
                digest = text.lower()  # already hashed: pass through
            else:
                digest = sha256(text.encode("utf-8")).hexdigest()
            hashes += len(digest) > 0
    print(json.dumps({"records": records, "hashes": hashes}))


if __name__ == "__main__":
    main()
