"""Regenerate the README's settings table from the config schema.

Usage: python tools/update_readme.py   (tests/test_docs.py fails when it is out of date)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from target_pinterest_audiences.config import CONFIG_SCHEMA, reference_markdown

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = re.compile(
    r"(<!-- config-reference:start[^\n]*-->\n)(.*?)(<!-- config-reference:end -->)", re.DOTALL
)


def render(readme: str) -> str:
    """The README with its settings table regenerated."""
    table = reference_markdown(CONFIG_SCHEMA)
    updated, count = SECTION.subn(lambda m: m.group(1) + table + m.group(3), readme)
    if count != 1:
        msg = "README.md lacks the config-reference markers"
        raise SystemExit(msg)
    return updated


def main() -> int:
    """Rewrite README.md in place; exit 1 if it changed (useful in CI)."""
    current = README.read_text(encoding="utf-8")
    updated = render(current)
    if updated != current:
        README.write_text(updated, encoding="utf-8")
        print("README.md settings table updated")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
