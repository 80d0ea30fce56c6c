"""Fuzz target: a CareCommunication in FHIR XML (run by tests/fuzz/target.py; seeds in tests/fuzz/corpus/)."""

from tests.fuzz.target import run

if __name__ == "__main__":
    run("care_communication_xml")
