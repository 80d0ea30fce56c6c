"""The RabbitMQ topology as data: one description drives `integration topology apply` and the
importable `deploy/rabbitmq/definitions.json` (a test keeps the two identical).

Per flow: an inbound quorum queue fed by `rehab.inbound` under the flow's name, with a delivery
limit and dead-lettering (at-least-once) to `rehab.dlx`, where the flow's dead-letter queue
waits. Outbound topic exchanges park unroutable messages in `rehab.unrouted` (alternate
exchange), so a confirmed publish is never silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

VHOST = "hjerterehab"
INBOUND_EXCHANGE = "rehab.inbound"
DEAD_LETTER_EXCHANGE = "rehab.dlx"
UNROUTED_EXCHANGE = "rehab.unrouted"
UNROUTED_QUEUE = "rehab.unrouted"
ACK_EXCHANGE = "rehab.ack"  # our MedCom acks, routing key ack.<the acknowledged sender's SOR>
# The broker's own limit is only a backstop against a message that kills the consumer process itself:
# every return of a message (a consumer crash, a lost connection) counts toward it, so it is set far
# above anything an outage produces. Our flow's attempts are counted in the audit store
# (`processor.FLOW_ATTEMPTS`), never from a header.
DELIVERY_LIMIT = 50
MAX_LENGTH = 100_000


@dataclass(frozen=True, slots=True)
class Flow:
    name: str  # also the routing key on rehab.inbound and rehab.dlx
    queue: str
    outbound_exchange: str

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.queue}.dlq"


FLOWS: tuple[Flow, ...] = (
    Flow("discharge", "rehab.discharge-events", "rehab.referral"),
    Flow("hotline", "rehab.hotline-requests", "rehab.hotline"),
    Flow("closing", "rehab.closing-reports", "rehab.status"),
    Flow("acknowledgement", "rehab.acknowledgements", ACK_EXCHANGE),  # acks for our messages; never answered
)
FLOWS_BY_NAME = {f.name: f for f in FLOWS}


@dataclass(frozen=True, slots=True)
class Exchange:
    name: str
    type: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Queue:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Binding:
    exchange: str
    queue: str
    routing_key: str


def inbound_queue_arguments(flow: Flow) -> dict[str, Any]:
    # RabbitMQ 3.10 has no default delivery limit for quorum queues: every limit is explicit.
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": DELIVERY_LIMIT,
        "x-max-length": MAX_LENGTH,
        "x-overflow": "reject-publish",
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        "x-dead-letter-routing-key": flow.name,
        "x-dead-letter-strategy": "at-least-once",
    }


def exchanges() -> list[Exchange]:
    outbound = sorted({f.outbound_exchange for f in FLOWS} | {ACK_EXCHANGE})
    return [
        Exchange(INBOUND_EXCHANGE, "direct"),
        Exchange(DEAD_LETTER_EXCHANGE, "direct"),
        Exchange(UNROUTED_EXCHANGE, "fanout"),
        *(Exchange(name, "topic", {"alternate-exchange": UNROUTED_EXCHANGE}) for name in outbound),
    ]


def queues() -> list[Queue]:
    result = []
    for flow in FLOWS:
        result.append(Queue(flow.queue, inbound_queue_arguments(flow)))
        result.append(Queue(flow.dead_letter_queue, {"x-queue-type": "quorum"}))
    result.append(Queue(UNROUTED_QUEUE, {"x-queue-type": "quorum"}))
    return result


def bindings() -> list[Binding]:
    result = []
    for flow in FLOWS:
        result.append(Binding(INBOUND_EXCHANGE, flow.queue, flow.name))
        result.append(Binding(DEAD_LETTER_EXCHANGE, flow.dead_letter_queue, flow.name))
    result.append(Binding(UNROUTED_EXCHANGE, UNROUTED_QUEUE, ""))
    return result


# Users and their least privileges (configure, write, read regexes), for the definitions file.
# `guest` is for local development only and is not part of the deployed definitions.
USERS: dict[str, tuple[str, str, str, str]] = {
    # name: (tags, configure, write, read)
    "rehab-admin": ("administrator", ".*", ".*", ".*"),
    "rehab-service": ("", "", r"^rehab\.(referral|hotline|status|ack|dlx|inbound)$", r"^rehab\.[a-z-]+(\.dlq)?$"),
    "rehab-hospital": ("", "", r"^rehab\.inbound$", ""),
    "rehab-municipality": ("", "", r"^rehab\.inbound$", ""),
}


def definitions(password_hashes: dict[str, str]) -> dict[str, Any]:
    """The topology in RabbitMQ's definitions format (for `rabbitmqctl import_definitions`)."""
    return {
        "rabbit_version": "3.10.8",
        "vhosts": [{"name": VHOST}],
        "users": [
            {
                "name": name,
                "password_hash": password_hashes[name],
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": tags,
            }
            for name, (tags, *_) in USERS.items()
        ],
        "permissions": [
            {"user": name, "vhost": VHOST, "configure": c, "write": w, "read": r}
            for name, (_, c, w, r) in USERS.items()
        ],
        "policies": [
            {
                "vhost": VHOST,
                "name": "rehab-inbound-limits",
                "pattern": r"^rehab\.(discharge-events|hotline-requests|closing-reports|acknowledgements)$",
                "apply-to": "queues",
                "priority": 1,
                "definition": {
                    "max-length": MAX_LENGTH,
                    "overflow": "reject-publish",
                    "delivery-limit": DELIVERY_LIMIT,
                },
            }
        ],
        "exchanges": [
            {
                "name": e.name,
                "vhost": VHOST,
                "type": e.type,
                "durable": True,
                "auto_delete": False,
                "internal": False,
                "arguments": e.arguments,
            }
            for e in exchanges()
        ],
        "queues": [
            {"name": q.name, "vhost": VHOST, "durable": True, "auto_delete": False, "arguments": q.arguments}
            for q in queues()
        ],
        "bindings": [
            {
                "source": b.exchange,
                "vhost": VHOST,
                "destination": b.queue,
                "destination_type": "queue",
                "routing_key": b.routing_key,
                "arguments": {},
            }
            for b in bindings()
        ],
    }
