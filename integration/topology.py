"""The RabbitMQ topology as data: one description drives `integration topology apply` and the
importable `deploy/rabbitmq/definitions.json` (a test keeps the two identical).

Inbound, per kind of sender (decision 14): each kind has an exchange of its own, `rehab.inbound.<kind>`,
that only its broker user may write, bound under the flow's name to exactly the flow queues the
agreement lets that kind send. A kind it may not send is routed by the exchange's alternate exchange
through a gate that refuses it (the publisher's confirm is negative) and dead-letters it into
`rehab.inbound.refused`, where an operator finds it with the sender's verified user-id. Replays
(`integration dlq replay`) come through `rehab.replay`, which only the service and the administrator
may write.

Per flow: an inbound quorum queue with a delivery limit and dead-lettering (at-least-once) to
`rehab.dlx`, where the flow's dead-letter queue waits. Outbound, every route a message of ours takes (a
topic exchange and its routing-key template, `ROUTES`) is named here and nowhere else; the outbound
exchanges park unroutable messages in `rehab.unrouted` (alternate exchange), so a confirmed publish is
never silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

VHOST = "hjerterehab"
DEAD_LETTER_EXCHANGE = "rehab.dlx"
REPLAY_EXCHANGE = "rehab.replay"  # `integration dlq replay` only: the service and the administrator may write it
REFUSED_EXCHANGE = "rehab.inbound.refused"  # the alternate exchange of every sender's exchange
REFUSED_GATE = "rehab.inbound.refused.gate"  # takes nothing: refuses (nack) and dead-letters what reaches it
# The gate's dead-letter exchange: a fanout of its own, so that the refused message keeps the routing key
# its sender gave it (rehab.dlx routes by flow name and would put it among the flow's dead letters).
REFUSED_DEAD_LETTER_EXCHANGE = "rehab.inbound.refused.dlx"
REFUSED_QUEUE = "rehab.inbound.refused"  # where refused messages wait for an operator (`integration dlq refused`)
# Exchanges of earlier versions that `integration topology apply` deletes (decision 14: one per sender now).
RETIRED_EXCHANGES = ("rehab.inbound",)
UNROUTED_EXCHANGE = "rehab.unrouted"
UNROUTED_QUEUE = "rehab.unrouted"
REFERRAL_EXCHANGE = "rehab.referral"
HOTLINE_EXCHANGE = "rehab.hotline"
STATUS_EXCHANGE = "rehab.status"
ACK_EXCHANGE = "rehab.ack"
# The broker's own limit is only a backstop against a message that kills the consumer process itself:
# every return of a message (a consumer crash, a lost connection) counts toward it, so it is set far
# above anything an outage produces. Our flow's attempts are counted in the audit store
# (`processor.FLOW_ATTEMPTS`), never from a header.
DELIVERY_LIMIT = 50
MAX_LENGTH = 100_000


@dataclass(frozen=True, slots=True)
class OutboundRoute:
    """Where one kind of our outbound messages goes: a topic exchange, and the routing key as a template whose
    `{fields}` the flow fills in (`str.format`), e.g. `referral.municipality.{code}` → `referral.municipality.851`."""

    exchange: str
    key: str

    def routing_key(self, **fields: str) -> str:
        return self.key.format(**fields)


# A referral (MedCom HospitalReferral) to the municipality's unit by kommunekode, or to the hospital unit
# (by SOR) that performs specialised rehabilitation.
REFERRAL_TO_MUNICIPALITY = OutboundRoute(REFERRAL_EXCHANGE, "referral.municipality.{code}")
REFERRAL_TO_HOSPITAL = OutboundRoute(REFERRAL_EXCHANGE, "referral.hospital.{sor}")
# A routed advice request, by the hotline's decision: on-call.<SOR>, department.<SOR> or unmatched (triage).
HOTLINE_REQUEST = OutboundRoute(HOTLINE_EXCHANGE, "hotline.{queue}")
HOTLINE_REPLY = OutboundRoute(HOTLINE_EXCHANGE, "hotline.reply.{sender}")  # to the requester: SOR or ydernummer
# After a municipality's closing report: the status to the GP (by ydernummer), the HADS notice to the
# referring department (by SOR) for DHRD.
STATUS_TO_GP = OutboundRoute(STATUS_EXCHANGE, "gp.status.{ydernummer}")
STATUS_TO_DHRD = OutboundRoute(STATUS_EXCHANGE, "hospital.dhrd.{sor}")
ACKNOWLEDGEMENT = OutboundRoute(ACK_EXCHANGE, "ack.{sor}")  # our MedCom acks, to the acknowledged sender's SOR
ROUTES: tuple[OutboundRoute, ...] = (
    REFERRAL_TO_MUNICIPALITY,
    REFERRAL_TO_HOSPITAL,
    HOTLINE_REQUEST,
    HOTLINE_REPLY,
    STATUS_TO_GP,
    STATUS_TO_DHRD,
    ACKNOWLEDGEMENT,
)


@dataclass(frozen=True, slots=True)
class Flow:
    name: str  # also the routing key on the senders' exchanges, rehab.replay and rehab.dlx
    queue: str
    # The routes its messages take; a MedCom message of any flow but acknowledgement may also be answered
    # with an ack (`ACKNOWLEDGEMENT`).
    routes: tuple[OutboundRoute, ...]

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.queue}.dlq"


FLOWS: tuple[Flow, ...] = (
    # A hospital's events (discharge, visitation, step-down) share one queue, so that a patient's events are
    # taken in the order sent; the hospital's follow-up plan (opfølgningsplan) to the GP goes out from it too.
    Flow("discharge", "rehab.discharge-events", (REFERRAL_TO_MUNICIPALITY, REFERRAL_TO_HOSPITAL, STATUS_TO_GP)),
    Flow("hotline", "rehab.hotline-requests", (HOTLINE_REQUEST, HOTLINE_REPLY)),
    Flow("closing", "rehab.closing-reports", (STATUS_TO_GP, STATUS_TO_DHRD)),
    Flow("acknowledgement", "rehab.acknowledgements", ()),  # acks for our messages; never answered
    # A GP's referral to municipal rehabilitation ("Ved senere opstået behov kan egen læge henvise til
    # kommunal rehabilitering"): always to the patient's municipality.
    Flow("gp-referral", "rehab.gp-referrals", (REFERRAL_TO_MUNICIPALITY,)),
)
FLOWS_BY_NAME = {f.name: f for f in FLOWS}


@dataclass(frozen=True, slots=True)
class Sender:
    """A kind of sender: its broker user, and the flows the agreement lets it send (its exchange's bindings)."""

    kind: str
    user: str
    flows: tuple[str, ...]

    @property
    def exchange(self) -> str:
        return f"rehab.inbound.{self.kind}"


SENDERS: tuple[Sender, ...] = (
    # discharge/visitation/step-down events, the hotline answers of its departments, acks of our messages
    Sender("hospital", "rehab-hospital", ("discharge", "hotline", "acknowledgement")),
    # advice requests, closing reports, acks of our referrals
    Sender("municipality", "rehab-municipality", ("hotline", "closing", "acknowledgement")),
    # advice requests, referrals to municipal rehabilitation, acks of our status messages
    Sender("gp", "rehab-gp", ("hotline", "gp-referral", "acknowledgement")),
)
SENDERS_BY_KIND = {s.kind: s for s in SENDERS}
SERVICE_USER = "rehab-service"
ADMIN_USER = "rehab-admin"


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


def outbound_exchanges() -> list[str]:
    return sorted({route.exchange for route in ROUTES})


def exchanges() -> list[Exchange]:
    return [
        *(Exchange(s.exchange, "direct", {"alternate-exchange": REFUSED_EXCHANGE}) for s in SENDERS),
        Exchange(REFUSED_EXCHANGE, "fanout"),
        Exchange(REFUSED_DEAD_LETTER_EXCHANGE, "fanout"),
        Exchange(REPLAY_EXCHANGE, "direct"),
        Exchange(DEAD_LETTER_EXCHANGE, "direct"),
        Exchange(UNROUTED_EXCHANGE, "fanout"),
        *(Exchange(name, "topic", {"alternate-exchange": UNROUTED_EXCHANGE}) for name in outbound_exchanges()),
    ]


def queues() -> list[Queue]:
    result = []
    for flow in FLOWS:
        result.append(Queue(flow.queue, inbound_queue_arguments(flow)))
        result.append(Queue(flow.dead_letter_queue, {"x-queue-type": "quorum"}))
    # A publish routed to the gate is refused (the sender's confirm is a nack) and dead-lettered to the
    # refused queue. Only a classic queue can do both (quorum queues have no reject-publish-dlx).
    result.append(
        Queue(
            REFUSED_GATE,
            {
                "x-queue-type": "classic",
                "x-max-length": 0,
                "x-overflow": "reject-publish-dlx",
                "x-dead-letter-exchange": REFUSED_DEAD_LETTER_EXCHANGE,
            },
        )
    )
    # Bounded: a sender flooding kinds it may not send must not fill the broker (it still gets its nacks).
    result.append(
        Queue(REFUSED_QUEUE, {"x-queue-type": "quorum", "x-max-length": MAX_LENGTH, "x-overflow": "reject-publish"})
    )
    result.append(Queue(UNROUTED_QUEUE, {"x-queue-type": "quorum"}))
    return result


def bindings() -> list[Binding]:
    result = []
    for sender in SENDERS:
        result += [Binding(sender.exchange, FLOWS_BY_NAME[name].queue, name) for name in sender.flows]
    for flow in FLOWS:
        result.append(Binding(REPLAY_EXCHANGE, flow.queue, flow.name))
        result.append(Binding(DEAD_LETTER_EXCHANGE, flow.dead_letter_queue, flow.name))
    result.append(Binding(REFUSED_EXCHANGE, REFUSED_GATE, ""))
    result.append(Binding(REFUSED_DEAD_LETTER_EXCHANGE, REFUSED_QUEUE, ""))
    result.append(Binding(UNROUTED_EXCHANGE, UNROUTED_QUEUE, ""))
    return result


def exactly(names: list[str]) -> str:
    """A permission regex that matches these resource names and nothing else."""
    return "^(" + "|".join(name.replace(".", r"\.") for name in names) + ")$"


def _users() -> dict[str, tuple[str, str, str, str]]:
    service_reads = [q for f in FLOWS for q in (f.queue, f.dead_letter_queue)] + [REFUSED_QUEUE]
    return {
        # name: (tags, configure, write, read)
        ADMIN_USER: ("administrator", ".*", ".*", ".*"),
        # Consumes the flow queues; publishes outputs, dead letters and (`dlq replay`) replays; lists refused
        # messages (`dlq refused`). It cannot write a sender's exchange, so it cannot pose as a sender.
        SERVICE_USER: (
            "",
            "",
            exactly([*outbound_exchanges(), DEAD_LETTER_EXCHANGE, REPLAY_EXCHANGE]),
            exactly(service_reads),
        ),
        # Each kind of sender writes its own exchange and nothing else.
        **{s.user: ("", "", exactly([s.exchange]), "") for s in SENDERS},
    }


# Users and their least privileges (configure, write, read regexes), for the definitions file.
# `guest` is for local development only and is not part of the deployed definitions.
USERS: dict[str, tuple[str, str, str, str]] = _users()


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
                "pattern": exactly([f.queue for f in FLOWS]),  # every flow's inbound queue, and no other
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


# Headers only the broker or we may set: a sender's copies are dropped (a forged reason, attempt count or death).
RESERVED_HEADERS = ("x-rehab-", "x-death", "x-first-death", "x-last-death", "x-delivery-count")
