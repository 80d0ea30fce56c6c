"""structlog set-up. Every log line passes the CPR mask: no CPR number ever reaches log output."""

from __future__ import annotations

import logging
import re
import sys
import unicodedata
from collections.abc import Mapping, MutableMapping
from decimal import Decimal
from typing import Any, TextIO

import structlog

# DDMMYY then SSSS, written together, with a dash, or with one space (also a no-break space, a tab or a
# Unicode dash); anywhere in a longer text, but not inside a longer run of digits.
CPR_SEPARATORS = "- \t\u00a0\u2010\u2011\u2012\u2013\u2014\u2212"
CPR_LIKE = re.compile(rf"(?<!\d)[0-3]\d[01]\d{{3}}[{CPR_SEPARATORS}]?\d{{4}}(?!\d)")
CPR_MASK = "<cpr>"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def ascii_digits(text: str) -> str:
    """`text` with every decimal digit of any script written as its ASCII digit: the same length, so that a
    match in it is a match at the same place in `text`."""
    if text.isascii():
        return text
    return "".join(str(unicodedata.decimal(c)) if c.isdecimal() else c for c in text)


def mask_cpr(text: str) -> str:
    """`text` with everything shaped like a CPR number replaced by `<cpr>`: the one mask for every output.
    Digits of any script count (a CPR number in full-width or Arabic-Indic digits is one too)."""
    if text.isascii():
        return CPR_LIKE.sub(CPR_MASK, text)
    out, end = [], 0
    for match in CPR_LIKE.finditer(ascii_digits(text)):
        out += [text[end : match.start()], CPR_MASK]
        end = match.end()
    return "".join([*out, text[end:]])


def masked(value: Any) -> Any:
    """`value` with every CPR-shaped part masked, through dicts (keys too), lists and tuples: text as text,
    bytes as text (decoded, undecodable bytes escaped), a number (int, float, Decimal: AMQP carries all three)
    that holds one as `<cpr>`; other values (times, booleans, None) as they are."""
    if isinstance(value, str):
        return mask_cpr(value)
    if isinstance(value, bytes | bytearray):
        text = bytes(value).decode("utf-8", "backslashreplace")
        return mask_cpr(text) if CPR_LIKE.search(text) else value
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return CPR_MASK if CPR_LIKE.search(str(value)) else value
    if isinstance(value, Mapping):
        return {masked(k): masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(masked(v) for v in value)
    return value


def masked_headers(headers: object) -> dict[str, Any]:
    """AMQP headers fit to copy onto a message we publish (a dead letter, a replay): every CPR-shaped value
    or name masked (`masked`); anything but a table is no headers."""
    if not isinstance(headers, Mapping):
        return {}
    return {str(masked(k)): masked(v) for k, v in headers.items()}


def one_line(value: object, limit: int = 300) -> str:
    """Untrusted text as one safe line for a log, a header or a terminal: control and other
    non-printable characters escaped (so no forged lines), CPR numbers masked, cut to `limit`."""
    text = value.decode("utf-8", "backslashreplace") if isinstance(value, bytes | bytearray) else str(value)
    escaped = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    safe = mask_cpr(escaped)
    return safe if len(safe) <= limit else safe[: limit - 1] + "…"


def mask_cpr_numbers(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: replace anything shaped like a CPR number, in every field and traceback."""
    return {key: masked(value) for key, value in event_dict.items()}


class _ToStructlog(logging.Handler):
    """Lines that libraries log through the standard library (pika, psycopg, the HTTP server) go through
    the same processors: the same format (JSON or console) and the same CPR mask as our own lines."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            event = record.getMessage()
        except Exception:  # a library's bad format arguments: its text as given, never a crash of the log
            event = str(record.msg)
        fields: dict[str, Any] = {"logger": record.name}
        if record.exc_info:
            fields["exc_info"] = record.exc_info
        structlog.get_logger(record.name).log(record.levelno, event, **fields)


def _route_standard_logging(level: str) -> None:
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _ToStructlog)]:
        root.removeHandler(handler)
    root.addHandler(_ToStructlog())
    # pika reports each failed connection at ERROR, with tracebacks, from five loggers; our adapter
    # (integration.adapters.rabbitmq) translates the same failure into the one line that names it.
    logging.getLogger("pika").propagate = False
    # Libraries speak at INFO of what is routine for them (pika: every connection); only their warnings count.
    root.setLevel(max(logging.WARNING, logging.getLevelName(level.upper())))


def configure_logging(level: str = "INFO", stream: TextIO = sys.stderr, fmt: str | None = None) -> None:
    """JSON lines, or a console rendering when `fmt` is "console" (default: console on a terminal). Every
    line passes the CPR mask, tracebacks included (`format_exc_info` renders them before the mask); the
    standard library's log records (from libraries) are rendered the same way, from WARNING up."""
    if level.upper() not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}")
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
        # one write per line (WriteLogger: the line and its newline together; print() writes them apart): the
        # workers of `run --processes` share one stderr, and two lines must never interleave
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    _route_standard_logging(level)


def cpr_numbers_in(text: str) -> list[str]:
    """Everything in `text` that is a CPR number (shape and a real birth date), masked for reporting."""
    from integration.domain.cpr import parse_cpr

    found = []
    for match in CPR_LIKE.finditer(ascii_digits(text)):
        try:
            parse_cpr(re.sub(r"\D", "", match.group(0)))
        except ValueError:
            continue
        found.append(match.group(0)[:4] + "…")
    return found
