"""The abstract message structures of the ADT triggers read here, as data: which structure each trigger has
(MSH-9.3), which segments a message of it must carry and which may occur at most once. Used by `formats.adt`
before any value is read, so that two PID segments (which patient?), two PV1 (which visit?) or two of our
Z-segment (which referral?) are refused, not read as the first of them.

Source: HL7 v2.5 Chapter 3 (ADT_A01, ADT_A03, ADT_A09 abstract message syntax) and Table 0003's message
structure column (A03 → ADT_A03; A08, A13 → ADT_A01; A11 → ADT_A09), the same from v2.3.1 to v2.9.
A segment in neither `required` nor `once` — DG1, PR1, OBX, NK1, AL1, ROL, NTE, IN1, … — may repeat.
Segments a message need not carry but that we read, when present, only once: EVN (its EVN-2 is the event
time; the profile falls back to MSH-7), PD1 (the GP). The profile's own segments (our ZRH) are added by
`once_per_message` from mappings/hl7.yaml.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from integration.formats.er7 import Er7Message, ErrorCode, Hl7Problem


@dataclass(frozen=True, slots=True)
class Structure:
    """An abstract message structure: the segments it must carry (in the standard's order) and those that
    may occur at most once."""

    required: tuple[str, ...]
    once: frozenset[str]


STRUCTURES: Mapping[str, Structure] = MappingProxyType(
    {
        "ADT_A01": Structure(
            ("PID", "PV1"), frozenset({"MSH", "EVN", "PID", "PD1", "PV1", "PV2", "ACC", "UB1", "UB2", "PDA"})
        ),
        "ADT_A03": Structure(("PID", "PV1"), frozenset({"MSH", "EVN", "PID", "PD1", "PV1", "PV2", "PDA"})),
        "ADT_A09": Structure(("PID", "PV1"), frozenset({"MSH", "EVN", "PID", "PD1", "PV1", "PV2"})),
    }
)
STRUCTURE_OF_TRIGGER: Mapping[str, str] = MappingProxyType(
    {"A03": "ADT_A03", "A08": "ADT_A01", "A13": "ADT_A01", "A11": "ADT_A09"}
)


def check_structure(message: Er7Message, profile_segments: Iterable[str]) -> None:
    """Refuse a message whose MSH-9.3 is not its trigger's structure (200), that lacks a required segment
    (100, naming it: `PV1`), or that carries twice a segment read only once (100, naming the second:
    `PID(2)`). `profile_segments`: the segments the profile reads single values from beyond the standard's
    (our Z-segment), each also allowed once. The trigger must be one of STRUCTURE_OF_TRIGGER."""
    name = STRUCTURE_OF_TRIGGER[message.trigger]
    if message.structure and message.structure != name:
        raise message.msh.problem(
            f"not the message structure of this trigger ({name})", 9, 3, code=ErrorCode.UNSUPPORTED_MESSAGE_TYPE
        )
    structure = STRUCTURES[name]
    for segment_id in structure.required:
        if message.segment(segment_id) is None:
            raise Hl7Problem(
                f"the {segment_id} segment is missing", segment=segment_id, code=ErrorCode.SEGMENT_SEQUENCE
            )
    once = structure.once | frozenset(profile_segments)
    for segment in message.segments_in_order:
        if segment.sequence > 1 and segment.id in once:
            raise Hl7Problem(
                f"a second {segment.id} segment: the message structure allows one",
                segment=segment.id,
                segment_sequence=segment.sequence,
                code=ErrorCode.SEGMENT_SEQUENCE,
            )
