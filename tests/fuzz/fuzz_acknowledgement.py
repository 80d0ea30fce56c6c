"""Fuzz target: acknowledgement (tests/fuzz/target.py runs it; corpus in tests/fuzz/corpus/acknowledgement/)."""

from tests.fuzz.target import run

if __name__ == "__main__":
    run("acknowledgement")
