"""Danish healthcare identifiers: check digits of location numbers, and the replacement CPR numbers."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from enum import Enum

from integration.domain.cpr import CPR_SYSTEM, Cpr, parse_cpr, read_cpr


def gs1_check_digit_ok(number: str) -> bool:
    """GS1 mod-10 check of an EAN/GLN location number (13 digits)."""
    if len(number) != 13 or not number.isdigit():
        return False
    body, check = number[:-1], int(number[-1])
    total = sum(int(digit) * (3 if position % 2 == 0 else 1) for position, digit in enumerate(reversed(body)))
    return (10 - total % 10) % 10 == check


# Replacement CPR numbers (erstatningspersonnumre) for a patient without a CPR number, as HL7 Denmark's
# dk-core 3.4.0 slices Patient.identifier (DkCoreXeCprIdentifier, DkCoreDeCprIdentifier; MedCom's core
# patient inherits both): the national X-eCPR, and the decentral D-eCPR, whose system names the region
# that issued it (CodeSystem dk-core-d-ecpr-codes). The value is DDMMYY, one digit, two capital letters
# and one digit, so it never has the shape of a CPR number (ten digits).
X_ECPR_SYSTEM = "urn:oid:1.2.208.176.1.6.1.1"
D_ECPR_SYSTEMS: Mapping[str, str] = {
    "urn:oid:1.2.208.176.1.6.1.3": "D-eCPR",
    "urn:oid:1.2.208.176.1.6.1.3.177": "D-eCPR fra Region Sjælland",
    "urn:oid:1.2.208.176.1.6.1.3.179": "D-eCPR fra Region Nordjylland",
    "urn:oid:1.2.208.176.1.6.1.3.181": "D-eCPR fra Region Midtjylland",
    "urn:oid:1.2.208.176.1.6.1.3.183": "D-eCPR fra Region Syddanmark",
    "urn:oid:1.2.208.176.1.6.1.3.187": "D-eCPR fra Region Hovedstaden",
}
REPLACEMENT_SYSTEMS = frozenset({X_ECPR_SYSTEM, *D_ECPR_SYSTEMS})
_DAY_MONTH = (  # a day that the month has (29 February in any year)
    r"(((0[1-9]|[12][0-9]|3[01])(01|03|05|07|08|10|12))"
    r"|((0[1-9]|[12][0-9]|30)(04|06|09|11))"
    r"|((0[1-9]|1[0-9]|2[0-9])02))"
)


class ReplacementKind(Enum):
    X_ECPR = "x-ecpr"
    D_ECPR = "d-ecpr"


# dk-core's invariants x-ecpr and d-ecpr, as written there.
FORMATS = {
    ReplacementKind.X_ECPR: re.compile(rf"{_DAY_MONTH}[0-9]{{2}}[17][A-Z]{{2}}[0-9]"),
    ReplacementKind.D_ECPR: re.compile(rf"{_DAY_MONTH}[0-9]{{2}}[056][A-Z]{{2}}[0-9]"),
}


_SHAPE = {
    ReplacementKind.X_ECPR: "DDMMYY, 1 or 7, two capital letters, a digit",
    ReplacementKind.D_ECPR: "DDMMYY, 0, 5 or 6, two capital letters, a digit",
}


@dataclass(frozen=True, slots=True)
class ReplacementCpr:
    """A replacement CPR number with the system that issued it. Its date part may be a birth date, but no
    century rule is published for it: it gives no birth date."""

    system: str
    value: str

    @property
    def kind(self) -> ReplacementKind:
        return ReplacementKind.X_ECPR if self.system == X_ECPR_SYSTEM else ReplacementKind.D_ECPR

    @property
    def label(self) -> str:
        return "an X-eCPR" if self.kind is ReplacementKind.X_ECPR else "a D-eCPR"

    @property
    def birth_date(self) -> date | None:
        return None

    @property
    def key(self) -> str:
        """Whom the audit log files the patient under: `system|value` (FHIR's token form), since two regions
        may issue the same D-eCPR value; the pathway files the patient's course under it too (decision 18)."""
        return f"{self.system}|{self.value}"

    def __repr__(self) -> str:  # keep the number out of tracebacks and debug output
        return f"ReplacementCpr({self.kind.value}, <hidden>)"


PatientNumber = Cpr | ReplacementCpr  # how a patient is named: by CPR number, or by a replacement number


def parse_replacement_cpr(system: str, value: str) -> ReplacementCpr:
    """A replacement number of a known system in its system's format; ValueError (never repeating the
    value) otherwise."""
    if system not in REPLACEMENT_SYSTEMS:
        raise ValueError("not a replacement CPR system (X-eCPR or a region's D-eCPR)")
    number = ReplacementCpr(system, value)
    if not FORMATS[number.kind].fullmatch(value):
        raise ValueError(f"{number.label} does not have its format: {_SHAPE[number.kind]}")
    return number


NOT_A_PATIENT = (
    "not a CPR number (ten digits, DDMMYYSSSS, DDMMYY-SSSS or DDMMYY SSSS, starting with a real birth date), "
    "nor a replacement number (an X-eCPR, DDMMYY1AB2, alone or as SYSTEM|VALUE; a D-eCPR as SYSTEM|VALUE)"
)


def typed_patient_key(typed: str) -> str:
    """The key the audit files a patient under, from how a person types it (decision 17): a CPR number
    (DDMMYYSSSS, DDMMYY-SSSS, DDMMYY SSSS) as its ten digits, also as `urn:oid:1.2.208.176.1.2|NUMBER`; a
    replacement number in FHIR's token form `SYSTEM|VALUE` (X-eCPR's or a D-eCPR's system); a bare X-eCPR value
    (DDMMYY, 1 or 7, two capital letters, a digit) under X-eCPR's system, since no other system issues that
    shape. ValueError otherwise, never repeating what was typed: a bare D-eCPR value names the systems to type
    it with (six issue that shape, and two regions may give the same value to different patients)."""
    text = typed.strip()
    system, bar, number = text.partition("|")
    bare_d_ecpr = not bar and FORMATS[ReplacementKind.D_ECPR].fullmatch(text)
    if bare_d_ecpr and not FORMATS[ReplacementKind.X_ECPR].fullmatch(text):
        raise ValueError(
            "a D-eCPR names its patient only with its system: type SYSTEM|VALUE, the system one of "
            + ", ".join(sorted(D_ECPR_SYSTEMS))
        )
    try:
        if bar and system == CPR_SYSTEM:
            return read_cpr(number).value
        if bar:
            return parse_replacement_cpr(system, number).key
        if FORMATS[ReplacementKind.X_ECPR].fullmatch(text):
            return ReplacementCpr(X_ECPR_SYSTEM, text).key
        return read_cpr(text).value
    except ValueError as exc:
        raise ValueError(str(exc) if bar and system in REPLACEMENT_SYSTEMS else NOT_A_PATIENT) from None


def is_replacement_key(key: str) -> bool:
    """Whether an audit key (`ReplacementCpr.key`) names a patient by a replacement number."""
    return key.partition("|")[0] in REPLACEMENT_SYSTEMS


def patient_number(identifiers: Iterable[tuple[object, object]]) -> PatientNumber | None:
    """How (system, value) pairs name a patient: the CPR number when one is given, else a replacement number;
    None when neither is. ValueError (never repeating the value) when the one chosen is malformed, or when two
    different numbers of one kind are given (the same number twice is one)."""
    pairs = [(s, v) for s, v in identifiers if isinstance(s, str) and isinstance(v, str)]
    cprs = {v for s, v in pairs if s == CPR_SYSTEM}
    if len(cprs) > 1:  # which one is the patient? Taking either would route on a guess
        raise ValueError("names more than one CPR number")
    if cprs:
        return parse_cpr(cprs.pop())
    replacements = {(s, v) for s, v in pairs if s in REPLACEMENT_SYSTEMS}
    if len(replacements) > 1:
        raise ValueError("names more than one replacement CPR number")
    return parse_replacement_cpr(*replacements.pop()) if replacements else None
