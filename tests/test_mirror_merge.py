"""Mirror mode's merge, in process: many prefix groups, spills, chunks, the guard's pass.

The end-to-end tests (test_mirror.py) use audiences far below the sizes at which the merge
splits its work; here the limits are shrunk so that a few hundred users cross every one of
them, and the result is compared with the difference worked out the simple way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest

from target_pinterest_audiences import mirror, snapshot
from target_pinterest_audiences.ledger import SQLiteLedger
from target_pinterest_audiences.mirror import MirrorSync
from target_pinterest_audiences.report import RunReport
from target_pinterest_audiences.uploader import ADD, REMOVE, Uploader

ACCOUNT = "549755885175"


def h(n: int) -> str:
    return hashlib.sha256(f"user{n}@example.com".encode()).hexdigest()


@dataclass
class FakeUploader:
    """Checks that every row is uncertain in the ledger when its change is handed over."""

    ledger: SQLiteLedger
    sent: dict[bool, list[str]] = field(default_factory=lambda: {True: [], False: []})

    def resolve(self, audience: str) -> str:
        return "1000000000001"

    def change(self, audience: str, hashes: Iterable[str], member: bool) -> None:
        hashes = list(hashes)
        uncertain = self.ledger.members_between(audience, 0, 256).uncertain
        assert {bytes.fromhex(value) for value in hashes} <= uncertain  # marked first
        self.sent[member] += hashes

    def send_now(self, audience: str) -> None:
        pass

    def flush(self) -> None:
        pass


@pytest.fixture(autouse=True)
def small_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mirror, "GROUP_ROWS", 8)  # 64 prefix groups for ~500 rows
    monkeypatch.setattr(mirror, "CHUNK_ROWS", 7)  # many hand-overs per group
    monkeypatch.setattr(mirror, "KEEP_ROWS", 10)  # the guard's pass cannot keep its diff
    monkeypatch.setattr(snapshot, "SPILL_ENTRIES", 50)
    monkeypatch.setattr(snapshot, "CHUNK_ENTRIES", 4)


@pytest.mark.parametrize("max_removal_fraction", [1.0, 0.9])  # guard off, guard counting
def test_the_merge_matches_the_simple_difference(
    tmp_path: Path, max_removal_fraction: float
) -> None:
    ledger = SQLiteLedger(tmp_path / "ledger.sqlite3", ACCOUNT)
    ledger.set_list_id("vip", "1000000000001")
    ledger.confirm_added("vip", "1000000000001", [h(n) for n in range(200)])
    ledger.mark_uncertain("vip", [h(n) for n in range(200, 220)])  # a crashed run's requests
    report = RunReport()
    sync = MirrorSync(ledger, report, max_removal_fraction=max_removal_fraction, dry_run=False)
    snap = sync.snapshot
    snap.covers("segments", "vip")
    for n in range(100, 300):
        snap.record("vip", [h(n)], True)
    for n in range(150, 160):
        snap.record("vip", [h(n)], False)  # left later in the run
    for n in range(250, 260):
        snap.record("vip", [h(n)], False)
        snap.record("vip", [h(n)], True)  # and came back
    snap.record("vip", [h(120), h(121)], True)  # recorded twice

    uploader = FakeUploader(ledger)
    sync.apply(cast("Uploader", uploader))

    wanted = {h(n) for n in range(100, 300)} - {h(n) for n in range(150, 160)}
    confirmed = {h(n) for n in range(200)}
    every_row = confirmed | {h(n) for n in range(200, 220)}
    assert sorted(uploader.sent[True]) == sorted(wanted - confirmed)  # uncertain ones again
    assert sorted(uploader.sent[False]) == sorted(every_row - wanted)
    plan = report.audience("vip").mirror
    assert plan is not None
    assert (plan["added"], plan["removed"], plan["unchanged"]) == (
        len(wanted - confirmed),
        len(every_row - wanted),
        len(wanted & confirmed),
    )
    assert len(wanted - confirmed) > 7 * 10  # many hand-overs: the limits were crossed

    for member, operation in ((True, ADD), (False, REMOVE)):
        sync.acknowledged("vip", "1000000000001", operation, uploader.sent[member])
    members = ledger.members_between("vip", 0, 256)
    assert {digest.hex() for digest in members.rows} == wanted
    assert members.uncertain == set()
    sync.close()
