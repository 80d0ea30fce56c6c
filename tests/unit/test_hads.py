"""HADS scoring, exhaustively: subscales, proration, non-computable, bands at every boundary, bad scores."""

from itertools import product

import pytest

from integration.domain.hads import ANXIETY_ITEMS, DEPRESSION_ITEMS, Band, from_sums, score_items


def items(anxiety: list[int | None], depression: list[int | None]) -> dict[int, int]:
    answers = dict(zip(ANXIETY_ITEMS, anxiety, strict=True)) | dict(zip(DEPRESSION_ITEMS, depression, strict=True))
    return {n: s for n, s in answers.items() if s is not None}


def test_odd_items_are_anxiety_even_items_depression() -> None:
    result = score_items(items([3, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 1]))
    assert (result.anxiety.score, result.depression.score) == (3, 1)


@pytest.mark.parametrize(
    ("answered", "expected"),
    [
        ([1, 1, 1, 1, 1, 1], 7),
        ([1, 1, 1, 1, 1, 2], 8),
        ([2, 2, 2, 1, 1, 1], 11),
        ([0, 0, 0, 0, 0, 3], 4),
        ([3, 3, 3, 3, 3, 3], 21),
        ([0, 0, 0, 0, 0, 0], 0),
    ],
)
def test_one_missing_item_is_prorated_with_the_rounded_mean(answered: list[int], expected: int) -> None:
    result = score_items(items([*answered, None], [0] * 7))
    assert result.anxiety == result.anxiety.__class__(expected, prorated=True)
    assert result.depression.prorated is False


def test_half_means_round_up() -> None:  # 9 over six items: mean 1.5 → 2
    assert score_items(items([2, 2, 2, 1, 1, 1, None], [0] * 7)).anxiety.score == 11


def test_two_missing_items_make_the_subscale_not_computable() -> None:
    result = score_items(items([1, 1, 1, 1, 1, None, None], [1] * 7))
    assert result.anxiety.score is None and result.anxiety.band is None and not result.anxiety.needs_attention
    assert result.depression.score == 7


@pytest.mark.parametrize(
    ("score", "band", "attention"),
    [
        (0, Band.NORMAL, False),
        (7, Band.NORMAL, False),
        (8, Band.BORDERLINE, True),
        (10, Band.BORDERLINE, True),
        (11, Band.ABNORMAL, True),
        (21, Band.ABNORMAL, True),
    ],
)
def test_bands_at_their_boundaries(score: int, band: Band, attention: bool) -> None:
    result = from_sums(score, 0)
    assert (result.anxiety.band, result.needs_attention) == (band, attention)


def test_every_complete_answer_set_of_one_subscale_sums_and_bands_consistently() -> None:
    for answers in product(range(4), repeat=7):
        result = score_items(items(list(answers), [0] * 7))
        assert result.anxiety.score == sum(answers)
        assert result.anxiety.band == (
            Band.NORMAL if sum(answers) <= 7 else Band.BORDERLINE if sum(answers) <= 10 else Band.ABNORMAL
        )


@pytest.mark.parametrize(("number", "score"), [(1, 4), (2, -1), (15, 1), (0, 1)])
def test_out_of_range_is_invalid(number: int, score: int) -> None:
    with pytest.raises(ValueError):
        score_items({number: score})


@pytest.mark.parametrize(("anxiety", "depression"), [(22, 0), (0, 22), (-1, 0)])
def test_sums_out_of_range_are_invalid(anxiety: int, depression: int) -> None:
    with pytest.raises(ValueError, match="outside 0 to 21"):
        from_sums(anxiety, depression)
