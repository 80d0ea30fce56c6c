"""What `dlq list` and `dlq replay` believe of a dead letter, on the real broker (a vhost of the test's own).

Our `x-rehab-*` headers are believed only on a dead letter our processor published (to `rehab.dlx`, by a
user that may write it, without `x-death`); on a message the broker dead-lettered itself they are the
sender's forgeries: the reason is the broker's and the source the user-id RabbitMQ verified. Each dead
letter has a handle that is safe to print and that `replay --id` takes, so a message-id that is a CPR
number (masked in the listing) can still be replayed; an id that names nothing is exit 1. Odd properties
and headers never crash the tools, and what a replay copies from the sender is masked.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pika
import pytest

from integration.adapters.sql.stores import open_audit_store
from integration.log import cpr_numbers_in
from integration.topology import DEAD_LETTER_EXCHANGE, FLOWS_BY_NAME, SENDERS_BY_KIND
from tests.cli_runs import run_integration
from tests.runtime.broker_helpers import consumer_env, queue_depth, take_all, wait_for
from tests.runtime.conftest import broker_url

CPR = "2512489996"
DISCHARGE = FLOWS_BY_NAME["discharge"]
DLQ = DISCHARGE.dead_letter_queue
FORGED = {
    "x-rehab-reason": "forged: nothing wrong here",
    "x-rehab-reason-code": "forged",
    "x-rehab-source": "rehab-hospital",
    "x-rehab-original-source": "rehab-hospital",
    "x-rehab-rejected-at": "2000-01-01T00:00:00+00:00",
}


@contextmanager
def channel(vhost: str) -> Iterator[Any]:
    connection = pika.BlockingConnection(pika.URLParameters(broker_url(vhost)))
    try:
        ch = connection.channel()
        ch.confirm_delivery()
        yield ch
    finally:
        connection.close()


def cli(vhost: str, audit_dsn: str, *args: str) -> Any:
    return run_integration(*args, env=consumer_env(vhost, audit_dsn), text=True, timeout=120)


def listed_lines(done: Any, message_id: str) -> list[str]:
    return [line.strip() for line in done.stdout.splitlines() if line.strip().startswith(message_id + "  ")]


@pytest.fixture
def store(audit_dsn: str) -> str:
    open_audit_store(audit_dsn).close()  # the service's store: the dlq commands need one, they never create it
    return audit_dsn


def test_forged_rehab_headers_on_a_message_the_broker_dead_lettered_are_not_believed(
    vhost_of_its_own: str, store: str
) -> None:
    vhost = vhost_of_its_own
    hospital = SENDERS_BY_KIND["hospital"].exchange
    with channel(vhost) as ch:  # a sender's message with our headers forged, expiring before anyone reads it
        properties = pika.BasicProperties(message_id="forged-1", user_id="guest", expiration="1", headers=FORGED)
        ch.basic_publish(hospital, "discharge", b"{}", properties)
    wait_for(lambda: queue_depth(vhost, DLQ) == 1, 30, "the broker to dead-letter the expired message")

    listed = cli(vhost, store, "dlq", "list", "--flow", "discharge")
    assert listed.returncode == 0, listed.stderr
    (line,) = listed_lines(listed, "forged-1")
    assert "broker: expired, it expired" in line and "from guest" in line
    assert "forged:" not in line and "rehab-hospital" not in line and "2000-01-01" not in line

    replayed = cli(vhost, store, "dlq", "replay", "--flow", "discharge", "--id", "forged-1")
    assert replayed.returncode == 0, replayed.stderr
    (again,) = take_all(vhost, DISCHARGE.queue)
    assert again.raw_headers["x-rehab-original-source"] == "guest"
    assert not {"x-rehab-reason", "x-rehab-source", "x-rehab-rejected-at"} & set(again.raw_headers)
    store_records = list(open_audit_store(store).records())
    (replay,) = [r for r in store_records if r.step == "replayed"]
    assert replay.detail["originalSource"] == "guest"


def test_our_own_dead_letter_is_believed(vhost_of_its_own: str, store: str) -> None:
    """What the processor publishes (here by hand, as the same user): straight to rehab.dlx, no x-death."""
    with channel(vhost_of_its_own) as ch:
        ours = {**FORGED, "x-rehab-reason": "patient.cpr: the date part is not a real date"}
        ch.basic_publish(
            DEAD_LETTER_EXCHANGE,
            "discharge",
            b"{}",
            pika.BasicProperties(message_id="ours-1", user_id="guest", headers=ours),
        )
    listed = cli(vhost_of_its_own, store, "dlq", "list", "--flow", "discharge")
    (line,) = listed_lines(listed, "ours-1")
    assert "2000-01-01T00:00:00+00:00  from rehab-hospital  patient.cpr: the date part is not a real date" in line
    take_all(vhost_of_its_own, DLQ)


def test_a_message_id_that_is_a_cpr_number_is_masked_and_replayed_by_its_handle(
    vhost_of_its_own: str, store: str
) -> None:
    vhost = vhost_of_its_own
    with channel(vhost) as ch:
        for message_id in (CPR, "other-1"):
            headers = {"x-rehab-reason": "patient.cpr: unknown", "x-rehab-source": "rehab-hospital"}
            properties = pika.BasicProperties(message_id=message_id, user_id="guest", headers=headers)
            ch.basic_publish(DEAD_LETTER_EXCHANGE, "discharge", b'{"n": 1}', properties)
    listed = cli(vhost, store, "dlq", "list", "--flow", "discharge")
    assert listed.returncode == 0 and CPR not in listed.stdout
    (line,) = listed_lines(listed, "<cpr>")
    handle = line.split()[1]
    assert re.fullmatch(r"dl-[a-z]{10}", handle)
    assert listed_lines(cli(vhost, store, "dlq", "list", "--flow", "discharge"), "<cpr>")[0].split()[1] == handle

    replayed = cli(vhost, store, "dlq", "replay", "--flow", "discharge", "--id", handle)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.splitlines()[-1] == "replayed 1 message(s)" and CPR not in replayed.stdout
    (again,) = take_all(vhost, DISCHARGE.queue)
    assert again.message_id == CPR  # the message itself is unchanged: it goes back to be processed
    (left,) = take_all(vhost, DLQ)
    assert left.message_id == "other-1"
    (replay,) = [r for r in open_audit_store(store).records() if r.step == "replayed"]
    assert replay.message_id == CPR and replay.detail["handle"] == handle


def test_replaying_an_id_that_names_no_dead_letter_says_which_and_exits_1(vhost_of_its_own: str, store: str) -> None:
    vhost = vhost_of_its_own
    with channel(vhost) as ch:
        properties = pika.BasicProperties(message_id="here-1", user_id="guest", headers={"x-rehab-reason": "r"})
        ch.basic_publish(DEAD_LETTER_EXCHANGE, "discharge", b"{}", properties)
    done = cli(vhost, store, "dlq", "replay", "--id", "here-1", "--id", "not-here-1", "--id", "251248 9996")
    assert done.returncode == 1
    assert done.stdout.splitlines()[-1] == "replayed 1 message(s)"
    assert done.stderr.splitlines() == ["error: not in any dead-letter queue: not-here-1, <cpr>"]
    done = cli(vhost, store, "dlq", "replay", "--flow", "discharge", "--id", "nothing")
    assert done.returncode == 1 and done.stdout.splitlines()[-1] == "replayed 0 message(s)"
    assert done.stderr.splitlines() == [f"error: not in {DLQ}: nothing"]
    take_all(vhost, DISCHARGE.queue)


ODD: list[tuple[str | None, dict[str, Any] | None, str | None]] = [
    # (message-id, headers, user-id)
    (None, None, None),
    (
        "bytes-1",
        {"x-rehab-reason": b"\xff\xfe not text", "x-rehab-rejected-at": 12345, "x-rehab-source": ["x"]},
        "guest",
    ),
    ("huge-1", {"x-rehab-reason": "A" * 100_000, "x-sender-note": "B" * 20_000}, "guest"),
    ("ctl\n\x00\x1b[31m-1", {"x-rehab-reason": "line one\nline two\r\x1b[2K"}, "guest"),
    ("death-text-1", {"x-death": "not a list"}, "guest"),
    ("death-list-1", {"x-death": [1, "two", None]}, "guest"),
    ("death-empty-1", {"x-death": []}, "guest"),
    (
        "typed-1",
        {
            "x-nested": {"a": {"b": {"c": [1, 2, {"d": None}]}}},
            "x-decimal": Decimal("1.5"),
            "x-time": datetime(2026, 1, 1, tzinfo=UTC),
            "x-flag": True,
            "x-patient": int(CPR),
            "x-patient-text": f"patient 251248 {CPR[6:]}",
            CPR: "a header named by a CPR number",
        },
        "guest",
    ),
]


def test_odd_properties_and_headers_never_crash_list_or_replay(vhost_of_its_own: str, store: str) -> None:
    vhost = vhost_of_its_own
    with channel(vhost) as ch:
        for message_id, headers, user_id in ODD:
            properties = pika.BasicProperties(
                message_id=message_id, user_id=user_id, headers=headers, content_type="\x00odd/type"
            )
            ch.basic_publish(DEAD_LETTER_EXCHANGE, "discharge", f"body of {message_id}".encode(), properties)
    listed = cli(vhost, store, "dlq", "list", "--flow", "discharge")
    assert listed.returncode == 0 and listed.stderr == "", listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0] == f"{DLQ}: {len(ODD)} message(s)" and len(lines) == 1 + len(ODD)
    assert all(len(line) < 1000 for line in lines) and not cpr_numbers_in(listed.stdout)
    # a message-id with control characters is no id: the handle is how to name it
    (forged,) = [line for line in lines if "line one\\nline two\\r\\x1b[2K" in line]
    assert forged.split()[0] == "-" and forged.split()[1].startswith("dl-")

    replayed = cli(vhost, store, "dlq", "replay", "--flow", "discharge", "--all")
    assert replayed.returncode == 0 and replayed.stderr == "", replayed.stderr
    assert replayed.stdout.splitlines()[-1] == f"replayed {len(ODD)} message(s)"
    again = take_all(vhost, DISCHARGE.queue)
    assert len(again) == len(ODD) and queue_depth(vhost, DLQ) == 0
    (typed,) = [m for m in again if m.message_id == "typed-1"]
    assert typed.raw_headers["x-patient"] == "<cpr>" and typed.raw_headers["x-patient-text"] == "patient <cpr>"
    assert typed.raw_headers["<cpr>"] == "a header named by a CPR number"
    assert typed.raw_headers["x-nested"] == {"a": {"b": {"c": [1, 2, {"d": None}]}}}
    assert all(not cpr_numbers_in(repr(m.raw_headers)) for m in again)


def test_a_vhost_without_the_topology_is_a_configuration_error_naming_it(vhost_of_its_own: str, store: str) -> None:
    with channel(vhost_of_its_own) as ch:
        ch.queue_delete(DLQ)
    for command in (("dlq", "list"), ("dlq", "replay", "--all")):
        done = cli(vhost_of_its_own, store, *command)
        assert done.returncode == 3 and "Traceback" not in done.stderr
        (line,) = done.stderr.splitlines()
        assert line == (
            f"error: the broker refused: 404 NOT_FOUND - no queue '{DLQ}' in vhost '{vhost_of_its_own}'; "
            "is the topology applied? (integration topology apply)"
        )


def test_the_dead_letter_we_publish_masks_the_senders_headers(pipeline: Any, tmp_path: Any) -> None:
    from integration.adapters.memory import InMemoryBroker
    from integration.adapters.sql.sqlite import SqliteAuditStore
    from integration.bootstrap import build
    from integration.config import Settings
    from integration.service.processor import Delivery
    from tests.conftest import FIXED_NOW

    broker = InMemoryBroker()
    store = SqliteAuditStore(str(tmp_path / "audit.sqlite3"))
    settings = Settings.from_env({})
    processor = build(settings, bus=broker, store=store, clock=lambda: FIXED_NOW, pipeline=pipeline).processor
    headers = {"x-patient": CPR, "x-patient-number": int(CPR), "x-note": "for 251248 9996", CPR: "named"}
    processor.process(Delivery("discharge", b"{not json", "m-1", headers=headers, source="rehab-hospital"))
    (dead,) = broker.queues[DLQ]
    assert not cpr_numbers_in(repr(dead.headers)) and "251248 9996" not in repr(dead.headers)
    assert dead.headers["x-patient"] == "<cpr>" and dead.headers["x-note"] == "for <cpr>"
