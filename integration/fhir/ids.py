"""Resource ids derived from the inbound message's id, so a redelivered message rebuilds the same message.

uuid5 of (inbound id, role) under a fixed namespace: unique per message and role, stable across
retries, never random. See docs/decisions/0003-deterministic-ids.md.
"""

from __future__ import annotations

import uuid

NAMESPACE = uuid.UUID("0c8e6a52-4b1f-5d3e-9a77-2f61d0b4c9e1")  # fixed forever: changing it changes every id


def derived_id(source_id: str, role: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{source_id}/{role}"))


def organisation_id(sor: str) -> str:
    """The same organisation has the same resource id in every message."""
    return derived_id("organisation", sor)


def derived_uuid4(source_id: str, role: str) -> str:
    """A derived id in UUID version 4 form, where MedCom requires v4 (thread and payload ids):
    the same hash as `derived_id`, with the version and variant bits of v4."""
    return str(uuid.UUID(bytes=uuid.uuid5(NAMESPACE, f"{source_id}/{role}").bytes, version=4))
