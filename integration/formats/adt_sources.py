"""Reading the parts of the discharge event out of an ADT message, place by place as the profile says, each
remembered with where it was read (`Reader.origins`: contract path → HL7 place). Used by `formats.adt`.

An empty field and HL7's null `""` both read as absent here: a discharge event is a whole document, so
"delete the value" and "no value" mean the same for it (an A08 replaces what the A03 said).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from integration.domain.cpr import parse_cpr
from integration.formats.adt_profile import Hl7Profile, Place, Source
from integration.formats.er7 import Er7Field, Er7Message, Er7Segment, ErrorCode
from integration.formats.hl7_values import At, hl7_date, hl7_number, hl7_text, hl7_time, hl7_yes_no

# Contract paths whose value is free text (line breaks kept); every other value read is a name, code,
# identifier or time, and refuses control characters and bidirectional controls at its HL7 place.
FREE_TEXT = frozenset({"referral.note", "exerciseTest.conclusion"})
_BOOLEANS = ("trainingNeeded", "ambulatoryControl", "ambulatoryControlAtEndOfRehab")
_LISTS = ("riskCriteria", "rehabElements")


class Reader:
    """One ADT message read through one profile; `origins` fills as values are read."""

    def __init__(self, message: Er7Message, profile: Hl7Profile) -> None:
        self.message = message
        self.profile = profile
        self.origins: dict[str, At] = {}

    # -- places -------------------------------------------------------------------------------------------
    def _segment(self, place: Place, required: bool = False) -> Er7Segment | None:
        found = self.message.segment(place.segment)
        if found is None and required:
            raise _segment_missing(place)
        return found

    def _field(self, place: Place) -> tuple[Er7Field, At]:
        segment = self._segment(place)
        at = At(place.segment, segment.sequence if segment else 1, place.field, place.component or 1)
        return (segment.field(place.field) if segment else Er7Field()), at

    def value(self, place: Place, path: str) -> str | None:
        field, at = self._field(place)
        self.origins[path] = at
        return _checked(field.text(place.component or 1), at, path)

    def required(self, place: Place, path: str, why: str = "") -> str:
        text = self.value(place, path)
        if text is None:
            raise self.origins[path].problem(why or "a required field is empty", ErrorCode.REQUIRED_FIELD_MISSING)
        return text

    def time(self, place: Place, path: str) -> str:
        return hl7_time(self.required(place, path), self.origins[path], self.profile.timezone)

    def occurred_at(self) -> str:
        for place in self.profile.occurred_at:
            if self.value(place, "occurredAt") is not None:
                return self.time(place, "occurredAt")
        raise self.origins["occurredAt"].problem("no event time", ErrorCode.REQUIRED_FIELD_MISSING)

    # -- patient and hospital -----------------------------------------------------------------------------
    def patient(self) -> dict[str, Any]:
        profile = self.profile
        name = profile.name
        patient: dict[str, Any] = {"cpr": self._cpr()}
        family = self.value(Place(name.segment, name.field, 1), "patient.familyName")
        given = [self.value(Place(name.segment, name.field, c), "patient.givenNames") for c in (2, 3)]
        patient["givenNames"] = [g for g in given if g]
        if family is not None:
            patient["familyName"] = family
        self._birth_date(patient["cpr"])
        municipality = self.value(profile.municipality_code, "patient.municipalityCode")
        if municipality is not None:
            patient["municipalityCode"] = municipality
        gp = {
            "sor": self.value(profile.gp_sor, "patient.gp.sor"),
            "ydernummer": self.value(profile.gp_ydernummer, "patient.gp.ydernummer"),
        }
        if any(gp.values()):
            patient["gp"] = {k: v for k, v in gp.items() if v is not None}
            self.origins["patient.gp"] = self.origins["patient.gp.sor" if not gp["sor"] else "patient.gp.ydernummer"]
        return patient

    def _cpr(self) -> str:
        """The CPR number: the PID-3 repetition under the profile's assigning authority (or identifier type);
        two such repetitions with different numbers are refused at the second (which would be the patient?),
        the same number twice is read once."""
        place = self.profile.patient_identifier
        segment = self._segment(place, required=True)
        assert segment is not None
        field = segment.field(place.field)
        found: tuple[str, At] | None = None
        for repetition in range(1, len(field.repetitions) + 1):
            authority = {field.text(4, repetition, 1), field.text(4, repetition, 2)} - {None}
            kind = field.text(5, repetition)
            if not (authority & self.profile.assigning_authorities or kind in self.profile.identifier_types):
                continue
            at = At(place.segment, segment.sequence, place.field, 1, repetition)
            number = _checked(field.text(1, repetition), at, "patient.cpr")
            if number is None:
                raise at.problem("the CPR number is empty", ErrorCode.REQUIRED_FIELD_MISSING)
            if found is None:
                found = (number, at)
            elif number != found[0]:
                raise At(place.segment, segment.sequence, place.field, None, repetition).problem(
                    "a second, different CPR number under the CPR's assigning authority"
                )
        if found is None:
            raise At(place.segment, segment.sequence, place.field, 4).problem(
                "no identifier under the CPR's assigning authority", ErrorCode.REQUIRED_FIELD_MISSING
            )
        self.origins["patient.cpr"] = found[1]
        return found[0]

    def _birth_date(self, number: str) -> None:
        written = self.value(self.profile.birth_date, "patient.birthDate")
        if written is None:
            return
        at = self.origins["patient.birthDate"]
        born = hl7_date(written, at)
        try:
            cpr = parse_cpr(number)
        except ValueError:
            return  # the contract refuses the number itself, at its place
        if cpr.birth_date.isoformat() != born:
            raise at.problem("not the birth date the CPR number gives")

    def hospital(self) -> dict[str, Any]:
        sor = self.required(self.profile.unit_sor, "hospital.sor")
        department = self.profile.departments.get(sor)
        if department is None:
            raise self.origins["hospital.sor"].problem(
                "not a department of mappings/departments.yaml", ErrorCode.TABLE_VALUE_NOT_FOUND
            )
        for key in ("ean", "name"):
            self.origins[f"hospital.{key}"] = self.origins["hospital.sor"]
        return {"sor": department.sor, "ean": department.ean, "name": department.name}

    # -- diagnoses and procedures -------------------------------------------------------------------------
    def diagnoses(self) -> list[dict[str, Any]]:
        profile = self.profile
        self.origins["diagnoses"] = At(profile.diagnosis_code.segment, 1, profile.diagnosis_code.field, 1)
        result = []
        for index, segment in enumerate(self.message.segments(profile.diagnosis_code.segment)):
            path = f"diagnoses[{index}]"
            code = self._need(segment, profile.diagnosis_code, f"{path}.code")
            system = self._in(segment, profile.diagnosis_system, f"{path}.system") or ""
            if system not in profile.diagnosis_systems:
                raise self.origins[f"{path}.system"].problem(
                    "a coding system the profile does not map", ErrorCode.TABLE_VALUE_NOT_FOUND
                )
            self.origins[path] = self.origins[f"{path}.code"]
            priority = self._in(segment, profile.diagnosis_priority, f"{path}.primary")
            kind = self._in(segment, profile.diagnosis_type, f"{path}.primary")
            item: dict[str, Any] = {"system": profile.diagnosis_systems[system], "code": code}
            if priority == "1" or kind in profile.primary_types:
                item["primary"] = True
            result.append(item)
        return result

    def procedures_and_surgery(self) -> dict[str, Any]:
        profile = self.profile
        procedures, sternotomies = [], []
        for index, segment in enumerate(self.message.segments(profile.procedure_code.segment)):
            path = f"procedures[{index}]"
            code = self._need(segment, profile.procedure_code, f"{path}.code")
            self.origins[path] = self.origins[f"{path}.code"]
            system = self._in(segment, profile.procedure_system, f"{path}.system") or ""
            if system not in profile.procedure_systems:
                raise self.origins[f"{path}.system"].problem("not an SKS code", ErrorCode.TABLE_VALUE_NOT_FOUND)
            item: dict[str, Any] = {"system": "SKS", "code": code}
            written = self._in(segment, profile.procedure_date, f"{path}.date")
            if written is not None:
                item["date"] = hl7_date(written, self.origins[f"{path}.date"])
            procedures.append(item)
            if code.startswith(profile.sternotomy_prefixes):
                sternotomies.append((item.get("date", ""), index))
        result: dict[str, Any] = {"procedures": procedures} if procedures else {}
        if sternotomies:
            when, index = min(sternotomies, key=lambda s: (s[0] == "", s[0]))
            result["surgery"] = {"sternotomy": True, **({"date": when} if when else {})}
            self.origins["surgery"] = self.origins["surgery.date"] = self.origins[f"procedures[{index}].date"]
        return result

    def _in(self, segment: Er7Segment, place: Place, path: str) -> str | None:
        at = self.origins[path] = At(segment.id, segment.sequence, place.field, place.component or 1)
        return _checked(segment.field(place.field).text(place.component or 1), at, path)

    def _need(self, segment: Er7Segment, place: Place, path: str) -> str:
        text = self._in(segment, place, path)
        if text is None:
            raise self.origins[path].problem("a required field is empty", ErrorCode.REQUIRED_FIELD_MISSING)
        return text

    # -- what ADT has no field for: OBX and the Z-segment -------------------------------------------------
    def _source(self, source: Source, path: str) -> tuple[list[str], At]:
        """Every value of a source (repetitions), and where it was read."""
        if source.place is not None:
            field, at = self._field(source.place)
            component = source.place.component or 1
            values = [field.text(component, r) for r in range(1, len(field.repetitions) + 1)]
        else:
            field, at = self._observation(source.observation or "")
            values = [field.text(1, r) for r in range(1, len(field.repetitions) + 1)]
        self.origins[path] = at
        for repetition, value in enumerate(values, 1):
            _checked(value, replace(at, repetition=repetition), path)
        return [v for v in values if v is not None], at

    def _observation(self, code: str) -> tuple[Er7Field, At]:
        found = [s for s in self.message.segments("OBX") if s.field(3).text(1) == code]
        if len(found) > 1:
            raise At("OBX", found[1].sequence, 3, 1).problem("the same observation twice", ErrorCode.SEGMENT_SEQUENCE)
        if not found:
            return Er7Field(), At("OBX", 1, 5, 1)
        return found[0].field(5), At("OBX", found[0].sequence, 5, 1)

    def require_rehabilitation(self, why: str) -> None:
        source = self.profile.rehabilitation.get("decision")
        if source is not None and not self._source(source, "referral.decision")[0]:
            raise self.origins["referral.decision"].problem(why, ErrorCode.REQUIRED_FIELD_MISSING)

    def rehabilitation(self) -> dict[str, Any]:
        sources = self.profile.rehabilitation
        referral: dict[str, Any] = {}
        top: dict[str, Any] = {"riskCriteria": []}
        self.origins["referral"] = At("ZRH", 1, 1)
        for key, source in sources.items():
            path = key if key in ("clinicianRiskGroup", "riskCriteria") else f"referral.{key}"
            values, at = self._source(source, path)
            target = top if "." not in path else referral
            if key in _LISTS:
                target[key] = values
            elif key == "note":
                if values:
                    target[key] = "\n".join(values)
            elif values:
                target[key] = self._scalar(key, values[0], at)
        return {**top, "referral": referral}

    def _scalar(self, key: str, text: str, at: At) -> Any:
        if key in _BOOLEANS:
            return hl7_yes_no(text, at)
        return self.profile.values.get(key, {}).get(text, text)

    def exercise_test(self) -> dict[str, Any]:
        test: dict[str, Any] = {}
        for key, source in self.profile.exercise_test.items():
            values, at = self._source(source, f"exerciseTest.{key}")
            if not values:
                continue
            if key == "performed":
                test[key] = hl7_yes_no(values[0], at)
            elif key == "date":
                test[key] = hl7_date(values[0], at)
            elif key == "conclusion":
                test[key] = "\n".join(values)
            else:
                test[key] = hl7_number(values[0], at)
        self.origins["exerciseTest"] = self.origins.get("exerciseTest.performed", At("OBX", 1, 5, 1))
        return test


def _checked(text: str | None, at: At, path: str) -> str | None:
    """A value read at `at` for contract `path`, refused when it holds characters its kind may not."""
    return None if text is None else hl7_text(text, at, free_text=path in FREE_TEXT)


def _segment_missing(place: Place) -> Exception:
    return At(place.segment, 1, place.field).problem("the segment is missing", ErrorCode.REQUIRED_FIELD_MISSING)
