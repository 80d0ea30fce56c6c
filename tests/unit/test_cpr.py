from datetime import date

import pytest

from integration.domain.cpr import birth_century, parse_cpr

# MedCom's national test CPR numbers all fail modulus 11; they must be accepted.
VALID = [
    ("2512489996", date(1948, 12, 25)),
    ("1502779995", date(1977, 2, 15)),
    ("0211223989", date(1922, 11, 2)),  # 7th digit 3 → 1900s
    ("2311143995", date(1914, 11, 23)),
    ("0212159995", date(2015, 12, 2)),  # 7th digit 9, year ≤ 36 → 2000s
    ("1310169995", date(2016, 10, 13)),
    ("0101404001", date(1940, 1, 1)),  # 7th digit 4, year 40 > 36 → 1900s
    ("0101575001", date(2057, 1, 1)),  # 7th digit 5, year ≤ 57 → 2000s
    ("0101585001", date(1858, 1, 1)),  # 7th digit 5, year ≥ 58 → 1800s
]


@pytest.mark.parametrize(
    ("seventh", "year", "century"),
    [
        (0, 5, 1900),
        (3, 99, 1900),
        (4, 36, 2000),
        (4, 37, 1900),
        (9, 0, 2000),
        (9, 99, 1900),
        (5, 57, 2000),
        (5, 58, 1800),
        (8, 0, 2000),
        (8, 99, 1800),
    ],
)
def test_century_rule(seventh: int, year: int, century: int) -> None:
    assert birth_century(seventh, year) == century


@pytest.mark.parametrize(("value", "born"), VALID)
def test_valid_cpr_numbers_parse_to_their_birth_date(value: str, born: date) -> None:
    assert parse_cpr(value).birth_date == born


def test_modulus11_failure_is_not_a_rejection() -> None:
    cpr = parse_cpr("2512489996")
    assert cpr.passes_modulus11 is False


def test_modulus11_pass_is_reported() -> None:
    assert parse_cpr("0707614285").passes_modulus11 is True


@pytest.mark.parametrize(
    "value",
    [
        "3213489996",  # day 32
        "0013489996",  # day 0
        "2513489996",  # month 13
        "3002489996",  # 30 February
        "2902010001",  # 29 February 1901, not a leap year (7th digit 0 → 1900s)
    ],
)
def test_impossible_dates_are_rejected(value: str) -> None:
    with pytest.raises(ValueError, match="not a real date"):
        parse_cpr(value)


def test_leap_day_in_leap_year_is_accepted() -> None:
    assert parse_cpr("2902044001").birth_date == date(2004, 2, 29)


def test_leap_day_in_1900_is_rejected() -> None:
    with pytest.raises(ValueError, match="not a real date"):
        parse_cpr("2902000001")


@pytest.mark.parametrize("value", ["251248999", "25124899961", "251248-9996", "25124899x6", ""])
def test_wrong_shape_is_rejected(value: str) -> None:
    with pytest.raises(ValueError, match="10 digits"):
        parse_cpr(value)


def test_error_and_repr_never_show_the_number() -> None:
    with pytest.raises(ValueError) as caught:
        parse_cpr("3213489996")
    assert "3213489996" not in str(caught.value)
    assert "2512489996" not in repr(parse_cpr("2512489996"))
