"""Normalize and SHA-256-hash user identifiers before anything leaves the process.

Every identifier the target sends to Pinterest passes through this module, and only its
output (a 64-character lowercase hex digest) is ever sent, logged or stored. The functions
are pure so that they can be tested exhaustively and called on the per-record hot path.

Sources for the normalization rules:

- Pinterest's OpenAPI description (v5, ``CustomerListRequest.records``): "Emails must be
  lowercase and can be plain text or hashed using SHA1, SHA256, or MD5. MAIDs and IDFAs
  must be hashed with SHA1, SHA256, or MD5."
- Pinterest Help, "Audience targeting" (customer list requirements): one identifier per
  row, emails and mobile advertising IDs (IDFA, Android advertising ID / GAID / MAID).
- Segment's "Pinterest Audiences" destination, which this target replaces, sends email,
  iOS IDFA and Android ID, SHA-256 hashed. Ad platforms that document device-ID casing
  (e.g. X Ads, TikTok) require it to be consistent; Apple prints IDFAs upper case and
  Android prints advertising IDs lower case, so we hash them in those canonical forms.

Rules: email -> trim, lowercase, SHA-256 hex. IDFA -> trim, uppercase, SHA-256 hex.
Android advertising ID -> trim, lowercase, SHA-256 hex. A value that already is a 64-char
hex digest is passed through lowercased, never hashed twice.
"""

from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass

# RFC 5321 caps a forward path at 256 octets including the angle brackets, so 254 is the
# longest usable address. Checking length first also keeps a 10 MB string cheap to reject.
MAX_EMAIL_LENGTH = 254
UUID_LENGTH = 36
SHA256_HEX_LENGTH = 64

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
# Deliberately permissive: one "@", a non-empty local part, a dotted domain, and no
# whitespace, control characters or commas (Pinterest separates records with commas).
# Unicode (internationalized) addresses are accepted and hashed as UTF-8.
_EMAIL = re.compile(r"[^@\s,\x00-\x1f\x7f]+@[^@\s,.\x00-\x1f\x7f]+(?:\.[^@\s,.\x00-\x1f\x7f]+)+")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# iOS (limited ad tracking / ATT denied) and Android (opted out of personalization) both
# report an all-zero advertising ID: it identifies nobody, and sending it would merge
# every opted-out device into one "user".
_ZERO_UUID = "00000000-0000-0000-0000-000000000000"
# The same ID arriving already hashed (upper and lower case are the same string here).
_ZERO_UUID_DIGEST = hashlib.sha256(_ZERO_UUID.encode()).hexdigest()


class IdentifierKind(enum.StrEnum):
    """The identifier fields of the input contract, named as they appear in records."""

    EMAIL = "email"
    IOS_IDFA = "ios_idfa"
    ANDROID_ID = "android_id"


class Problem(enum.StrEnum):
    """Why a value was not sent. Combined with the kind into a stable reason code."""

    EMPTY = "empty"
    NOT_A_STRING = "not_a_string"
    TOO_LONG = "too_long"
    MALFORMED = "malformed"
    ZEROED = "zeroed"


@dataclass(frozen=True, slots=True)
class Rejected:
    """A value that will not be sent, with the reason code reported to the user."""

    reason: str


def reason_code(kind: IdentifierKind, problem: Problem) -> str:
    """Build the reason code used in counters, summaries and the reject file."""
    return f"{kind.value}_{problem.value}"


def sha256_hex(text: str) -> str:
    """Return the lowercase hex SHA-256 digest of ``text`` encoded as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_sha256_hex(text: str) -> bool:
    """Tell whether ``text`` already is a SHA-256 digest in hex (either case)."""
    return len(text) == SHA256_HEX_LENGTH and _SHA256_HEX.fullmatch(text) is not None


_sha256 = hashlib.sha256
_EMAIL_NOT_A_STRING = Rejected(reason_code(IdentifierKind.EMAIL, Problem.NOT_A_STRING))
_EMAIL_EMPTY = Rejected(reason_code(IdentifierKind.EMAIL, Problem.EMPTY))
_EMAIL_TOO_LONG = Rejected(reason_code(IdentifierKind.EMAIL, Problem.TOO_LONG))
_EMAIL_MALFORMED = Rejected(reason_code(IdentifierKind.EMAIL, Problem.MALFORMED))


def hash_email(value: object) -> str | Rejected:
    """Normalize and hash an email address, or say why it cannot be sent.

    The hot path of the whole target: written flat (no helper calls) on purpose.
    """
    if not isinstance(value, str):
        return _EMAIL_NOT_A_STRING
    text = value.strip()
    length = len(text)
    if length == SHA256_HEX_LENGTH and _SHA256_HEX.fullmatch(text) is not None:
        return text.lower()
    if not length:
        return _EMAIL_EMPTY
    if length > MAX_EMAIL_LENGTH:
        return _EMAIL_TOO_LONG
    # isprintable() also refuses C1 controls and invisible separators the pattern allows.
    if _EMAIL.fullmatch(text) is None or not text.isprintable():
        return _EMAIL_MALFORMED
    return _sha256(text.lower().encode()).hexdigest()


def _hash_device_id(value: object, kind: IdentifierKind, *, upper: bool) -> str | Rejected:
    if not isinstance(value, str):
        return Rejected(reason_code(kind, Problem.NOT_A_STRING))
    text = value.strip()
    if not text:
        return Rejected(reason_code(kind, Problem.EMPTY))
    if is_sha256_hex(text):
        digest = text.lower()
        if digest == _ZERO_UUID_DIGEST:
            return Rejected(reason_code(kind, Problem.ZEROED))
        return digest
    if len(text) != UUID_LENGTH or _UUID.fullmatch(text) is None:
        return Rejected(reason_code(kind, Problem.MALFORMED))
    if text == _ZERO_UUID:
        return Rejected(reason_code(kind, Problem.ZEROED))
    return sha256_hex(text.upper() if upper else text.lower())


def hash_ios_idfa(value: object) -> str | Rejected:
    """Normalize (upper case, Apple's canonical form) and hash an iOS IDFA."""
    return _hash_device_id(value, IdentifierKind.IOS_IDFA, upper=True)


def hash_android_id(value: object) -> str | Rejected:
    """Normalize (lower case, Android's canonical form) and hash an Android advertising ID."""
    return _hash_device_id(value, IdentifierKind.ANDROID_ID, upper=False)


HASHERS = {
    IdentifierKind.EMAIL: hash_email,
    IdentifierKind.IOS_IDFA: hash_ios_idfa,
    IdentifierKind.ANDROID_ID: hash_android_id,
}
"""The hasher for each identifier field, in the order records are read."""
