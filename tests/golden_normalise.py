"""Normalising outputs for golden comparison: generated ids and the clock's timestamps become placeholders.

Ids are replaced in order of first appearance (<id:1>, <id:2>, …), everywhere they occur, so the
comparison still proves that references point at the right resources.
"""

from __future__ import annotations

import re
from typing import Any

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def normalise(value: Any, now: str, generated: set[str]) -> Any:
    names: dict[str, str] = {}

    def rename(match: re.Match[str]) -> str:
        found = match.group(0)
        if found not in generated:
            return found
        return names.setdefault(found, f"<id:{len(names) + 1}>")

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, str):
            return UUID.sub(rename, node).replace(now, "<now>")
        return node

    return walk(value)


def generated_ids(outgoing: list[dict[str, Any]]) -> set[str]:
    """Ids the service minted: every resource id and Bundle id in the output."""
    ids = set()
    for item in outgoing:
        bundle = item["message"]
        ids.add(bundle["id"])
        ids.update(e["resource"]["id"] for e in bundle["entry"])
    return ids
