"""MedCom's HospitalNotification examples (../shared/medcom/dk-medcom-hospitalnotification-testscripts) as
messages our reader can take: their ids that are no UUIDs (INDEX.md caveat 3: `g1affa53-…`) replaced, each by
the same uuid5 wherever it is named, so the examples' content is what the rules are tested with."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

FOLDER = ("medcom", "dk-medcom-hospitalnotification-testscripts")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_ID_LIKE = re.compile(r"\b[0-9a-z]{8}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{12}\b")


def example_path(shared: Path, name: str) -> Path:
    return shared.joinpath(*FOLDER, f"HospitalNotification_Ex_{name}.json")


def with_uuids(bundle: dict[str, Any]) -> dict[str, Any]:
    """The bundle with every UUID-shaped id that is no UUID replaced by a UUID (consistently)."""
    text = json.dumps(bundle)

    def fixed(match: re.Match[str]) -> str:
        found = match.group(0)
        return found if _UUID.fullmatch(found) else str(uuid.uuid5(uuid.NAMESPACE_URL, found))

    return dict(json.loads(_ID_LIKE.sub(fixed, text)))


def example(shared: Path, name: str) -> dict[str, Any]:
    """An example (`STIN_A`, `MORS_K`, …) as a message our reader takes: ids made UUIDs."""
    return with_uuids(json.loads(example_path(shared, name).read_bytes()))


def as_new_message(bundle: dict[str, Any], seed: str) -> dict[str, Any]:
    """The same notification as a new message (new Bundle.id and MessageHeader.id, Provenance target kept
    pointing at it), so one example can be sent more than once as different messages."""
    header = bundle["entry"][0]["resource"]
    old = header["id"]
    new = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{seed}/{old}"))
    text = json.dumps(bundle).replace(old, new)
    out = dict(json.loads(text))
    out["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{seed}/bundle"))
    return out


def for_patient(bundle: dict[str, Any], cpr: str, example_cpr: str = "2509479989") -> dict[str, Any]:
    """The notification about another patient (every mention of the example's CPR number replaced)."""
    return dict(json.loads(json.dumps(bundle).replace(example_cpr, cpr)))


def with_episode(bundle: dict[str, Any], episode: str) -> dict[str, Any]:
    """The notification about another stay: its (first) episodeOfCare identifier's value set."""
    out = json.loads(json.dumps(bundle))
    encounter = next(e["resource"] for e in out["entry"] if e["resource"]["resourceType"] == "Encounter")
    encounter["episodeOfCare"][0]["identifier"]["value"] = episode
    return dict(out)
