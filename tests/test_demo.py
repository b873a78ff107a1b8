"""`make demo` as the README shows it: the sample output there is what the demo prints."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

# Runs the demo, which runs the console script.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK_PORT = re.compile(r"127\.0\.0\.1:\d+")  # the demo's emulator listens on a free port


def readme_sample() -> list[str]:
    """The lines of the README's `make demo` sample output, without the '...' elisions."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    intro = readme.index("`make demo` prints")
    block = re.search(r"```(?:text)?\n(.*?)```", readme[intro:], re.S)
    assert block is not None, "no sample output block after '`make demo` prints'"
    return [
        LOOPBACK_PORT.sub("127.0.0.1:PORT", line.strip())
        for line in block.group(1).splitlines()
        if line.strip() != "..."
    ]


def test_the_demo_prints_what_the_readme_shows() -> None:
    demo = subprocess.run(
        [sys.executable, "-m", "target_pinterest_audiences.demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert demo.returncode == 0, demo.stdout + demo.stderr
    printed = {
        LOOPBACK_PORT.sub("127.0.0.1:PORT", line.strip()) for line in demo.stdout.splitlines()
    }
    sample = readme_sample()
    assert len(sample) >= 5
    missing = [line for line in sample if line not in printed]
    assert not missing, f"README sample lines the demo did not print: {missing}\n{demo.stdout}"
    # What the demo says about each list agrees with what the target reported.
    for name, matched in re.findall(r"customer list '(\w+)' .*?(\d+) matched users", demo.stdout):
        assert re.search(
            rf"Audience '{name}' .*Pinterest matched {matched} users as of now", demo.stdout
        ), name
