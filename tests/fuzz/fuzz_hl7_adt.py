"""Fuzz target: HL7 v2 ADT in ER7 (tests/fuzz/target.py runs it; corpus in tests/fuzz/corpus/hl7_adt/)."""

from tests.fuzz.target import run

if __name__ == "__main__":
    run("hl7_adt")
