"""Tests for target_pinterest_audiences.identifiers (normalize + SHA-256 hash)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import pytest

from target_pinterest_audiences import identifiers
from target_pinterest_audiences.identifiers import (
    HASHERS,
    IdentifierKind,
    Problem,
    Rejected,
    hash_android_id,
    hash_email,
    hash_ios_idfa,
    is_sha256_hex,
    reason_code,
    sha256_hex,
)

Hasher = Callable[[object], str | Rejected]


def sha(text: str) -> str:
    """Independent expectation: SHA-256 of the UTF-8 bytes, lowercase hex."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# Literal digests, checked with hashlib when the tests were written (and again below).
SHA256_TEST_EXAMPLE_COM = "973dfe463ec85785f5f95af5ba3906eedb2d931c24e69824a89ea65dba4e813b"
SHA256_EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
SHA256_ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

IDFA_UPPER = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
IDFA_LOWER = IDFA_UPPER.lower()
ZERO_UUID = "00000000-0000-0000-0000-000000000000"
PRE_HASHED = sha("someone@example.com")


def test_literal_vectors_are_really_sha256() -> None:
    assert sha("test@example.com") == SHA256_TEST_EXAMPLE_COM
    assert sha("") == SHA256_EMPTY
    assert sha("abc") == SHA256_ABC


@pytest.mark.parametrize(
    ("text", "digest"),
    [
        ("test@example.com", SHA256_TEST_EXAMPLE_COM),
        ("", SHA256_EMPTY),
        ("abc", SHA256_ABC),
        ("josé@exämple.com", sha("josé@exämple.com")),
    ],
)
def test_sha256_hex(text: str, digest: str) -> None:
    assert sha256_hex(text) == digest


def test_sha256_hex_encodes_utf8_not_latin1() -> None:
    text = "josé@exämple.com"
    assert sha256_hex(text) == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert sha256_hex(text) != hashlib.sha256(text.encode("latin-1")).hexdigest()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (SHA256_TEST_EXAMPLE_COM, True),
        (SHA256_TEST_EXAMPLE_COM.upper(), True),
        ("A" * 64, True),
        ("0" * 64, True),
        (SHA256_TEST_EXAMPLE_COM[:63], False),
        (SHA256_TEST_EXAMPLE_COM + "0", False),
        ("g" * 64, False),
        ("d41d8cd98f00b204e9800998ecf8427e", False),  # MD5 length
        ("a94a8fe5ccb19ba61c4c0873d391e987982fbbd3", False),  # SHA-1 length
        ("", False),
        (SHA256_TEST_EXAMPLE_COM[:63] + "\n", False),
    ],
)
def test_is_sha256_hex(text: str, expected: bool) -> None:
    assert is_sha256_hex(text) is expected


@pytest.mark.parametrize(
    ("kind", "problem", "code"),
    [
        (IdentifierKind.EMAIL, Problem.EMPTY, "email_empty"),
        (IdentifierKind.EMAIL, Problem.NOT_A_STRING, "email_not_a_string"),
        (IdentifierKind.EMAIL, Problem.TOO_LONG, "email_too_long"),
        (IdentifierKind.EMAIL, Problem.MALFORMED, "email_malformed"),
        (IdentifierKind.IOS_IDFA, Problem.ZEROED, "ios_idfa_zeroed"),
        (IdentifierKind.IOS_IDFA, Problem.MALFORMED, "ios_idfa_malformed"),
        (IdentifierKind.ANDROID_ID, Problem.ZEROED, "android_id_zeroed"),
        (IdentifierKind.ANDROID_ID, Problem.NOT_A_STRING, "android_id_not_a_string"),
    ],
)
def test_reason_code(kind: IdentifierKind, problem: Problem, code: str) -> None:
    assert reason_code(kind, problem) == code


def test_hashers_cover_every_kind_in_record_order() -> None:
    assert list(HASHERS) == [
        IdentifierKind.EMAIL,
        IdentifierKind.IOS_IDFA,
        IdentifierKind.ANDROID_ID,
    ]
    assert HASHERS[IdentifierKind.EMAIL] is hash_email
    assert HASHERS[IdentifierKind.IOS_IDFA] is hash_ios_idfa
    assert HASHERS[IdentifierKind.ANDROID_ID] is hash_android_id
    assert [kind.value for kind in IdentifierKind] == ["email", "ios_idfa", "android_id"]


