"""Only the right sender may send, and the audit says who really did (decision 14).

On a RabbitMQ node of the tests' own with the committed `deploy/rabbitmq/definitions.json` imported (it
creates users and permissions, which the machine's shared broker must never get from a test), each user
connects with its development password `<user>-dev`: a sender reaches the flow queues of the kinds the
agreement lets it send; any other kind is refused (a negative confirm) and parked in `rehab.inbound.refused`;
another sender's exchange, and a user-id naming another user, are refused by the broker itself. End to end,
a consumer running as `rehab-service` turns a hospital's discharge event into a referral and audits
`rehab-hospital` as its source, while the same event from a municipality never reaches it; a replay comes
through `rehab.replay` under the operator's broker user and says who sent the message originally.
"""

from __future__ import annotations

import json
import os
import pwd
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pika
import pika.exceptions as px
import pytest

from integration.adapters.consumer import ConsumerService
from integration.adapters.memory import InMemoryBroker
from integration.adapters.rabbitmq import BrokerSettings, RabbitConnection, drain
from integration.adapters.sql.stores import open_audit_store
from integration.bootstrap import build
from integration.config import PROJECT_ROOT, Settings
from integration.errors import Transient
from integration.log import cpr_numbers_in
from integration.service.processor import RetryPolicy
from integration.topology import (
    ADMIN_USER,
    DEAD_LETTER_EXCHANGE,
    FLOWS,
    FLOWS_BY_NAME,
    REFUSED_QUEUE,
    REPLAY_EXCHANGE,
    RETIRED_EXCHANGES,
    SENDERS,
    SENDERS_BY_KIND,
    SERVICE_USER,
    USERS,
    VHOST,
)
from tests.cli_runs import run_integration
from tests.conftest import FIXED_NOW
from tests.runtime.broker_helpers import referral_events, referrals_by_event, wait_for
from tests.runtime.conftest import DEAD_LETTER_HEADERS_LOG, dump_dead_letter_headers
from tests.runtime.rabbit_nodes import OwnBroker

DEFINITIONS = PROJECT_ROOT / "deploy" / "rabbitmq" / "definitions.json"
HOSPITAL, MUNICIPALITY, GP = (SENDERS_BY_KIND[kind] for kind in ("hospital", "municipality", "gp"))
ALLOWED = [(s.user, s.exchange, flow) for s in SENDERS for flow in s.flows]
NOT_ALLOWED = [(s.user, s.exchange, f.name) for s in SENDERS for f in FLOWS if f.name not in s.flows]
FLOW_QUEUES = [f.queue for f in FLOWS]


@pytest.fixture(scope="module")
def broker(own_broker: OwnBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnBroker]:
    """The own node with the committed definitions imported; its dead letters' headers are dumped for the
    suite's CPR scan before the node goes."""
    own_broker.ctl("import_definitions", str(DEFINITIONS))
    yield own_broker
    log = tmp_path_factory.getbasetemp() / DEAD_LETTER_HEADERS_LOG
    dump_dead_letter_headers(own_broker.url(), [f.dead_letter_queue for f in FLOWS], log, "own node (definitions)")


@pytest.fixture(autouse=True)
def _empty_queues(broker: OwnBroker) -> None:
    """Every test starts with empty flow queues and an empty refused queue."""
    with channel_of(broker, "guest") as channel:
        for queue in [*FLOW_QUEUES, REFUSED_QUEUE]:
            channel.queue_purge(queue)


def url(broker: OwnBroker, user: str) -> str:
    return broker.url(user=user, password="guest" if user == "guest" else f"{user}-dev")


@contextmanager
def channel_of(broker: OwnBroker, user: str) -> Iterator[Any]:
    """A confirming channel of `user`, as a sender's own client would open it."""
    connection = pika.BlockingConnection(pika.URLParameters(url(broker, user)))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        yield channel
    finally:
        if connection.is_open:
            connection.close()


