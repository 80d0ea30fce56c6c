"""Code systems, identifier systems and canonical URLs, loaded once from `mappings/terminology.yaml`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Coding:
    system: str
    code: str
    display: str | None = None

    def as_fhir(self) -> dict[str, str]:
        coding = {"system": self.system, "code": self.code}
        if self.display:
            coding["display"] = self.display
        return coding


REFERRAL_EVENTS = ("new", "update", "cancel")  # the keys of `referralEvents` (terminology.yaml)


def _referral_events(doc: Mapping[str, Any]) -> dict[str, Coding]:
    """`referralEvents`: a new referral, an update of one sent before, its cancellation (MedCom's draft
    ehmi-message-event-cs: new-referral, update-referral, cancel-referral). KeyError: one is missing, or its
    system or code."""
    return {key: Coding(doc[key]["system"], doc[key]["code"], doc[key].get("display")) for key in REFERRAL_EVENTS}


@dataclass(frozen=True, slots=True)
class Terminology:
    canonical_base: str
    code_systems: Mapping[str, str]
    extensions: Mapping[str, str]
    referral_events: Mapping[str, Coding]  # REFERRAL_EVENTS → MessageHeader.eventCoding of the referral messages
    medcom: Mapping[str, Any]
    identifiers: Mapping[str, str]
    municipality_codes: Mapping[str, str]
    diagnosis_systems: Mapping[str, str]
    risk_probability: str
    snomed: str
    observation_category: str
    ucum: str

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any]) -> Terminology:
        base = doc["canonicalBase"].rstrip("/")
        return cls(
            canonical_base=base,
            code_systems={k: base + v for k, v in doc["codeSystems"].items()},
            extensions={k: base + v for k, v in doc["extensions"].items()},
            referral_events=_referral_events(doc["referralEvents"]),
            medcom=doc["medcom"],
            identifiers=doc["identifiers"],
            municipality_codes=doc["municipalityCodes"],
            diagnosis_systems=doc["diagnosisSystems"],
            risk_probability=doc["riskProbability"],
            snomed=doc["snomed"],
            observation_category=doc["observationCategory"],
            ucum=doc["ucum"],
        )

    def endpoint(self, sor: str) -> str:
        return str(self.medcom["endpointTemplate"]).format(sor=sor)

    def profile(self, name: str) -> str:
        return str(self.medcom["profiles"][name])

    def full_url(self, resource_type: str, resource_id: str) -> str:
        return f"{self.canonical_base}/{resource_type}/{resource_id}"
