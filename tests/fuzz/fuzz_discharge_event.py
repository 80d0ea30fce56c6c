"""Fuzz target: discharge event (tests/fuzz/target.py runs it; corpus in tests/fuzz/corpus/discharge_event/)."""

from tests.fuzz.target import run

if __name__ == "__main__":
    run("discharge_event")