def publish(broker: OwnBroker, user: str, exchange: str, flow: str, message_id: str, **properties: Any) -> None:
    """Publish as `user`, mandatory with confirms, its user-id its own unless given."""
    properties.setdefault("user_id", user)
    body = properties.pop("body", b"{}")
    with channel_of(broker, user) as channel:
        channel.basic_publish(
            exchange, flow, body, pika.BasicProperties(message_id=message_id, **properties), mandatory=True
        )


def waiting(broker: OwnBroker, queue: str) -> list[tuple[Any, Any]]:
    """(method, properties) of every message in `queue`, left there."""
    taken = []
    with channel_of(broker, "guest") as channel:
        while True:
            method, properties, _ = channel.basic_get(queue, auto_ack=False)
            if method is None:
                return taken
            taken.append((method, properties))


def depths(broker: OwnBroker) -> dict[str, int]:
    with channel_of(broker, "guest") as channel:
        return {q: channel.queue_declare(q, passive=True).method.message_count for q in [*FLOW_QUEUES, REFUSED_QUEUE]}


def test_the_committed_definitions_import_with_their_users_permissions_and_limits(broker: OwnBroker) -> None:
    queues = broker.ctl("list_queues", "-p", VHOST, "name", "arguments", "--silent")
    assert "rehab.discharge-events" in queues and "x-delivery-limit" in queues
    assert "rehab-inbound-limits" in broker.ctl("list_policies", "-p", VHOST, "--silent")
    exchanges = broker.ctl("list_exchanges", "-p", VHOST, "name", "--silent").split()
    assert {s.exchange for s in SENDERS} | {REPLAY_EXCHANGE} <= set(exchanges)
    assert not set(RETIRED_EXCHANGES) & set(exchanges)
    listed = json.loads(broker.ctl("list_permissions", "-p", VHOST, "--formatter", "json"))
    permissions = {p["user"]: (p["configure"], p["write"], p["read"]) for p in listed if p["user"] != "guest"}
    assert permissions == {user: (c, w, r) for user, (_, c, w, r) in USERS.items()}


@pytest.mark.parametrize(("user", "exchange", "flow"), ALLOWED)
def test_a_sender_reaches_the_queue_of_each_kind_it_may_send(
    broker: OwnBroker, user: str, exchange: str, flow: str
) -> None:
    message_id = f"{user}-{flow}-{uuid.uuid4().hex[:6]}"
    publish(broker, user, exchange, flow, message_id)
    ((method, properties),) = waiting(broker, FLOWS_BY_NAME[flow].queue)
    assert properties.message_id == message_id and properties.user_id == user and method.exchange == exchange
    # back in its flow's queue (a quorum queue takes back what a closed channel held a moment later), and nowhere else
    queue = FLOWS_BY_NAME[flow].queue
    wait_for(lambda: depths(broker)[queue] == 1, 10, "the message back in its queue")
    assert sum(depths(broker).values()) == 1


@pytest.mark.parametrize(("user", "exchange", "flow"), NOT_ALLOWED)
def test_a_kind_the_sender_may_not_send_is_refused_and_parked(
    broker: OwnBroker, user: str, exchange: str, flow: str
) -> None:
    """Negative confirm (the mandatory flag brings no basic.return: the alternate exchange took the message),
    and the message waits in rehab.inbound.refused with the sender's verified user-id and its routing key."""
    message_id = f"{user}-{flow}-{uuid.uuid4().hex[:6]}"
    with pytest.raises(px.NackError):
        publish(broker, user, exchange, flow, message_id)
    ((method, properties),) = waiting(broker, REFUSED_QUEUE)
    assert properties.message_id == message_id and properties.user_id == user and method.routing_key == flow
    assert properties.headers["x-death"][0]["exchange"] == exchange
    assert all(depth == 0 for queue, depth in depths(broker).items() if queue != REFUSED_QUEUE)


def test_a_refused_kind_is_parked_even_when_the_sender_asks_for_no_confirm(broker: OwnBroker) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url(broker, GP.user)))
    try:
        connection.channel().basic_publish(GP.exchange, "discharge", b"{}", pika.BasicProperties(user_id=GP.user))
    finally:
        connection.close()
    wait_for(lambda: depths(broker)[REFUSED_QUEUE] == 1, 10, "the refused message to be parked")
    assert depths(broker)[FLOWS_BY_NAME["discharge"].queue] == 0


