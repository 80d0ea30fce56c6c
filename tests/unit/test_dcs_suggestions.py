"""DCS criteria suggested from codes (integration/domain/dcs_suggestions.py) with the shipped table
(mappings/dcs-suggestions.yaml): each rule fires on its code in ICD-10 and SKS notation, and nothing else does."""

from __future__ import annotations

import pytest

from integration.config import PROJECT_ROOT
from integration.domain.dcs_suggestions import (
    CodeKind,
    Suggestion,
    SuggestionRule,
    compare,
    diagnosis_key,
    rule_prefix,
    suggest,
)
from integration.domain.records import Diagnosis, Procedure
from integration.domain.risk import DCS_CRITERIA
from integration.mappings import load_mappings

TABLE = load_mappings(PROJECT_ROOT / "mappings").dcs_suggestions

# (ICD-10 code, its SKS form, the criterion the table suggests for it): one code under every diagnosis prefix.
DIAGNOSES = [
    ("I50.9", "DI509", "heart-failure"),
    ("I50.1", "DI501A", "heart-failure"),  # SKS adds letters after the ICD-10 code
    ("I11.0", "DI110", "heart-failure"),
    ("I13.0", "DI130", "heart-failure"),
    ("I13.2", "DI132", "heart-failure"),
    ("I42.0", "DI420", "heart-failure"),
    ("I46.9", "DI469", "icd-or-arrhythmia-risk"),
    ("I47.2", "DI472", "icd-or-arrhythmia-risk"),
    ("I49.0", "DI490", "icd-or-arrhythmia-risk"),
    ("I48.9", "DI489", "uncontrolled-arrhythmia"),
    ("T81.4", "DT814", "postoperative-complications"),
    ("T82.0", "DT820", "postoperative-complications"),
    ("I97.0", "DI970", "postoperative-complications"),
    ("I97.1", "DI971", "postoperative-complications"),
    ("N18.4", "DN184", "significant-comorbidity"),
    ("N18.5", "DN185", "significant-comorbidity"),
    ("J44.1", "DJ441", "significant-comorbidity"),
    ("E10.2", "DE102", "significant-comorbidity"),
    ("E10.3", "DE103", "significant-comorbidity"),
    ("E10.4", "DE104", "significant-comorbidity"),
    ("E10.5", "DE105", "significant-comorbidity"),
    ("E10.7", "DE107", "significant-comorbidity"),
    ("E11.2", "DE112", "significant-comorbidity"),
    ("E11.3", "DE113", "significant-comorbidity"),
    ("E11.4", "DE114", "significant-comorbidity"),
    ("E11.5", "DE115", "significant-comorbidity"),
    ("E11.7", "DE117", "significant-comorbidity"),
]
# Codes next to the rules that must not match: the prefix is not a substring match, and subdivisions count.
NOT_SUGGESTED = [
    ("I21.4", "DI214"),  # myocardial infarction: no criterion by itself
    ("I11.9", "DI119"),  # hypertensive heart disease WITHOUT heart failure
    ("I13.1", "DI131"),  # ... with renal failure only
    ("I47.1", "DI471"),  # supraventricular tachycardia
    ("I49.5", "DI495"),  # sick sinus syndrome
    ("N18.3", "DN183"),  # CKD stage 3
    ("E11.9", "DE119"),  # type 2 diabetes without complications
    ("I97.2", "DI972"),  # postmastectomy lymphoedema: an I97 code, not a cardiac one
    ("Z95.0", "DZ950"),  # a cardiac device, pacemaker or ICD: not told apart
]


def _icd(code: str) -> Diagnosis:
    return Diagnosis("ICD-10", code, False)


def _sks(code: str) -> Diagnosis:
    return Diagnosis("SKS", code, False)


@pytest.mark.parametrize(("icd10", "sks", "criterion"), DIAGNOSES, ids=[row[0] for row in DIAGNOSES])
def test_each_diagnosis_rule_fires_in_both_notations(icd10: str, sks: str, criterion: str) -> None:
    assert suggest([_icd(icd10)], [], TABLE) == (Suggestion(criterion, (icd10,)),)
    assert suggest([_sks(sks)], [], TABLE) == (Suggestion(criterion, (sks,)),)
    assert suggest([_icd(icd10.replace(".", ""))], [], TABLE) == (Suggestion(criterion, (icd10.replace(".", ""),)),)


