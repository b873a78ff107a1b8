"""Translate OpenAPI 3.0 Schema Objects into JSON Schema Draft 7.

OpenAPI 3.0 schemas are a dialect of JSON Schema that ``jsonschema`` cannot
validate as-is, so the emulator converts the vendored description once at
start-up:

* ``nullable: true`` adds ``"null"`` to ``type`` (and ``None`` to ``enum``);
  a nullable schema without ``type`` is wrapped in ``anyOf [schema, null]``.
* ``example``, ``examples``, ``xml``, ``externalDocs``, ``deprecated`` and every
  ``x-*`` extension are dropped: they are documentation, not constraints.
* ``discriminator`` with a ``mapping`` is not just dropped but turned into
  ``if``/``then`` branches (``if grant_type == "refresh_token" then
  OauthAccessTokenRequestRefresh``). That is what makes the emulator check the
  refresh-token variant of ``/oauth/token`` instead of only the base schema.
* ``$ref: "#/components/..."`` is rewritten to an absolute URI inside the
  registry resource that holds the converted components, so any converted
  schema can be validated on its own with the shared ``referencing`` registry.

Only keywords in schema positions are converted; property *names* such as a
property literally called ``example`` are left alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

# Keywords whose value is a map of name -> schema.
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "definitions"})
# Keywords whose value is a list of schemas.
_SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf"})
# Keywords whose value is a single schema (or, for some, a boolean).
_SCHEMA_SINGLES = frozenset({"items", "additionalProperties", "not"})
# Documentation-only keywords with no JSON Schema meaning worth keeping.
_DROPPED = frozenset({"example", "examples", "xml", "externalDocs", "deprecated", "nullable"})

RefRewriter = Callable[[str], str]


def convert_schema(
    schema: Any, rewrite_ref: RefRewriter, *, skip_discriminator: bool = False
) -> Any:
    """Return a JSON Schema Draft 7 equivalent of an OpenAPI 3.0 Schema Object.

    ``rewrite_ref`` maps an OpenAPI ``$ref`` (e.g. ``#/components/schemas/X``)
    to the URI the converted schema lives under. ``skip_discriminator`` leaves
    out the discriminator branches of the top-level schema; it is used for the
    "plain" copy of a base schema that its own variants refer back to, so the
    branches cannot recurse into themselves.
    """
    if not isinstance(schema, Mapping):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROPPED or key.startswith("x-") or key == "discriminator":
            continue
        if key == "$ref" and isinstance(value, str):
            out[key] = rewrite_ref(value)
        elif key in _SCHEMA_MAPS and isinstance(value, Mapping):
            out[key] = {name: convert_schema(sub, rewrite_ref) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [convert_schema(sub, rewrite_ref) for sub in value]
        elif key in _SCHEMA_SINGLES:
            out[key] = convert_schema(value, rewrite_ref)
        else:
            out[key] = value

    discriminator = schema.get("discriminator")
    if not skip_discriminator and isinstance(discriminator, Mapping):
        branches = discriminator_branches(discriminator, rewrite_ref)
        if branches:
            out["allOf"] = [*out.get("allOf", []), *branches]

    if schema.get("nullable") is True:
        return _allow_null(out)
    return out


def discriminator_branches(discriminator: Mapping[str, Any], rewrite_ref: RefRewriter) -> list[Any]:
    """Express a discriminator mapping as Draft 7 ``if``/``then`` subschemas."""
    prop = discriminator.get("propertyName")
    mapping = discriminator.get("mapping")
    if not isinstance(prop, str) or not isinstance(mapping, Mapping):
        return []
    return [
        {
            "if": {"properties": {prop: {"const": value}}, "required": [prop]},
            "then": {"$ref": rewrite_ref(target)},
        }
        for value, target in mapping.items()
    ]


def _allow_null(schema: dict[str, Any]) -> dict[str, Any]:
    declared = schema.get("type")
    if declared is None:
        # e.g. a nullable allOf/$ref: Draft 7 ignores siblings of $ref, so wrap.
        return {"anyOf": [schema, {"type": "null"}]}
    types = [declared] if isinstance(declared, str) else list(declared)
    if "null" not in types:
        types.append("null")
    schema["type"] = types
    enum = schema.get("enum")
    if isinstance(enum, list) and None not in enum:
        schema["enum"] = [*enum, None]
    return schema