@pytest.mark.parametrize(("user", "exchange", "flow"), ALLOWED + NOT_ALLOWED)
def test_the_in_memory_broker_takes_and_refuses_as_the_real_one(user: str, exchange: str, flow: str) -> None:
    """The demo's and the unit tests' fake follows the same topology, refusal and parking included."""
    memory = InMemoryBroker(user_id=user)
    if (user, exchange, flow) in ALLOWED:
        memory.publish(exchange, flow, b"{}", "m-1")
        assert [m.user_id for m in memory.queues[FLOWS_BY_NAME[flow].queue]] == [user]
        assert not memory.queues[REFUSED_QUEUE]
    else:
        with pytest.raises(Transient, match="refused"):
            memory.publish(exchange, flow, b"{}", "m-1")
        (parked,) = memory.queues[REFUSED_QUEUE]
        assert parked.user_id == user and parked.headers["x-death"][0]["exchange"] == exchange
        assert not any(memory.queues[f.queue] for f in FLOWS)


WRONG_EXCHANGES = [
    (s.user, other)
    for s in SENDERS
    for other in [*(o.exchange for o in SENDERS if o is not s), REPLAY_EXCHANGE, DEAD_LETTER_EXCHANGE, "rehab.referral"]
] + [(SERVICE_USER, s.exchange) for s in SENDERS]


@pytest.mark.parametrize(("user", "exchange"), WRONG_EXCHANGES)
def test_an_exchange_not_ones_own_is_refused_by_the_broker(broker: OwnBroker, user: str, exchange: str) -> None:
    """A sender cannot publish on another sender's exchange, the replay or dead-letter exchange, or an
    outbound one; the service cannot publish on a sender's exchange (it cannot pose as a sender)."""
    flow = "discharge" if exchange != "rehab.referral" else "referral.municipality.851"
    with pytest.raises(px.ChannelClosedByBroker) as refused:
        publish(broker, user, exchange, flow, f"wrong-exchange-{uuid.uuid4().hex[:6]}")
    assert refused.value.reply_code == 403 and "ACCESS_REFUSED" in refused.value.reply_text
    assert sum(depths(broker).values()) == 0


@pytest.mark.parametrize("user", [s.user for s in SENDERS])
def test_a_sender_reads_no_queue(broker: OwnBroker, user: str) -> None:
    with pytest.raises(px.ChannelClosedByBroker) as refused, channel_of(broker, user) as channel:
        channel.basic_get(FLOWS_BY_NAME["hotline"].queue)
    assert refused.value.reply_code == 403


@pytest.mark.parametrize(("user", "claimed"), [(MUNICIPALITY.user, HOSPITAL.user), (GP.user, MUNICIPALITY.user)])
def test_a_user_id_naming_another_user_is_refused_by_the_broker(broker: OwnBroker, user: str, claimed: str) -> None:
    exchange = SENDERS_BY_KIND[user.removeprefix("rehab-")].exchange
    with pytest.raises(px.ChannelClosedByBroker) as refused:
        publish(broker, user, exchange, "hotline", "posing", user_id=claimed)
    assert refused.value.reply_code == 406 and f"user_id property set to '{claimed}'" in refused.value.reply_text
    assert sum(depths(broker).values()) == 0


@pytest.mark.parametrize("user", [SERVICE_USER, ADMIN_USER])
def test_the_service_and_the_administrator_replay_into_every_flow_queue(broker: OwnBroker, user: str) -> None:
    for flow in FLOWS:
        publish(broker, user, REPLAY_EXCHANGE, flow.name, f"replay-{flow.name}")
    assert all(depths(broker)[flow.queue] == 1 for flow in FLOWS)


# -- end to end: the consumer as rehab-service, the audit, the dlq commands ------------------------------


