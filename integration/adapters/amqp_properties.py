"""The AMQP properties and headers of an inbound message, read as the untrusted input they are.

A publisher can write any property and header it likes. RabbitMQ vouches for three things only:
the `user-id` property (it refuses a message whose user-id is not the publishing connection's
user), the exchange a message was published to, and the redelivered flag. Everything else is
checked here before the processor relies on it, and a value that cannot be accepted becomes a
rejection naming the property — never a crash, never a forged line in a log or a listing.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from integration.log import one_line
from integration.topology import RESERVED_HEADERS

SHORT_STRING = 255  # AMQP 0-9-1 shortstr: the longest message-id, user-id or content-type
# Headers that only the broker or this service may set; a sender's copies are dropped.
_CONTROL = {"Cc", "Cf", "Cs", "Zl", "Zp"}


@dataclass(frozen=True, slots=True)
class InboundProperties:
    """What the processor may rely on. `problem` is (property, what is wrong) when the message must be refused."""

    message_id: str | None
    user_id: str | None
    content_type: str | None
    headers: Mapping[str, Any]
    problem: tuple[str, str] | None = None


def text_problem(value: object) -> str | None:
    """Why an AMQP short string cannot serve as an identifier, or None when it can."""
    if isinstance(value, bytes | bytearray):
        return "not UTF-8 text"
    if not isinstance(value, str):
        return f"not text ({type(value).__name__})"
    if len(value.encode("utf-8")) > SHORT_STRING:
        return f"longer than {SHORT_STRING} bytes"
    if any(unicodedata.category(c) in _CONTROL for c in value):
        return "holds control characters"
    if value != value.strip():
        return "has leading or trailing white space"
    return None


def sender_headers(headers: object) -> dict[str, Any]:
    """The sender's headers without those only the broker or we may set (a forged x-rehab-reason, x-death…)."""
    if not isinstance(headers, Mapping):
        return {}
    return {k: v for k, v in headers.items() if isinstance(k, str) and not k.startswith(RESERVED_HEADERS)}


def read_properties(
    message_id: object,
    user_id: object,
    content_type: object,
    headers: object,
    unreadable: tuple[str, str] | None = None,
) -> InboundProperties:
    """Check an inbound message's properties. The first problem found is kept; the others are then moot.

    Rules: a message-id, when set, is an identifier (UTF-8 text, no control characters, at most 255
    bytes); the user-id is required (senders must set it; RabbitMQ checks it against the connection);
    a content-type that is not clean text is ignored (it is only a label on a dead letter).
    `unreadable` is (property, why) when the adapter could not decode a property at all (a header table
    pika cannot read): the message is refused for it, whatever else it holds.
    """
    problem: tuple[str, str] | None = None
    if unreadable is not None:
        part, reason = unreadable
        problem = (part, f"{reason}; the message is refused whole (the dead letter keeps its body, not its {part})")
    clean_id: str | None = None
    if message_id not in (None, ""):
        if why := text_problem(message_id):
            claimed = one_line(message_id, 80)
            problem = (
                "message-id",
                f"{why} ('{claimed}'): a message-id must be printable text of at most {SHORT_STRING} bytes",
            )
        else:
            clean_id = str(message_id)
    clean_user: str | None = None
    if user_id in (None, ""):
        problem = problem or (
            "user-id",
            "missing: senders must set the AMQP user-id property to their broker user (RabbitMQ verifies it)",
        )
    elif why := text_problem(user_id):
        problem = problem or ("user-id", why)
    else:
        clean_user = str(user_id)
    clean_type = content_type if isinstance(content_type, str) and text_problem(content_type) is None else None
    return InboundProperties(clean_id, clean_user, clean_type, sender_headers(headers), problem)