# --------------------------------------------------------------------------- emails


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("test@example.com", "test@example.com"),
        ("Test@Example.COM", "test@example.com"),
        ("TEST@EXAMPLE.COM", "test@example.com"),
        ("  test@example.com  ", "test@example.com"),
        ("\ttest@example.com\t", "test@example.com"),
        ("\ntest@example.com\r\n", "test@example.com"),
        ("\u00a0test@example.com\u00a0", "test@example.com"),  # non-breaking space
        ("\u3000test@example.com\u2003", "test@example.com"),  # ideographic / em space
        (" \t\n\u00a0Test@Example.Com \u00a0\t", "test@example.com"),
        ("first.last+tag@sub.example.co.uk", "first.last+tag@sub.example.co.uk"),
        ("O'Brien@Example.IE", "o'brien@example.ie"),
        ("JOSÉ@Exämple.com", "josé@exämple.com"),
        ("用户@例子.广告", "用户@例子.广告"),
        ("Ünïcödé@BÜCHER.de", "ünïcödé@bücher.de"),
        ("a@b.co", "a@b.co"),
    ],
)
def test_hash_email_normalizes_then_hashes(raw: str, normalized: str) -> None:
    assert hash_email(raw) == sha(normalized)


def test_hash_email_known_vector() -> None:
    assert hash_email("test@example.com") == SHA256_TEST_EXAMPLE_COM
    assert hash_email("  TEST@Example.com\n") == SHA256_TEST_EXAMPLE_COM


def test_hash_email_idn_is_hashed_as_utf8_of_lowercase() -> None:
    result = hash_email("JOSÉ@Exämple.com")
    assert result == hashlib.sha256("josé@exämple.com".encode()).hexdigest()
    # Not the punycode form, not the un-lowercased form.
    assert result != sha("josé@xn--exmple-cua.com")
    assert result != sha("JOSÉ@Exämple.com")


@pytest.mark.parametrize(
    "variant",
    ["test@example.com", "TEST@EXAMPLE.COM", "Test@Example.Com", " test@example.com\t"],
)
def test_hash_email_case_and_whitespace_variants_agree(variant: str) -> None:
    assert hash_email(variant) == SHA256_TEST_EXAMPLE_COM


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (PRE_HASHED, PRE_HASHED),
        (PRE_HASHED.upper(), PRE_HASHED),
        (f"  {PRE_HASHED.upper()}\n", PRE_HASHED),
        (SHA256_TEST_EXAMPLE_COM, SHA256_TEST_EXAMPLE_COM),
        ("A" * 64, "a" * 64),
    ],
)
def test_hash_email_passes_prehashed_through_lowercased(raw: str, expected: str) -> None:
    result = hash_email(raw)
    assert result == expected
    # Never hashed a second time.
    assert result != sha(expected)
    assert result != sha(raw.strip().lower())


@pytest.mark.parametrize(
    "raw",
    [
        SHA256_TEST_EXAMPLE_COM[:63],  # 63 hex
        SHA256_TEST_EXAMPLE_COM + "a",  # 65 hex
        "d41d8cd98f00b204e9800998ecf8427e",  # MD5
        "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3",  # SHA-1
        "z" * 64,  # right length, not hex
    ],
)
def test_hash_email_hex_that_is_not_sha256_is_not_passed_through(raw: str) -> None:
    assert hash_email(raw) == Rejected("email_malformed")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "email_empty"),
        (" ", "email_empty"),
        ("\t\n\r ", "email_empty"),
        ("\u00a0\u00a0", "email_empty"),
        ("testexample.com", "email_malformed"),  # no @
        ("test@@example.com", "email_malformed"),
        ("te@st@example.com", "email_malformed"),  # two @
        ("test@example", "email_malformed"),  # no dot in domain
        ("test@localhost", "email_malformed"),
        ("@example.com", "email_malformed"),  # empty local part
        ("test@", "email_malformed"),
        ("test@.com", "email_malformed"),
        ("test@example.", "email_malformed"),
        ("test@example..com", "email_malformed"),
        ("te st@example.com", "email_malformed"),  # space inside
        ("test@exa mple.com", "email_malformed"),
        ("te\tst@example.com", "email_malformed"),
        ("test@example.com\u00a0x", "email_malformed"),  # nbsp inside
        ("a@example.com,b@example.com", "email_malformed"),  # comma
        ("te,st@example.com", "email_malformed"),
        ("test\x00@example.com", "email_malformed"),  # NUL
        ("test@example.com\x00x", "email_malformed"),
        ("te\x01st@example.com", "email_malformed"),
        ("te\x1bst@example.com", "email_malformed"),  # ESC
        ("te\x7fst@example.com", "email_malformed"),  # DEL
        ("te\nst@example.com", "email_malformed"),
        ("mailto", "email_malformed"),
    ],
)
def test_hash_email_rejects(raw: str, reason: str) -> None:
    result = hash_email(raw)
    assert isinstance(result, Rejected)
    assert result.reason == reason


