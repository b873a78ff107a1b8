"""Plain-text rendering of benchmark results (tables a reviewer can paste into an issue)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.pinterest import RECORDS_PER_REQUEST, EndToEnd


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-align the first column, right-align the rest."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first, *rest = cells
        parts = [str(first).ljust(widths[0])]
        parts += [str(cell).rjust(width) for cell, width in zip(rest, widths[1:], strict=True)]
        return "  " + "  ".join(parts)

    rule = "  " + "  ".join("-" * width for width in widths)
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def machine(info: dict[str, Any], emulator_mode: str) -> str:
    """The header every report starts with."""
    dirty = " (uncommitted changes in tracked files)" if info["git_dirty"] else ""
    where = (
        "separate process (competes with the target for CPU)"
        if emulator_mode == "process"
        else "thread inside the benchmark process"
    )
    return "\n".join(
        [
            f"machine:   {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), "
            f"{info['memory_mib']:,} MiB RAM, {info['platform']}",
            f"python:    {info['python']} ({info['python_executable']}), "
            f"singer-sdk {info['singer_sdk']}",
            f"git:       {info['git_commit']}{dirty}",
            f"load:      {' '.join(map(str, info['load_average_at_start']))} (1/5/15 min at start; "
            "other work on the machine skews the numbers)",
            f"emulator:  {where}",
        ]
    )


def efficiency(result: EndToEnd) -> str:
    """Per-list write requests against the fewest possible."""
    rows = [
        [
            item.name,
            f"{item.members:,}",
            f"{item.added:,}",
            f"{item.removed:,}",
            f"{item.add_requests}+{item.remove_requests}",
            str(item.ideal_requests),
            f"{item.requests / item.ideal_requests:.3f}" if item.ideal_requests else "-",
        ]
        for item in result.lists
    ]
    total_ideal = sum(item.ideal_requests for item in result.lists)
    total = sum(item.requests for item in result.lists)
    rows.append(
        [
            "all lists",
            f"{sum(item.members for item in result.lists):,}",
            f"{sum(item.added for item in result.lists):,}",
            f"{sum(item.removed for item in result.lists):,}",
            str(total),
            str(total_ideal),
            f"{total / total_ideal:.3f}" if total_ideal else "-",
        ]
    )
    header = ["list", "members", "ids added", "ids removed", "requests (add+rm)", "ideal", "ratio"]
    return "\n".join(
        [
            f"API efficiency (ideal = ceil(added/{RECORDS_PER_REQUEST}) + "
            f"ceil(removed/{RECORDS_PER_REQUEST}) per list; goal: ratio <= 1.01):",
            table(header, rows),
            f"  other write requests (audience creation): {result.other_write_requests}; "
            f"HTTP statuses: {result.statuses}",
        ]
    )


def verdict(result: EndToEnd) -> str:
    """Correctness in one line (or the problems, one per line)."""
    if result.ok:
        members = sum(item.members for item in result.lists)
        return (
            f"correctness: OK (exit 0, 0 invalid requests, {len(result.lists)} lists, "
            f"{members:,} members exactly as generated, {result.state_messages} STATE lines)"
        )
    return "correctness: FAILED\n" + "\n".join(f"  - {problem}" for problem in result.problems)