@contextmanager
def consumer(broker: OwnBroker, audit_dsn: str) -> Iterator[ConsumerService]:
    store = open_audit_store(audit_dsn)
    wiring = build(
        Settings.from_env({}), store=store, clock=lambda: FIXED_NOW, retry=RetryPolicy(attempts=2, seconds=1)
    )
    service = ConsumerService(
        BrokerSettings(url(broker, SERVICE_USER), prefetch=20),
        [FLOWS_BY_NAME["discharge"]],
        wiring.processor_on,
        reconnect_max_wait=1.0,
    )
    worker = threading.Thread(target=service.run, daemon=True)
    worker.start()
    try:
        yield service
    finally:
        service.stop()
        worker.join(timeout=30)
        store.close()
    assert not worker.is_alive(), "the consumer did not stop"


def referral_collector(broker: OwnBroker) -> str:
    name = f"test.referrals.{uuid.uuid4().hex[:6]}"
    with channel_of(broker, "guest") as channel:
        channel.queue_declare(name, durable=True, arguments={"x-queue-type": "quorum"})
        channel.queue_bind(name, "rehab.referral", "#")
    return name


def take(broker: OwnBroker, queue: str) -> list[Any]:
    connection = RabbitConnection(BrokerSettings(url(broker, "guest")))
    try:
        messages = drain(connection, queue, 10_000)
        for message in messages:
            connection.ack(message.delivery_tag)
        return messages
    finally:
        connection.close()


def records(audit_dsn: str) -> list[Any]:
    store = open_audit_store(audit_dsn)
    try:
        return list(store.records())
    finally:
        store.close()


def test_a_discharge_event_from_a_municipality_makes_no_referral_one_from_the_hospital_does(
    broker: OwnBroker, audit_dsn: str
) -> None:
    outputs = referral_collector(broker)
    (posed_id, posed), (real_id, real) = referral_events(2)
    with consumer(broker, audit_dsn) as service:
        with pytest.raises(px.NackError):  # its own exchange does not take discharge events
            publish(broker, MUNICIPALITY.user, MUNICIPALITY.exchange, "discharge", posed_id, body=posed)
        with pytest.raises(px.ChannelClosedByBroker):  # the hospital's exchange is not its to write
            publish(broker, MUNICIPALITY.user, HOSPITAL.exchange, "discharge", posed_id, body=posed)
        hospital = RabbitConnection(BrokerSettings(url(broker, HOSPITAL.user)))
        try:  # our adapter stamps the connection's user as the user-id
            hospital.publish(HOSPITAL.exchange, "discharge", real, real_id, content_type="application/json")
        finally:
            hospital.close()
        wait_for(lambda: service.handled >= 1, 30, "the hospital's event to be processed")
    (referral,) = take(broker, outputs)
    assert set(referrals_by_event([referral])) == {real_id}
    assert referral.source == SERVICE_USER  # what we publish carries our own broker user
    audit = records(audit_dsn)
    (received,) = [r for r in audit if r.step == "received"]
    assert received.message_id == real_id
    assert received.detail["source"] == HOSPITAL.user and received.detail["exchange"] == HOSPITAL.exchange
    assert not any(r.message_id == posed_id for r in audit)
    ((_, parked),) = waiting(broker, REFUSED_QUEUE)
    assert parked.message_id == posed_id and parked.user_id == MUNICIPALITY.user


