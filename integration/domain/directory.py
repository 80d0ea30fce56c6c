"""Who can receive what: the municipalities and hospital departments from `mappings/`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from integration.domain.records import Organisation
from integration.errors import ConfigurationError, InvalidInput


def gp_clinic(clinics: Mapping[str, Organisation], ydernummer: str) -> Organisation:
    """The GP clinic with this ydernummer as `mappings/gp-clinics.yaml` maps it (its SOR and EAN: a MedCom
    receiver or sender needs both). Raises ConfigurationError naming the ydernummer when it is not mapped: the
    message is right, our mappings are not."""
    clinic = clinics.get(ydernummer)
    if clinic is None:
        raise ConfigurationError(f"GP clinic with ydernummer {ydernummer} is not in mappings/gp-clinics.yaml")
    return clinic


@dataclass(frozen=True, slots=True)
class Municipality:
    code: str
    name: str
    region: str
    endpoint: Organisation | None
    placeholder: bool = False


@dataclass(frozen=True, slots=True)
class Department:
    organisation: Organisation
    hospital: str
    rehabilitation_unit: str | None = None
    placeholder: bool = False


@dataclass(frozen=True, slots=True)
class Directory:
    municipalities: Mapping[str, Municipality]
    departments: Mapping[str, Department]

    def municipality(self, code: str, field: str = "patient.municipalityCode") -> Municipality:
        try:
            return self.municipalities[code]
        except KeyError:
            raise InvalidInput(field, f"unknown municipality code {code!r}") from None

    def municipal_receiver(self, code: str) -> Organisation:
        """The municipality's receiving unit, or a configuration error naming the code."""
        municipality = self.municipality(code)
        if municipality.endpoint is None:
            raise ConfigurationError(
                f"municipality {code} ({municipality.name}) has no receiving endpoint in mappings/municipalities.yaml"
            )
        return municipality.endpoint

    def rehabilitation_unit(self, referrer: Organisation) -> Organisation:
        """The hospital unit that performs specialised rehabilitation for this referrer."""
        department = self.departments.get(referrer.sor)
        if department is None or department.rehabilitation_unit is None:
            return referrer
        unit = self.departments.get(department.rehabilitation_unit)
        if unit is None:
            raise ConfigurationError(
                f"department {referrer.sor} names rehabilitation unit {department.rehabilitation_unit}, "
                "which mappings/departments.yaml does not define"
            )
        return unit.organisation