@pytest.mark.parametrize(("icd10", "sks"), NOT_SUGGESTED, ids=[row[0] for row in NOT_SUGGESTED])
def test_codes_beside_the_rules_suggest_nothing(icd10: str, sks: str) -> None:
    assert suggest([_icd(icd10), _sks(sks)], [], TABLE) == ()


def test_every_diagnosis_prefix_of_the_table_is_tested() -> None:
    tested = {diagnosis_key(_icd(icd10)) for icd10, _, _ in DIAGNOSES}
    prefixes = {r.prefix for r in TABLE if r.kind is CodeKind.DIAGNOSIS}
    assert sorted(p for p in prefixes if not any(code.startswith(p) for code in tested)) == []


def test_an_icd_implant_procedure_suggests_the_icd_criterion() -> None:
    assert suggest([], [Procedure("BFCB00")], TABLE) == (Suggestion("icd-or-arrhythmia-risk", ("BFCB00",)),)
    assert suggest([], [Procedure("bfcb0")], TABLE) == (Suggestion("icd-or-arrhythmia-risk", ("bfcb0",)),)


def test_other_procedures_suggest_nothing() -> None:
    # a pacemaker (BFCA0), a PCI (KFNG05), a CABG (KFNA00): no criterion by themselves
    assert suggest([], [Procedure("BFCA00"), Procedure("KFNG05"), Procedure("KFNA00")], TABLE) == ()


def test_an_sks_procedure_never_matches_a_diagnosis_rule_nor_the_reverse() -> None:
    assert suggest([], [Procedure("DI500")], TABLE) == ()
    assert suggest([_sks("DBFCB0")], [], TABLE) == ()


def test_the_icd10_d_chapter_is_not_read_as_sks() -> None:
    rules = (SuggestionRule(CodeKind.DIAGNOSIS, "D50", "significant-comorbidity"),)
    assert suggest([_icd("D50.9")], [], rules) == (Suggestion("significant-comorbidity", ("D50.9",)),)
    assert suggest([_sks("DD509")], [], rules) == (Suggestion("significant-comorbidity", ("DD509",)),)
    assert suggest([_sks("D509")], [], rules) == ()  # SKS D509 would be ICD-10 "509": not anaemia


def test_codes_are_grouped_by_criterion_once_each_in_the_events_order() -> None:
    found = suggest([_sks("DI489"), _icd("I50.9"), _sks("DI110"), _icd("I50.9")], [Procedure("BFCB00")], TABLE)
    assert found == (
        Suggestion("heart-failure", ("I50.9", "DI110")),
        Suggestion("icd-or-arrhythmia-risk", ("BFCB00",)),
        Suggestion("uncontrolled-arrhythmia", ("DI489",)),
    )


def test_incomplete_revascularisation_has_no_rule() -> None:
    assert "incomplete-revascularisation" not in {r.criterion for r in TABLE}
    assert {r.criterion for r in TABLE} == set(DCS_CRITERIA) - {"incomplete-revascularisation"}


def test_the_comparison_says_what_the_clinician_did_not_tick_and_what_no_code_supports() -> None:
    found = suggest([_icd("I50.9"), _icd("I48.0")], [], TABLE)
    seen = compare(found, ("heart-failure", "incomplete-revascularisation"))
    assert seen.not_ticked == ("uncontrolled-arrhythmia",)
    assert seen.without_code == ("incomplete-revascularisation",)
    assert seen.clinician == ("heart-failure", "incomplete-revascularisation")
    everything = compare(found, ("heart-failure", "uncontrolled-arrhythmia"))
    assert (everything.not_ticked, everything.without_code) == ((), ())


@pytest.mark.parametrize(
    ("kind", "written", "prefix"),
    [
        (CodeKind.DIAGNOSIS, "I50", "I50"),
        (CodeKind.DIAGNOSIS, "i13.0", "I130"),
        (CodeKind.DIAGNOSIS, "DI50", None),  # SKS form: refused in the table
        (CodeKind.DIAGNOSIS, "I5", None),
        (CodeKind.DIAGNOSIS, "", None),
        (CodeKind.PROCEDURE, "BFCB", "BFCB"),
        (CodeKind.PROCEDURE, "B", None),
        (CodeKind.PROCEDURE, "BF CB", None),
    ],
)
def test_table_prefixes_are_normalised_or_refused(kind: CodeKind, written: str, prefix: str | None) -> None:
    assert rule_prefix(kind, written) == prefix