def _cli_env(broker: OwnBroker, user: str, audit_dsn: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    # Whoever runs the command is taken from the process's credentials, not from these.
    return env | {
        "INTEGRATION_BROKER_URL": url(broker, user),
        "INTEGRATION_AUDIT_DSN": audit_dsn,
        "LOGNAME": "someone-else",
        "USER": "someone-else",
    }


def test_dlq_list_and_replay_are_audited_and_a_replay_names_the_operator_and_the_original_sender(
    broker: OwnBroker, audit_dsn: str
) -> None:
    operator = pwd.getpwuid(os.geteuid()).pw_name
    dlq = FLOWS_BY_NAME["discharge"].dead_letter_queue
    ((event_id, body),) = referral_events(1)
    bad = body.replace(b'"schemaVersion":"1"', b'"schemaVersion":"9"')
    with consumer(broker, audit_dsn):
        publish(broker, HOSPITAL.user, HOSPITAL.exchange, "discharge", event_id, body=bad)
        wait_for(lambda: len(waiting(broker, dlq)) == 1, 30, "the event to be dead-lettered")

    listed = run_integration(
        "dlq", "list", "--flow", "discharge", env=_cli_env(broker, SERVICE_USER, audit_dsn), text=True
    )
    assert listed.returncode == 0, listed.stderr
    assert event_id in listed.stdout and "schemaVersion: must be '1'" in listed.stdout

    replayed = run_integration(
        "dlq", "replay", "--flow", "discharge", "--id", event_id, env=_cli_env(broker, ADMIN_USER, audit_dsn), text=True
    )
    assert replayed.returncode == 0, replayed.stderr
    assert f"replayed {event_id}" in replayed.stdout and "schemaVersion: must be '1'" in replayed.stdout
    assert replayed.stdout.splitlines()[-1] == "replayed 1 message(s)"
    assert waiting(broker, dlq) == []
    ((method, properties),) = waiting(broker, FLOWS_BY_NAME["discharge"].queue)
    assert method.exchange == REPLAY_EXCHANGE and properties.user_id == ADMIN_USER
    assert properties.headers["x-rehab-original-source"] == HOSPITAL.user
    assert properties.headers["x-rehab-replayed-from"] == dlq

    with consumer(broker, audit_dsn):  # the replay arrives: audited as what it is, and dead-lettered again
        wait_for(lambda: len(waiting(broker, dlq)) == 1, 30, "the replayed event to be processed")
    audit = records(audit_dsn)
    reads = [r.detail for r in audit if r.step == "dlq-read"]
    assert [(d["command"], d["queue"], d["messages"], d["brokerUser"]) for d in reads] == [
        ("dlq list", dlq, 1, SERVICE_USER),
        ("dlq replay", dlq, 1, ADMIN_USER),
    ]
    assert reads[1]["replaying"] == 1
    assert all(d["by"] == operator and d["uid"] == os.geteuid() for d in reads)
    (replay,) = [r for r in audit if r.step == "replayed"]
    assert replay.message_id == event_id and replay.detail["by"] == operator
    assert replay.detail["brokerUser"] == ADMIN_USER and replay.detail["originalSource"] == HOSPITAL.user
    sources = [(r.detail["source"], r.detail["exchange"]) for r in audit if r.step == "received"]
    assert sources == [(HOSPITAL.user, HOSPITAL.exchange), (ADMIN_USER, REPLAY_EXCHANGE)]
    assert not cpr_numbers_in(json.dumps([r.detail for r in audit if r.step in ("dlq-read", "replayed")]))
    take(broker, dlq)  # holds a CPR number in its body; nothing else needs it


def test_dlq_refused_lists_who_sent_what_and_leaves_it_queued(broker: OwnBroker, audit_dsn: str) -> None:
    open_audit_store(audit_dsn).close()  # the service's store: a command that reads never creates one
    with pytest.raises(px.NackError):
        publish(broker, MUNICIPALITY.user, MUNICIPALITY.exchange, "discharge", "posing-as-hospital")
    listed = run_integration("dlq", "refused", env=_cli_env(broker, SERVICE_USER, audit_dsn), text=True)
    assert listed.returncode == 0, listed.stderr
    header, line = listed.stdout.splitlines()
    assert header == f"{REFUSED_QUEUE}: 1 message(s)"
    assert line.split()[0] == "posing-as-hospital"
    assert f"from {MUNICIPALITY.user}  kind discharge  to {MUNICIPALITY.exchange}" in line
    wait_for(lambda: depths(broker)[REFUSED_QUEUE] == 1, 10, "the listed message left queued")
    (read,) = [r.detail for r in records(audit_dsn) if r.step == "dlq-read"]
    assert read["queue"] == REFUSED_QUEUE and read["messages"] == 1 and read["brokerUser"] == SERVICE_USER
    assert read["by"] == pwd.getpwuid(os.geteuid()).pw_name