@pytest.mark.parametrize(
    "raw",
    [
        "te\x80st@example.com",  # C1 control (PAD)
        "te\x9bst@example.com",  # C1 control (CSI)
        "test@exa\x9fmple.com",  # C1 control (APC)
    ],
)
def test_hash_email_rejects_c1_control_characters(raw: str) -> None:
    assert hash_email(raw) == Rejected("email_malformed")


def _email_of_length(length: int) -> str:
    domain = "@example.com"
    return "a" * (length - len(domain)) + domain


@pytest.mark.parametrize(
    ("length", "accepted"),
    [(254, True), (255, False), (1000, False)],
)
def test_hash_email_length_limit(length: int, accepted: bool) -> None:
    raw = _email_of_length(length)
    assert len(raw) == length
    result = hash_email(raw)
    if accepted:
        assert result == sha(raw)
    else:
        assert result == Rejected("email_too_long")


def test_hash_email_length_is_measured_after_trimming() -> None:
    raw = "   " + _email_of_length(254) + "\n\t"
    assert hash_email(raw) == sha(raw.strip())


@pytest.mark.parametrize(
    "raw",
    [
        "a" * 10_000_000,
        "a" * 5_000_000 + "@" + "b" * 5_000_000 + ".com",
        "x@" + "y." * 5_000_000 + "com",
    ],
)
def test_hash_email_huge_string_is_rejected_fast(raw: str) -> None:
    start = time.perf_counter()
    result = hash_email(raw)
    elapsed = time.perf_counter() - start
    assert result == Rejected("email_too_long")
    assert elapsed < 0.5


def test_whitespace_only_huge_string_is_empty_and_fast() -> None:
    raw = " " * 10_000_000
    start = time.perf_counter()
    assert hash_email(raw) == Rejected("email_empty")
    assert hash_ios_idfa(raw) == Rejected("ios_idfa_empty")
    assert time.perf_counter() - start < 0.5


NON_STRINGS = [
    pytest.param(123, id="int"),
    pytest.param(0, id="zero"),
    pytest.param(1.5, id="float"),
    pytest.param(True, id="true"),
    pytest.param(False, id="false"),
    pytest.param({"email": "test@example.com"}, id="dict"),
    pytest.param(["test@example.com"], id="list"),
    pytest.param(b"test@example.com", id="bytes"),
    pytest.param(None, id="none"),
]


@pytest.mark.parametrize("value", NON_STRINGS)
@pytest.mark.parametrize(
    ("hasher", "reason"),
    [
        (hash_email, "email_not_a_string"),
        (hash_ios_idfa, "ios_idfa_not_a_string"),
        (hash_android_id, "android_id_not_a_string"),
    ],
)
def test_non_string_values_are_rejected(hasher: Hasher, reason: str, value: object) -> None:
    assert hasher(value) == Rejected(reason)


# --------------------------------------------------------------------------- device IDs


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        (IDFA_UPPER, IDFA_UPPER),
        (IDFA_LOWER, IDFA_UPPER),
        ("6d92078A-8246-4bA4-Ae5B-76104861e7Dc", IDFA_UPPER),
        (f"  {IDFA_LOWER}\n", IDFA_UPPER),
        (f"\u00a0{IDFA_UPPER}\t", IDFA_UPPER),
        ("00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000001"),
    ],
)
def test_hash_ios_idfa_uppercases_before_hashing(raw: str, canonical: str) -> None:
    assert hash_ios_idfa(raw) == sha(canonical)


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        (IDFA_UPPER, IDFA_LOWER),
        (IDFA_LOWER, IDFA_LOWER),
        ("6d92078A-8246-4bA4-Ae5B-76104861e7Dc", IDFA_LOWER),
        (f"\t{IDFA_UPPER}  ", IDFA_LOWER),
    ],
)
def test_hash_android_id_lowercases_before_hashing(raw: str, canonical: str) -> None:
    assert hash_android_id(raw) == sha(canonical)


