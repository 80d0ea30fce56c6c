"""HADS (Hospital Anxiety and Depression Scale) scoring: numbers only, the wording is copyrighted.

Items 1–14 are scored 0–3; anxiety is the sum of the odd items, depression of the even ones (0–21
each). A subscale missing exactly one item is prorated: the missing item counts as the mean of the
six answered ones, rounded half up. Two or more missing: the subscale is not computable. Bands:
0–7 normal, 8–10 borderline, 11–21 abnormal; 8 or more on either subscale calls for the GP's attention.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from enum import Enum

ANXIETY_ITEMS = (1, 3, 5, 7, 9, 11, 13)
DEPRESSION_ITEMS = (2, 4, 6, 8, 10, 12, 14)
ATTENTION_FROM = 8


class Band(Enum):
    NORMAL = "normal"
    BORDERLINE = "borderline"
    ABNORMAL = "abnormal"


BANDS = ((7, Band.NORMAL), (10, Band.BORDERLINE), (21, Band.ABNORMAL))


@dataclass(frozen=True, slots=True)
class Subscale:
    score: int | None  # None: not computable (two or more items missing)
    prorated: bool = False

    @property
    def band(self) -> Band | None:
        if self.score is None:
            return None
        return next(band for upper, band in BANDS if self.score <= upper)

    @property
    def needs_attention(self) -> bool:
        return self.score is not None and self.score >= ATTENTION_FROM


@dataclass(frozen=True, slots=True)
class HadsResult:
    anxiety: Subscale
    depression: Subscale

    @property
    def needs_attention(self) -> bool:
        return self.anxiety.needs_attention or self.depression.needs_attention


def _subscale(items: Mapping[int, int], numbers: tuple[int, ...]) -> Subscale:
    answered = [items[n] for n in numbers if n in items]
    missing = len(numbers) - len(answered)
    if missing >= 2:
        return Subscale(None)
    if missing == 1:
        mean = Decimal(sum(answered)) / len(answered)
        return Subscale(sum(answered) + int(mean.quantize(Decimal(1), rounding=ROUND_HALF_UP)), prorated=True)
    return Subscale(sum(answered))


def score_items(items: Mapping[int, int]) -> HadsResult:
    """Score answered items (number → 0–3); raises ValueError for a number or score out of range."""
    for number, score in items.items():
        if not 1 <= number <= 14:
            raise ValueError(f"item {number} does not exist (items are 1 to 14)")
        if not 0 <= score <= 3:
            raise ValueError(f"item {number} has score {score}; item scores are 0 to 3")
    return HadsResult(_subscale(items, ANXIETY_ITEMS), _subscale(items, DEPRESSION_ITEMS))


def from_sums(anxiety: int, depression: int) -> HadsResult:
    """Subscale sums reported directly; raises ValueError outside 0–21."""
    for name, value in (("anxiety", anxiety), ("depression", depression)):
        if not 0 <= value <= 21:
            raise ValueError(f"{name} score {value} is outside 0 to 21")
    return HadsResult(Subscale(anxiety), Subscale(depression))
