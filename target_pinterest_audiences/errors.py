"""Errors the target reports to users as a clear message instead of a traceback.

Everything derived from :class:`TargetError` is expected: bad config, bad input, Pinterest
refusing a request. The CLI prints its message and exits non-zero. Messages never carry a
raw identifier or a secret, only stream names, record numbers, list ids and reason codes.
"""

from __future__ import annotations


class TargetError(Exception):
    """An expected failure whose message tells the user what to fix."""


class InputError(TargetError):
    """The Singer input cannot be processed (stream-level problem); the run stops."""


class PinterestAPIError(TargetError):
    """Pinterest answered with an error that retrying will not fix.

    ``code`` and ``message`` come from Pinterest's error body ``{code, message}``.
    """

    def __init__(
        self,
        summary: str,
        *,
        status: int | None = None,
        code: int | None = None,
        api_message: str | None = None,
    ) -> None:
        super().__init__(summary)
        self.status = status
        self.code = code
        self.api_message = api_message


class AuthenticationError(PinterestAPIError):
    """Pinterest does not accept our credentials (HTTP 401, after any refresh)."""


class PermissionDeniedError(PinterestAPIError):
    """The token is valid but lacks a role or scope on the ad account (HTTP 403)."""


class RetriesExhaustedError(PinterestAPIError):
    """A retryable failure (429, 5xx, network) outlasted the retry budget."""


class UnreachableError(PinterestAPIError):
    """The API did not answer at all (refused, DNS, TLS, timeout) to a request not retried."""


class AmbiguousOutcomeError(PinterestAPIError):
    """A non-idempotent request may or may not have been applied (connection lost).

    The caller must look before retrying, or it could create a list twice.
    """


class DuplicateListError(TargetError):
    """Two customer lists carry the audience's name, so we cannot tell which to update."""


class SyncFailedError(TargetError):
    """Some membership changes were not acknowledged; state was not advanced."""


class RemovalGuardError(TargetError):
    """Mirror mode would remove more of an audience than the configured fraction."""


class ScratchSpaceError(TargetError):
    """A temporary file could not be written (its disk is full, or a file-size limit)."""


class TerminationRequestedError(BaseException):
    """SIGTERM/SIGINT arrived: unwind to the CLI entry point, which stops cleanly.

    Raised only at safe points (between input lines). A BaseException, so that no
    ``except Exception`` on the way swallows it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum
