"""Regenerate the README's settings table and its `make demo` sample output.

The settings table comes from the config schema (tests/test_docs.py fails when it is out of
date); the sample is what the demo prints, run here (tests/test_readme.py fails when
`make demo` prints anything else). Loopback ports, which change every run, are shown as one
example port.

Usage: python tools/update_readme.py
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from target_pinterest_audiences.config import CONFIG_SCHEMA, reference_markdown

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = re.compile(
    r"(<!-- config-reference:start[^\n]*-->\n)(.*?)(<!-- config-reference:end -->)", re.DOTALL
)
# The sample output block after the `make demo` command block.
DEMO_SAMPLE = re.compile(
    r"(```sh\nmake demo\b[^\n]*\n```\n.*?<!-- output of the block above -->\n```text\n)(.*?)(```)",
    re.DOTALL,
)
LOOPBACK_PORT = re.compile(r"127\.0\.0\.1:\d+")
EXAMPLE_ADDRESS = "127.0.0.1:41234"


def demo_output() -> str:
    """What ``make demo`` prints after installing: the demo module's stdout."""
    completed = subprocess.run(
        [sys.executable, "-m", "target_pinterest_audiences.demo"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return LOOPBACK_PORT.sub(EXAMPLE_ADDRESS, completed.stdout)


def render(readme: str, demo: str | None = None) -> str:
    """The README with its settings table (and, given the demo's output, its sample) regenerated."""
    table = reference_markdown(CONFIG_SCHEMA)
    updated, count = SECTION.subn(lambda m: m.group(1) + table + m.group(3), readme)
    if count != 1:
        msg = "README.md lacks the config-reference markers"
        raise SystemExit(msg)
    if demo is not None:
        updated, count = DEMO_SAMPLE.subn(lambda m: m.group(1) + demo + m.group(3), updated)
        if count != 1:
            msg = "README.md lacks the `make demo` block followed by its marked output block"
            raise SystemExit(msg)
    return updated


def main() -> int:
    """Rewrite README.md in place; exit 1 if it changed (useful in CI)."""
    current = README.read_text(encoding="utf-8")
    updated = render(current, demo_output())
    if updated != current:
        README.write_text(updated, encoding="utf-8")
        print("README.md settings table or demo sample updated")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
