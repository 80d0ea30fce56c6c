"""Fuzz target: advice form (tests/fuzz/target.py runs it; corpus in tests/fuzz/corpus/advice_form/)."""

from tests.fuzz.target import run

if __name__ == "__main__":
    run("advice_form")