def test_device_id_case_variants_give_one_digest() -> None:
    assert hash_ios_idfa(IDFA_LOWER) == hash_ios_idfa(IDFA_UPPER) == sha(IDFA_UPPER)
    assert hash_android_id(IDFA_LOWER) == hash_android_id(IDFA_UPPER) == sha(IDFA_LOWER)
    # Same UUID, different canonical forms per platform: the digests differ.
    assert hash_ios_idfa(IDFA_LOWER) != hash_android_id(IDFA_LOWER)


@pytest.mark.parametrize("hasher", [hash_ios_idfa, hash_android_id])
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (PRE_HASHED, PRE_HASHED),
        (PRE_HASHED.upper(), PRE_HASHED),
        (f" {PRE_HASHED.upper()} ", PRE_HASHED),
    ],
)
def test_device_id_prehashed_passthrough(hasher: Hasher, raw: str, expected: str) -> None:
    assert hasher(raw) == expected


@pytest.mark.parametrize(
    ("hasher", "kind"),
    [(hash_ios_idfa, "ios_idfa"), (hash_android_id, "android_id")],
)
@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("", "empty"),
        ("   \t\n", "empty"),
        (ZERO_UUID, "zeroed"),
        (f"  {ZERO_UUID}\n", "zeroed"),
        ("6D92078A82464BA4AE5B76104861E7DC", "malformed"),  # no dashes (32 hex)
        ("{6D92078A-8246-4BA4-AE5B-76104861E7DC}", "malformed"),  # braces
        ("6D92078A-8246-4BA4-AE5B-76104861E7D", "malformed"),  # 35 chars
        ("6D92078A-8246-4BA4-AE5B-76104861E7DCA", "malformed"),  # 37 chars
        ("6D92078G-8246-4BA4-AE5B-76104861E7DC", "malformed"),  # non-hex
        ("6D92078A_8246_4BA4_AE5B_76104861E7DC", "malformed"),  # wrong separators
        ("6D92078A-82464-BA4-AE5B-76104861E7DC", "malformed"),  # dashes misplaced
        ("6D92078A-8246-4BA4-AE5B 76104861E7DC", "malformed"),
        ("6D92078A-8246-4BA4-AE5B-76104861E7D\x00", "malformed"),
        ("test@example.com", "malformed"),
        ("not-a-device-id", "malformed"),
        ("d41d8cd98f00b204e9800998ecf8427e", "malformed"),  # MD5
        (PRE_HASHED[:63], "malformed"),
        (PRE_HASHED + "0", "malformed"),
        ("a" * 10_000_000, "malformed"),
    ],
)
def test_device_id_rejects(hasher: Hasher, kind: str, raw: str, problem: str) -> None:
    result = hasher(raw)
    assert isinstance(result, Rejected)
    assert result.reason == f"{kind}_{problem}"


@pytest.mark.parametrize(
    ("hasher", "raw"),
    [
        (hash_email, "test@example.com"),
        (hash_email, PRE_HASHED.upper()),
        (hash_ios_idfa, IDFA_LOWER),
        (hash_android_id, IDFA_UPPER),
        (hash_ios_idfa, PRE_HASHED.upper()),
    ],
)
def test_output_is_always_64_lowercase_hex(hasher: Hasher, raw: str) -> None:
    result = hasher(raw)
    assert isinstance(result, str)
    assert len(result) == identifiers.SHA256_HEX_LENGTH
    assert result == result.lower()
    assert is_sha256_hex(result)


@pytest.mark.parametrize("hasher", [hash_ios_idfa, hash_android_id])
def test_an_already_hashed_all_zero_device_id_is_still_refused(hasher: Hasher) -> None:
    digest = hashlib.sha256(ZERO_UUID.encode()).hexdigest()
    for value in (digest, digest.upper()):
        result = hasher(value)
        assert isinstance(result, Rejected)
        assert result.reason.endswith("_zeroed")
