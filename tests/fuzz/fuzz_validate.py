"""Fuzz target: validate (tests/fuzz/target.py runs it; corpus in tests/fuzz/corpus/validate/)."""

from tests.fuzz.target import run

if __name__ == "__main__":
    run("validate")
