"""Regenerate the demo's sample Singer stream (deterministic, synthetic people only).

Usage: python tools/make_demo_stream.py > target_pinterest_audiences/demo/sample_stream.jsonl
"""

from __future__ import annotations

import json
import uuid


def line(message: dict[str, object]) -> str:
    return json.dumps(message, separators=(",", ":"))


def main() -> None:
    rng = uuid.UUID("12345678-1234-5678-1234-567812345678").int
    out = []
    out.append(
        line(
            {
                "type": "SCHEMA",
                "stream": "newsletter_subscribers",
                "schema": {
                    "type": "object",
                    "properties": {
                        "email": {"type": ["string", "null"]},
                        "ios_idfa": {"type": ["string", "null"]},
                        "android_id": {"type": ["string", "null"]},
                        "in_audience": {"type": "boolean"},
                    },
                },
                "key_properties": [],
            }
        )
    )
    # 140 subscribers (explicit form, stream name is the audience), some with devices.
    for n in range(140):
        record: dict[str, object] = {
            "email": f"Subscriber{n:03d}@Example.com ",
            "in_audience": True,
        }
        if n % 10 == 0:
            rng = (rng * 6364136223846793005 + 1442695040888963407) % 2**128
            record["ios_idfa"] = str(uuid.UUID(int=rng)).upper()
        out.append(line({"type": "RECORD", "stream": "newsletter_subscribers", "record": record}))
    # Ten unsubscribe, and one address arrives twice.
    for n in range(130, 140):
        out.append(
            line(
                {
                    "type": "RECORD",
                    "stream": "newsletter_subscribers",
                    "record": {"email": f"subscriber{n:03d}@example.com", "in_audience": False},
                }
            )
        )
    out.append(
        line(
            {
                "type": "RECORD",
                "stream": "newsletter_subscribers",
                "record": {"email": "subscriber001@example.com", "in_audience": True},
            }
        )
    )
    # Invalid identifiers are counted and skipped, never sent.
    out.append(
        line(
            {
                "type": "RECORD",
                "stream": "newsletter_subscribers",
                "record": {"email": "not-an-email", "in_audience": True},
            }
        )
    )
    out.append(
        line(
            {
                "type": "RECORD",
                "stream": "newsletter_subscribers",
                "record": {"android_id": "00000000-0000-0000-0000-000000000000"},
            }
        )
    )
    out.append(line({"type": "STATE", "value": {"bookmarks": {"newsletter_subscribers": 152}}}))
    # Segment Engage form: boolean traits are audience flags.
    out.append(
        line(
            {
                "type": "SCHEMA",
                "stream": "engage_identifies",
                "schema": {
                    "type": "object",
                    "properties": {
                        "email": {"type": "string"},
                        "order_completed_last_30days": {"type": "boolean"},
                        "cart_abandoners": {"type": "boolean"},
                    },
                },
                "key_properties": [],
            }
        )
    )
    for n in range(40):
        out.append(
            line(
                {
                    "type": "RECORD",
                    "stream": "engage_identifies",
                    "record": {
                        "email": f"buyer{n:02d}@example.org",
                        "order_completed_last_30days": n % 4 != 0,
                        "cart_abandoners": n % 4 == 0,
                    },
                }
            )
        )
    out.append(
        line(
            {
                "type": "STATE",
                "value": {"bookmarks": {"newsletter_subscribers": 152, "engage_identifies": 40}},
            }
        )
    )
    print("\n".join(out))


if __name__ == "__main__":
    main()
