"""FHIR JSON as bytes, with decimals that keep their precision: the one encoder for what we emit.

FHIR R4 says a decimal's precision matters ("0.010 is regarded as different to 0.01, and the
original precision should be preserved": R4 Datatypes, `decimal`). A float cannot carry that, so
outbound FHIR content holds a measured value as a `decimal.Decimal`, which keeps its exponent
(`Decimal("85.00")`), and it is written here digit for digit in positional notation: never `85`,
never `8.500E+1`. A zero is written without a sign (no decimal value is negative zero). Everything
else is orjson's own output.

`loads` reads such bytes back (our stored outputs, for a resend) with every non-integer number as a
Decimal, so a resend is byte for byte the number first sent.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson


def decimal_text(value: Decimal) -> str:
    """'85.00' for Decimal('85.00'): every digit after the point kept, no exponent, no sign on a zero.

    Raises ValueError for NaN and infinities, which no FHIR decimal holds."""
    if not value.is_finite():
        raise ValueError("not a finite decimal")
    return format(value.copy_abs() if value.is_zero() else value, "f")


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(decimal_text(value).encode("ascii"))
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def dumps(value: Any, *, option: int = 0) -> bytes:
    """orjson.dumps, writing each Decimal with its precision (orjson.JSONEncodeError, a TypeError, on a NaN
    or infinite one, as on anything else that is not JSON)."""
    return orjson.dumps(value, default=_default, option=option)


def loads(raw: bytes | str) -> Any:
    """JSON → Python with every number that has a point or an exponent as a Decimal (ints stay ints), so
    that `dumps(loads(b))` writes each number as `b` had it (for the JSON we wrote ourselves)."""
    return json.loads(raw, parse_float=Decimal)
