"""structlog set-up. Every log line passes the CPR mask: no CPR number ever reaches log output."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

CPR_LIKE = re.compile(r"(?<!\d)[0-3]\d[01]\d{3}-?\d{4}(?!\d)")
CPR_MASK = "<cpr>"


def mask_cpr(text: str) -> str:
    return CPR_LIKE.sub(CPR_MASK, text)


def one_line(value: object, limit: int = 300) -> str:
    """Untrusted text as one safe line for a log, a header or a terminal: control and other
    non-printable characters escaped (so no forged lines), CPR numbers masked, cut to `limit`."""
    text = value.decode("utf-8", "backslashreplace") if isinstance(value, bytes | bytearray) else str(value)
    escaped = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    masked = mask_cpr(escaped)
    return masked if len(masked) <= limit else masked[: limit - 1] + "…"


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask_cpr(value)
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_masked(v) for v in value)
    return value


def mask_cpr_numbers(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: replace anything shaped like a CPR number, in every field and traceback."""
    return {key: _masked(value) for key, value in event_dict.items()}


def configure_logging(level: str = "INFO", stream: TextIO = sys.stderr, fmt: str | None = None) -> None:
    """JSON lines, or a console rendering when `fmt` is "console" (default: console on a terminal)."""
    fmt = fmt or ("console" if stream.isatty() else "json")
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False) if fmt == "console" else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            mask_cpr_numbers,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


def cpr_numbers_in(text: str) -> list[str]:
    """Everything in `text` that is a CPR number (shape and a real birth date), masked for reporting."""
    from integration.domain.cpr import parse_cpr

    found = []
    for match in CPR_LIKE.finditer(text):
        try:
            parse_cpr(match.group(0).replace("-", ""))
        except ValueError:
            continue
        found.append(match.group(0)[:4] + "…")
    return found
