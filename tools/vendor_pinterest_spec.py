"""Regenerate the vendored Pinterest v5 OpenAPI subset used by the emulator.

The emulator must not depend on anything outside the installed package at run
time, so it ships ``pinterest_v5_subset.json``: the operations the target uses
plus every component they reference, directly or transitively. Keeping the
subset mechanical (instead of hand-editing JSON) means an upgrade to a newer
Pinterest description is one command and a reviewable diff.

Usage (from the repository root)::

    python tools/vendor_pinterest_spec.py \
        [--source /work/shared/pinterest/openapi.json] \
        [--source-info /work/shared/pinterest/SOURCE.md] \
        [--output target_pinterest_audiences/emulator/pinterest_v5_subset.json]

Besides ``$ref`` strings, discriminator ``mapping`` values are followed too:
they name the concrete variants (e.g. the refresh-token form of
``/oauth/token``) that the emulator validates against.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = Path("/work/shared/pinterest/openapi.json")
DEFAULT_SOURCE_INFO = Path("/work/shared/pinterest/SOURCE.md")
DEFAULT_OUTPUT = REPO_ROOT / "target_pinterest_audiences/emulator/pinterest_v5_subset.json"

# Path template -> HTTP methods the target (and so the emulator) uses.
OPERATIONS: dict[str, tuple[str, ...]] = {
    "/ad_accounts/{ad_account_id}": ("get",),
    "/ad_accounts/{ad_account_id}/customer_lists": ("get", "post"),
    "/ad_accounts/{ad_account_id}/customer_lists/{customer_list_id}": ("get", "patch"),
    "/ad_accounts/{ad_account_id}/audiences": ("get", "post"),
    "/ad_accounts/{ad_account_id}/audiences/{audience_id}": ("get",),
    "/oauth/token": ("post",),
}

_COMPONENT_REF = re.compile(r"^#/components/([^/]+)/([^/]+)$")


def _component_refs(node: Any) -> set[tuple[str, str]]:
    """Return every ``(section, name)`` component that ``node`` points at directly."""
    found: set[tuple[str, str]] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            for key, value in current.items():
                if key == "$ref" and isinstance(value, str):
                    found.update(_parse_ref(value))
                elif key == "discriminator" and isinstance(value, dict):
                    for target in value.get("mapping", {}).values():
                        found.update(_parse_ref(target))
                else:
                    stack.append(value)
        elif isinstance(current, list):
            stack.extend(current)
    return found


def _parse_ref(ref: str) -> set[tuple[str, str]]:
    match = _COMPONENT_REF.match(ref)
    if match is None:
        if ref.startswith("#/"):
            raise ValueError(f"unsupported reference {ref!r}: only #/components/<section>/<name>")
        return set()
    # JSON pointer escapes (~1 for '/', ~0 for '~') do not occur in Pinterest's
    # component names, but decode them anyway so a future name cannot break us.
    return {(match.group(1), match.group(2).replace("~1", "/").replace("~0", "~"))}


def _transitive_components(
    components: dict[str, dict[str, Any]], roots: set[tuple[str, str]]
) -> set[tuple[str, str]]:
    seen: set[tuple[str, str]] = set()
    pending = list(roots)
    while pending:
        item = pending.pop()
        if item in seen:
            continue
        section, name = item
        try:
            definition = components[section][name]
        except KeyError as exc:
            raise KeyError(f"dangling reference #/components/{section}/{name}") from exc
        seen.add(item)
        pending.extend(_component_refs(definition) - seen)
    return seen


def read_source_info(source_info: Path) -> dict[str, str]:
    """Pull repository, path and commit out of SOURCE.md (the provenance note)."""
    text = source_info.read_text(encoding="utf-8")
    patterns = {
        "repository": r"^- Repository:\s*(\S+)",
        "path": r"^- Path in repository:\s*`([^`]+)`",
        "commit": r"^- Commit:\s*`([0-9a-f]{40})`",
    }
    info: dict[str, str] = {}
    for key, pattern in patterns.items():
        match = re.search(pattern, text, flags=re.MULTILINE)
        if match is None:
            raise ValueError(f"{source_info}: cannot find the {key} line")
        info[key] = match.group(1)
    return info


def build_subset(spec: dict[str, Any], provenance: dict[str, str]) -> dict[str, Any]:
    """Return the subset document: selected operations plus referenced components."""
    paths: dict[str, Any] = {}
    for template, methods in OPERATIONS.items():
        item = spec["paths"][template]
        kept = {key: value for key, value in item.items() if key not in _HTTP_METHODS}
        for method in methods:
            if method not in item:
                raise KeyError(f"{method.upper()} {template} is not in the source description")
            kept[method] = item[method]
        paths[template] = kept

    all_components: dict[str, dict[str, Any]] = spec["components"]
    roots = _component_refs(paths)
    # Security schemes are referenced by name, not by $ref.
    for item in paths.values():
        for method in _HTTP_METHODS & item.keys():
            for requirement in item[method].get("security", []):
                roots.update(("securitySchemes", name) for name in requirement)
    needed = _transitive_components(all_components, roots)

    components: dict[str, dict[str, Any]] = {}
    for section in all_components:
        names = sorted(name for sec, name in needed if sec == section)
        if names:
            components[section] = {name: all_components[section][name] for name in names}

    used_tags = {
        tag
        for item in paths.values()
        for method in _HTTP_METHODS & item.keys()
        for tag in item[method].get("tags", [])
    }
    subset: dict[str, Any] = {
        "openapi": spec["openapi"],
        "info": spec["info"],
        "servers": spec["servers"],
        "x-vendored-from": {
            **provenance,
            "api_version": spec["info"]["version"],
            "note": (
                "Subset of Pinterest's published OpenAPI description: the operations "
                "listed under 'paths' and every component they reference. Regenerate "
                "with tools/vendor_pinterest_spec.py; do not edit by hand."
            ),
        },
        "tags": [tag for tag in spec.get("tags", []) if tag.get("name") in used_tags],
        "paths": paths,
        "components": components,
    }
    return subset


_HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns a process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--source-info", type=Path, default=DEFAULT_SOURCE_INFO)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)

    spec = json.loads(args.source.read_text(encoding="utf-8"))
    subset = build_subset(spec, read_source_info(args.source_info))
    args.output.write_text(
        json.dumps(subset, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    counts = ", ".join(f"{len(v)} {k}" for k, v in subset["components"].items())
    print(f"wrote {args.output} ({len(subset['paths'])} paths; {counts})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
