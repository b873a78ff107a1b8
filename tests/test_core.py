"""The SDK's standard target tests, run against the emulator.

The standard streams carry no identifiers, so every record is skipped and counted; these
tests check that the target speaks the Singer protocol the way every SDK target does
(schema changes, records before schema, missing key properties, --about, ...).
"""

from __future__ import annotations

import atexit

from singer_sdk.testing import get_target_test_class

from target_pinterest_audiences.emulator import Emulator
from target_pinterest_audiences.target import TargetPinterestAudiences

from support import AD_ACCOUNT, TOKEN, sha

# The test class is built at import time from a config, so the emulator must be up by then.
_EMULATOR = Emulator().start()
atexit.register(_EMULATOR.stop)

SAMPLE_CONFIG = {
    "ad_account_id": AD_ACCOUNT,
    "access_token": TOKEN,
    "api_url": _EMULATOR.url,
}

StandardTargetTests = get_target_test_class(
    target_class=TargetPinterestAudiences,
    config=SAMPLE_CONFIG,
)


class TestTargetPinterestAudiences(StandardTargetTests):  # type: ignore[misc,valid-type]
    """Standard target tests."""


def test_the_one_standard_stream_with_emails_reached_pinterest_hashed() -> None:
    """Only ``pk_updates`` carries emails; its users end up in the list named after it."""
    lists = _EMULATOR.snapshot()["ad_accounts"][AD_ACCOUNT]["customer_lists"]
    assert [item["name"] for item in lists] == ["example_stream"]
    assert _EMULATOR.members(lists[0]["id"]) == {sha("alice@example.com"), sha("bob@example.com")}
    counters = _EMULATOR.counters()
    assert counters["invalid_requests"] == 0
    assert counters["non_sha256_records"] == 0
