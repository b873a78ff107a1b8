"""The demo: the shipped sample stream, piped into the target, against the local emulator.

Run ``python -m target_pinterest_audiences.demo``. No Pinterest account is needed: the
emulator plays Pinterest on 127.0.0.1. The target runs as its installed console script,
exactly as Meltano or a shell pipe would run it; afterwards the emulator's lists are
printed, as Ads Manager would show them.

Pinterest reaches only the uploaded identifiers that match one of its users, so the
emulator is told to match a share of them (``DEMO_MATCH_RATE``, a demo setting, not a
claim about Pinterest's rates): the audience sizes the target reports are matched users.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

from target_pinterest_audiences.emulator import Emulator, EmulatorConfig

AD_ACCOUNT = "549755885175"
DEMO_MATCH_RATE = 0.7


def _target_command() -> list[str]:
    script = Path(sys.executable).parent / "target-pinterest-audiences"
    if script.exists():
        return [str(script)]
    found = shutil.which("target-pinterest-audiences")
    return [found] if found else [sys.executable, "-m", "target_pinterest_audiences.target"]


def main() -> int:
    """Run the demo; return the target's exit code."""
    sample = resources.files("target_pinterest_audiences.demo") / "sample_stream.jsonl"
    config = EmulatorConfig(ad_account_ids=(AD_ACCOUNT,), match_rate=DEMO_MATCH_RATE)
    with Emulator(config) as emulator, tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "config.json"
        config_path.write_text(
            json.dumps(
                {
                    "ad_account_id": AD_ACCOUNT,
                    "access_token": config.access_tokens[0],
                    "api_url": emulator.url,
                }
            ),
            encoding="utf-8",
        )
        print(f"Pinterest API emulator listening on {emulator.url}\n")
        print("$ target-pinterest-audiences --config config.json < sample_stream.jsonl\n")
        completed = subprocess.run(  # noqa: S603 - our own console script
            [*_target_command(), "--config", str(config_path)],
            input=sample.read_text(encoding="utf-8"),
            text=True,
            capture_output=True,
            check=False,
        )
        for line in completed.stderr.splitlines():
            if "report |" in line or "ERROR" in line:
                print("  " + line.split(" | ")[-1])
        print(f"\nSTATE emitted on stdout: {completed.stdout.strip().splitlines()[-1:]}")
        print(
            f"\nWhat Pinterest (the emulator, matching {DEMO_MATCH_RATE:.0%} of identifiers "
            "to users) now holds:"
        )
        snapshot = emulator.snapshot()["ad_accounts"][AD_ACCOUNT]
        audiences = {a["rule"]["customer_list_id"]: a for a in snapshot["audiences"]}
        for item in snapshot["customer_lists"]:
            audience = audiences.get(item["id"])
            print(
                f"  customer list {item['name']!r} (id {item['id']}): "
                f"{item['member_count']} hashed members, {item['matched_count']} matched users, "
                f"status {item['status']}"
                + (
                    f"; audience {audience['id']}: size {audience['size']}, "
                    f"status {audience['status']}"
                    if audience
                    else ""
                )
            )
        counters = emulator.counters()
        print(
            f"\n{counters['total_requests']} API requests, {counters['invalid_requests']} "
            f"rejected by the OpenAPI contract, {counters['non_sha256_records']} unhashed records"
        )
        return completed.returncode


if __name__ == "__main__":
    sys.exit(main())
