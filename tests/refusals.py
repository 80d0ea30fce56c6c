"""What the dispatch refuses a message with, however it says so: a Rejected raised (its sender gets no
answer) or a Refusal returned (with the answer its sender gets, e.g. a MedCom fatal-error ack)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from integration.errors import Rejected
from integration.flows.dispatch import Pipeline, transform
from integration.flows.results import FlowResult, Refusal


def refusal(raw: bytes, pipeline: Pipeline, now: datetime, **kwargs: Any) -> tuple[Rejected, FlowResult | None]:
    """The rejection of `raw` and the answer that goes with it (None when it was raised without one); a
    message that is processed fails the test, and so does any other exception."""
    try:
        result = transform(raw, pipeline, now, **kwargs)
    except Rejected as rejection:
        return rejection, None
    assert isinstance(result, Refusal), "expected a refusal, the message was processed"
    return result.rejection, result.answer


def answered(raw: bytes, pipeline: Pipeline, now: datetime, **kwargs: Any) -> Refusal:
    """The Refusal of `raw`, which must come with an answer to its sender."""
    rejection, answer = refusal(raw, pipeline, now, **kwargs)
    assert answer is not None, "a MedCom message is answered even when refused"
    return Refusal(rejection, answer)
