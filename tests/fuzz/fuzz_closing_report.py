"""Fuzz target: closing report (tests/fuzz/target.py runs it; corpus in tests/fuzz/corpus/closing_report/)."""

from tests.fuzz.target import run

if __name__ == "__main__":
    run("closing_report")
