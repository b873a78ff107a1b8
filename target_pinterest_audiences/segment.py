"""Segment payloads, as stored by Segment's warehouses or replayed from its API.

Users moving from Segment's "Pinterest Audiences" destination often have Engage's output
at hand in one of these shapes; each is rewritten into the target's record contract
before the contract is applied:

- identify, nested (API replay): ``{"traits": {"email": ..., "<audience>": true|false},
  "context": {"device": {"advertisingId": ..., "type": "ios"|"android"}}}``
  -> email from ``traits.email``; boolean traits are Engage audience flags;
- track "Audience Entered" / "Audience Exited", nested: ``{"event": ...,
  "properties": {"audience_key": "<audience>", "<audience>": true|false}, "context":
  {"traits": {"email": ...}, "device": ...}}`` -> explicit form (``audience_key``,
  ``in_audience``);
- warehouse rows (``identifies`` / ``tracks`` tables): columns are flattened, so the
  device is ``context_device_advertising_id`` with ``context_device_type``, the email may
  be ``context_traits_email``, traits are top-level columns (the contract's Engage form),
  and a tracks row's ``audience_key`` with its flag column (or ``event`` /
  ``event_text``) gives the explicit form.

``context.device.type`` decides the identifier: ``ios`` -> ``ios_idfa``, ``android`` ->
``android_id``; any other type is reported as ``device_type_unknown`` and the ID is not
sent (an advertising ID without its platform cannot be normalized).
"""

from __future__ import annotations

from typing import Any

from target_pinterest_audiences.fields import AUDIENCE_KEY, IDENTIFIER_FIELDS, IN_AUDIENCE

DEVICE_TYPE_UNKNOWN = "device_type_unknown"
_DEVICE_FIELDS = {"ios": "ios_idfa", "android": "android_id"}
_ENTERED = "Audience Entered"
_EXITED = "Audience Exited"
_WAREHOUSE_DEVICE_ID = "context_device_advertising_id"
_WAREHOUSE_DEVICE_TYPE = "context_device_type"
_WAREHOUSE_EMAIL = "context_traits_email"
SEGMENT_KEYS = frozenset(
    {"traits", "properties", "context", _WAREHOUSE_DEVICE_ID, _WAREHOUSE_EMAIL}
)


def is_segment_payload(record: dict[str, Any]) -> bool:
    """Cheap test, first on the hot path: does the record look like a Segment payload?"""
    if SEGMENT_KEYS.isdisjoint(record):
        return False
    return (
        isinstance(record.get("traits"), dict)
        or isinstance(record.get("properties"), dict)
        or isinstance(record.get("context"), dict)
        or _WAREHOUSE_DEVICE_ID in record
        or _WAREHOUSE_EMAIL in record
    )


def to_contract(record: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Rewrite a Segment payload into contract fields; also return identifier rejections."""
    context = record.get("context") if isinstance(record.get("context"), dict) else {}
    assert isinstance(context, dict)
    device = context.get("device") if isinstance(context.get("device"), dict) else {}
    assert isinstance(device, dict)
    traits = record.get("traits")
    properties = record.get("properties")
    context_traits = context.get("traits") if isinstance(context.get("traits"), dict) else {}
    assert isinstance(context_traits, dict)

    contract: dict[str, Any] = {}
    rejected: list[str] = []
    warehouse_row = not isinstance(traits, dict) and not isinstance(properties, dict)
    if isinstance(traits, dict):
        contract.update(traits)
        for key in (AUDIENCE_KEY, IN_AUDIENCE):
            if key in record:
                contract[key] = record[key]
    elif warehouse_row:
        # Traits and properties are top-level columns already; drop the context columns.
        contract.update(
            (key, value) for key, value in record.items() if not key.startswith("context_")
        )
        properties = contract  # a tracks-table row: audience_key and the flag are columns
    for name in IDENTIFIER_FIELDS:
        if contract.get(name) is None:
            value = record.get(name)
            if value is None:
                value = context_traits.get(name, record.get(f"context_traits_{name}"))
            if value is not None:
                contract[name] = value

    advertising_id = device.get("advertisingId", record.get(_WAREHOUSE_DEVICE_ID))
    device_type = device.get("type", record.get(_WAREHOUSE_DEVICE_TYPE))
    if advertising_id is not None:
        field = _DEVICE_FIELDS.get(str(device_type).strip().lower())
        if field is None:
            rejected.append(DEVICE_TYPE_UNKNOWN)
        elif contract.get(field) is None:
            contract[field] = advertising_id

    if isinstance(properties, dict) and AUDIENCE_KEY in properties:
        audience = properties[AUDIENCE_KEY]
        contract[AUDIENCE_KEY] = audience
        flag = properties.get(audience) if isinstance(audience, str) else None
        event = record.get("event", record.get("event_text"))
        if isinstance(flag, bool):
            contract[IN_AUDIENCE] = flag
        elif event in (_ENTERED, _EXITED):
            contract[IN_AUDIENCE] = event == _ENTERED
        if isinstance(audience, str) and warehouse_row:
            contract.pop(audience, None)  # the flag column is not a second audience
    return contract, rejected
