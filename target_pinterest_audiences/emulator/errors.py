"""Pinterest-style error responses (``{"code": <int>, "message": <str>}``).

Pinterest's numeric ``code`` is an application code, not the HTTP status. The
description documents a few of them; the emulator uses these consistently:

=====  ===================================================================
code   meaning (HTTP status)
=====  ===================================================================
1      invalid request or parameters (400) -- Pinterest's generic code
2      authentication failed (401)
5      method not allowed (405)
8      rate limit exceeded (429)
29     not permitted to access the resource, e.g. another ad account (403)
404    resource or path not found (404) -- the spec's examples use the status
413    payload too large (413) -- not documented; mirrors the status
=====  ===================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CODE_INVALID_PARAMETERS = 1
CODE_AUTHENTICATION_FAILED = 2
CODE_METHOD_NOT_ALLOWED = 5
CODE_RATE_LIMITED = 8
CODE_NOT_PERMITTED = 29
CODE_NOT_FOUND = 404
CODE_PAYLOAD_TOO_LARGE = 413

AUTHENTICATION_FAILED = "Authentication failed."
RATE_LIMITED = (
    "This request exceeded a rate limit. This can happen if the client exceeds one "
    "of the published rate limits within a short time window."
)


class ApiError(Exception):
    """An error answer: HTTP status, Pinterest code and message, extra headers."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers: dict[str, str] = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The JSON body Pinterest sends for errors."""
        return {"code": self.code, "message": self.message}


class ContractViolation(ApiError):
    """A 400 caused by a request that does not match the OpenAPI description.

    Kept distinct from other 400s (e.g. an unknown customer list in an audience
    rule) so the request log can tell "client broke the contract" apart from
    "valid request, rejected by business rules".
    """

    def __init__(self, message: str) -> None:
        super().__init__(400, CODE_INVALID_PARAMETERS, message)


def invalid(message: str) -> ApiError:
    """A business-rule 400 (the request itself matched the description)."""
    return ApiError(400, CODE_INVALID_PARAMETERS, message)


def not_found(what: str) -> ApiError:
    """A 404 for a missing resource, e.g. ``not_found("Customer list 12")``."""
    return ApiError(404, CODE_NOT_FOUND, f"{what} not found.")


def authentication_failed() -> ApiError:
    """The 401 Pinterest sends for a missing, unknown or expired token."""
    return ApiError(401, CODE_AUTHENTICATION_FAILED, AUTHENTICATION_FAILED)
