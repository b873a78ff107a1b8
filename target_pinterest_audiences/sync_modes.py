"""Which sync mode feeds each audience in this run, and where its ledger writes go.

One tap often sends streams of several kinds (an events table in changes mode beside a
users table in upsert mode), but one audience must be fed by one mode: mirror and upsert
each keep their own account of a list's members, and changes mode keeps none, so two modes
writing one list would each undo the other's work. The first stream that names an audience
claims it for its mode; another mode naming it stops the run, naming both streams.

The uploader calls a hook after every acknowledged request; it is routed here to the
ledger of the audience's mode (changes mode writes no ledger; mirror and upsert mode mark
their rows uncertain before queueing them, so nothing is needed before a request).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from target_pinterest_audiences.customer_lists import Operation
from target_pinterest_audiences.errors import InputError

if TYPE_CHECKING:
    from target_pinterest_audiences.mirror import MirrorSync
    from target_pinterest_audiences.upsert import UpsertSync

CHANGES, MIRROR, UPSERT = "changes", "mirror", "upsert"


class AudienceModes:
    """Claims of audiences by sync modes, and the ledger hooks routed by them."""

    def __init__(self, mirror: MirrorSync | None, upsert: UpsertSync | None) -> None:
        self.mirror = mirror
        self.upsert = upsert
        self._claims: dict[str, tuple[str, str]] = {}

    @property
    def ledgers(self) -> bool:
        """Whether the acknowledgement hook has work to do (a ledger mode is configured)."""
        return self.mirror is not None or self.upsert is not None

    def claim(self, audience: str, mode: str, stream: str) -> None:
        """``stream`` (in ``mode``) feeds ``audience``; refuse a second mode for it."""
        claimed = self._claims.get(audience)
        if claimed is None:
            self._claims[audience] = (mode, stream)
            return
        if claimed[0] != mode:
            msg = (
                f"audience '{audience}' is fed by stream '{claimed[1]}' in {claimed[0]} mode "
                f"and by stream '{stream}' in {mode} mode; one audience needs one sync mode "
                "(set stream_sync_modes so that both streams use the same mode, or give them "
                "different audiences)"
            )
            raise InputError(msg)

    def mode(self, audience: str) -> str | None:
        """The mode that claimed ``audience`` this run, if any."""
        claimed = self._claims.get(audience)
        return claimed[0] if claimed else None

    def acknowledged(
        self, audience: str, list_id: str, operation: Operation, hashes: list[str]
    ) -> None:
        """Uploader hook: Pinterest acknowledged ``hashes``."""
        mode = self.mode(audience)
        if mode == UPSERT and self.upsert is not None:
            self.upsert.acknowledged(audience, list_id, operation, hashes)
        elif mode == MIRROR and self.mirror is not None:
            self.mirror.acknowledged(audience, list_id, operation, hashes)
