"""The MLLP listener on the real broker (a vhost per test) and a SQLite store: what each message is answered,
and when."""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path

import pytest

from integration.adapters.rabbitmq import BrokerSettings, RabbitConnection, drain
from integration.adapters.sql.stores import open_audit_store
from tests.runtime.conftest import broker_url
from tests.runtime.mllp_client import CPR_FIELD, Client, adt, running, segment, self_signed, settings_for
from tests.runtime.tcp_proxy import TcpProxy

QUEUE = "rehab.discharge-events"


def queued(vhost: str) -> list:
    connection = RabbitConnection(BrokerSettings(broker_url(vhost)))
    try:
        return drain(connection, QUEUE, 100)
    finally:
        connection.close()


def audit_details(dsn: str) -> list[dict]:
    store = open_audit_store(dsn, create=False)
    try:
        return [dict(r.detail) for r in store.records() if r.step == "hl7-received"]
    finally:
        store.close()


def test_aa_after_the_confirm_with_the_ack_fields_the_standard_gives(vhost_of_its_own: str, audit_dsn: str) -> None:
    with running(settings_for(vhost_of_its_own, audit_dsn)) as listener:
        client = Client(listener.port)
        ack = client.ask(adt("CTRL-1"))
    msh, msa = segment(ack, "MSH"), segment(ack, "MSA")
    assert msh[2:6] == ["HJERTEREHAB", "RN", "EPJ", "RHN^1.2.208.176.1.1^ISO"]  # MSH-3/4 and 5/6 swapped
    assert msh[8] == "ACK^A03^ACK" and msh[9] != "CTRL-1" and msh[10] == "P" and msh[11] == "2.5"
    assert msa[1:3] == ["AA", "CTRL-1"]
    [message] = queued(vhost_of_its_own)
    assert message.body == adt("CTRL-1")
    assert message.content_type == "x-application/hl7-v2+er7"
    assert message.message_id and message.message_id.count("-") == 4  # uuid5
    [detail] = audit_details(audit_dsn)
    assert detail["ack"] == "AA" and detail["controlId"] == "CTRL-1" and detail["sendingApplication"] == "EPJ"


def test_no_aa_while_the_broker_does_not_confirm_then_a_resend_is_aa(vhost_of_its_own: str, audit_dsn: str) -> None:
    with TcpProxy("127.0.0.1", 5672) as proxy:
        url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost_of_its_own}?heartbeat=60"
        settings = settings_for(vhost_of_its_own, audit_dsn, mllp_broker_url=url, mllp_publish_timeout_seconds=2)
        with running(settings) as listener:
            client = Client(listener.port, timeout=20)
            client.ask(adt("WARM"))  # the publisher's connection is open through the proxy
            proxy.blackhole()
            started = time.monotonic()
            ack = client.ask(adt("HELD"))
            assert segment(ack, "MSA")[1:3] == ["AR", "HELD"]  # not AA: the confirm never came
            assert segment(ack, "ERR")[3].startswith("207^")
            assert 1.5 < time.monotonic() - started < 10
            received = [d["controlId"] for d in audit_details(audit_dsn) if "notPublished" not in d]
            assert received == ["WARM"]  # nothing recorded as received (an outage's record may follow)
            proxy.forward()
            time.sleep(1)
            again = client.ask(adt("HELD"))
            assert segment(again, "MSA")[1:3] == ["AA", "HELD"]
    copies = [m for m in queued(vhost_of_its_own) if m.body == adt("HELD")]
    assert copies and len({m.message_id for m in copies}) == 1  # a late first copy is the consumer's redelivery


def test_broker_unreachable_is_ar_207_never_aa(vhost_of_its_own: str, audit_dsn: str) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    settings = settings_for(vhost_of_its_own, audit_dsn, mllp_broker_url=f"amqp://guest:guest@127.0.0.1:{port}/x")
    with running(settings) as listener:
        ack = Client(listener.port).ask(adt("DOWN", accept="AL"))
    assert segment(ack, "MSA")[1] == "CE"  # enhanced mode: commit error, the sender retries
    assert segment(ack, "ERR")[3].startswith("207^")
    [outage] = audit_details(audit_dsn)  # not received: an outage's record, no receipt row
    assert outage["ack"] == "CE" and outage["notPublished"] and outage["error"].startswith("207")


@pytest.mark.parametrize("accept", ["NE", "SU"])
def test_a_message_lost_to_an_outage_is_audited_though_its_sender_asked_for_no_ack(
    vhost_of_its_own: str, audit_dsn: str, accept: str
) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    settings = settings_for(vhost_of_its_own, audit_dsn, mllp_broker_url=f"amqp://guest:guest@127.0.0.1:{port}/x")
    with running(settings) as listener:
        client = Client(listener.port, timeout=3)
        client.send(adt(f"OUT-{accept}", accept=accept))
        with pytest.raises(TimeoutError):  # no ACK: as MSH-15 asked
            client.read_frame()
    [outage] = audit_details(audit_dsn)
    assert outage["controlId"] == f"OUT-{accept}" and outage["ackSent"] is False
    assert "broker" in outage["notPublished"] and outage["ack"] == "CE"
    assert queued(vhost_of_its_own) == []


def test_invalid_content_is_ae_naming_the_field_and_nothing_is_published(vhost_of_its_own: str, audit_dsn: str) -> None:
    broken = adt("BAD").replace(CPR_FIELD, b"PID|1||25124\\Q\\89996^^^CPR^NI")
    with running(settings_for(vhost_of_its_own, audit_dsn)) as listener:
        ack = Client(listener.port).ask(broken)
    assert segment(ack, "MSA")[1:3] == ["AE", "BAD"]
    err = segment(ack, "ERR")
    assert err[2].startswith("PID^1^3") and err[4] == "E" and "PID-3" in err[8]
    assert b"2512489996" not in ack and b"25124" not in ack
    assert queued(vhost_of_its_own) == []
    assert audit_details(audit_dsn)[0]["ack"] == "AE"


@pytest.mark.parametrize(
    ("change", "code", "where"),
    [
        ((b"ADT^A03^ADT_A03", b"ORU^R01^ORU_R01"), "200", "MSH^1^9^1^1"),
        ((b"ADT^A03^ADT_A03", b"ADT^A31^ADT_A05"), "201", "MSH^1^9^1^2"),
        ((b"|P|2.5|", b"|P|2.1|"), "203", "MSH^1^12^1^1"),
        ((b"|P|2.5|", b"|T|2.5|"), "202", "MSH^1^11^1^1"),
    ],
)
def test_unsupported_type_trigger_version_processing_id_is_ar(
    vhost: str, tmp_path: Path, change: tuple[bytes, bytes], code: str, where: str
) -> None:
    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    with running(settings_for(vhost, dsn)) as listener:
        ack = Client(listener.port).ask(adt("U1").replace(*change))
    assert segment(ack, "MSA")[1] == "AR"
    err = segment(ack, "ERR")
    assert err[3].startswith(code + "^") and err[2] == where
    assert audit_details(dsn)[0]["ack"] == "AR"


def test_a_repeated_control_id_publishes_once_and_gets_the_same_ack(vhost_of_its_own: str, audit_dsn: str) -> None:
    with running(settings_for(vhost_of_its_own, audit_dsn)) as listener:
        client = Client(listener.port)
        first = client.ask(adt("SAME"))
        second = client.ask(adt("SAME"))
    assert first == second and segment(first, "MSA")[1] == "AA"
    assert len(queued(vhost_of_its_own)) == 1
    assert [d.get("resent", False) for d in audit_details(audit_dsn)] == [False, True]


def test_the_same_control_id_with_other_content_is_ar_205_audited(vhost_of_its_own: str, audit_dsn: str) -> None:
    with running(settings_for(vhost_of_its_own, audit_dsn)) as listener:
        client = Client(listener.port)
        client.ask(adt("REUSED"))
        ack = client.ask(adt("REUSED", note="another free text"))
    assert segment(ack, "MSA")[1:3] == ["AR", "REUSED"]
    assert segment(ack, "ERR")[3].startswith("205^") and segment(ack, "ERR")[2] == "MSH^1^10"
    assert len(queued(vhost_of_its_own)) == 1
    assert [d["ack"] for d in audit_details(audit_dsn)] == ["AA", "AR"]


def test_a_frame_in_several_tcp_writes_is_one_message(vhost_of_its_own: str, audit_dsn: str) -> None:
    framed = b"\x0b" + adt("PARTS") + b"\x1c\x0d"
    with running(settings_for(vhost_of_its_own, audit_dsn)) as listener:
        client = Client(listener.port)
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for cut in (framed[:1], framed[1:40], framed[40:-1], framed[-1:]):  # the end block split too
            client.sock.sendall(cut)
            time.sleep(0.05)
        ack = client.read_frame()
    assert segment(ack, "MSA")[1:3] == ["AA", "PARTS"]


def test_a_frame_without_its_end_block_times_out_and_nothing_is_published(
    vhost_of_its_own: str, audit_dsn: str
) -> None:
    settings = settings_for(vhost_of_its_own, audit_dsn, mllp_frame_timeout_seconds=1)
    with running(settings) as listener:
        client = Client(listener.port, timeout=5)
        client.sock.sendall(b"\x0b" + adt("NOEND"))
        started = time.monotonic()
        assert client.closed() and time.monotonic() - started < 4
    assert queued(vhost_of_its_own) == [] and audit_details(audit_dsn) == []


def test_a_10_mb_message_is_refused_with_ar_without_being_held(vhost_of_its_own: str, audit_dsn: str) -> None:
    big = adt("BIG") + b"NTE|1||" + b"x" * (10 * 1024 * 1024) + b"\r"
    settings = settings_for(vhost_of_its_own, audit_dsn, mllp_frame_timeout_seconds=60)
    with running(settings) as listener:
        client = Client(listener.port, timeout=30)
        ack = client.ask(big)
        after = client.ask(adt("AFTER"))  # the connection is still in step
    assert segment(ack, "MSA")[1:3] == ["AR", "BIG"] and segment(ack, "ERR")[3].startswith("104^")
    assert segment(after, "MSA")[1] == "AA"
    assert [m.body for m in queued(vhost_of_its_own)] == [adt("AFTER")]


def test_a_frame_without_msh_closes_the_connection(vhost: str, tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    with running(settings_for(vhost, dsn)) as listener:
        client = Client(listener.port, timeout=5)
        client.send(b"GET / HTTP/1.1\r\n\r\n")
        assert client.closed()


def test_a_trickling_client_times_out_while_another_is_served(vhost_of_its_own: str, audit_dsn: str) -> None:
    settings = settings_for(vhost_of_its_own, audit_dsn, mllp_frame_timeout_seconds=2, mllp_max_connections=2)
    with running(settings) as listener:
        slow = Client(listener.port, timeout=10)
        slow.sock.sendall(b"\x0b")
        served = Client(listener.port)
        started = time.monotonic()
        for byte in adt("SLOW")[:3]:
            slow.sock.sendall(bytes([byte]))
            assert segment(served.ask(adt(f"FAST{byte}")), "MSA")[1] == "AA"
            time.sleep(0.5)
        assert slow.closed() and time.monotonic() - started < 6
    assert len(queued(vhost_of_its_own)) == 3


def test_connections_over_the_limit_are_refused_at_accept(vhost: str, tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    with running(settings_for(vhost, dsn, mllp_max_connections=2)) as listener:
        held = [Client(listener.port), Client(listener.port)]
        time.sleep(0.2)
        extra = Client(listener.port, timeout=5)
        assert extra.closed()
        assert listener.refused_connections == 1
        held[0].close()
        time.sleep(0.2)
        assert segment(Client(listener.port).ask(adt("AGAIN")), "MSA")[1] == "AA"


def test_tls_with_a_self_signed_certificate(vhost: str, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    settings = settings_for(vhost, dsn, mllp_tls_cert_file=cert, mllp_tls_key_file=key)
    trust = ssl.create_default_context(cafile=str(cert))
    with running(settings) as listener:
        ack = Client(listener.port, tls=trust).ask(adt("TLS"))
        plain = Client(listener.port, timeout=5)
        plain.send(adt("PLAIN"))
        assert plain.closed()  # no ACK in clear text
    assert segment(ack, "MSA")[1:3] == ["AA", "TLS"]


@pytest.mark.parametrize(("accept", "answered"), [("AL", "CA"), ("NE", None), ("ER", None), ("SU", "CA")])
def test_enhanced_mode_accept_acks_follow_msh_15(vhost: str, tmp_path: Path, accept: str, answered: str | None) -> None:
    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    with running(settings_for(vhost, dsn)) as listener:
        client = Client(listener.port, timeout=3)
        client.send(adt(f"E-{accept}-{tmp_path.name[-6:]}", accept=accept, app="AL"))
        if answered is None:
            with pytest.raises(TimeoutError):
                client.read_frame()
        else:
            assert segment(client.read_frame(), "MSA")[1] == answered
    [detail] = audit_details(dsn)
    assert detail["ack"] == "CA" and detail["mode"] == "enhanced" and "applicationAck" in detail


def test_enhanced_mode_error_is_ce_when_msh_15_asks_for_errors(vhost: str, tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    broken = adt("EBAD", accept="ER", app="NE").replace(CPR_FIELD, b"PID|1||2512\\Z\\")
    with running(settings_for(vhost, dsn)) as listener:
        ack = Client(listener.port).ask(broken)
    assert segment(ack, "MSA")[1] == "CE" and "PID-3" in segment(ack, "ERR")[8]


@pytest.mark.parametrize(
    ("change", "where", "named"),
    [
        ((b"||19481225|F|", b"||19481226|F|"), "PID^1^7", "PID-7"),  # not the CPR number's birth date
        ((b"|municipal|Y|", b"|sometimes|Y|"), "ZRH^1^3", "ZRH-3"),  # not a referral decision
        ((b"|20261114091200|20261120133000\r", b"|20261114091200|20261120\r"), "PV1^1^45", "PV1-45"),  # a date alone
    ],
)
def test_content_the_discharge_consumer_refuses_is_ae_naming_the_field(
    vhost: str, tmp_path: Path, change: tuple[bytes, bytes], where: str, named: str
) -> None:
    """The listener reads a message exactly as the discharge consumer will (`read_inbound`, the discharge
    queue's hl7-adt kind, its `read`): refusals of the contract and the flow, not only of ER7, are AE."""
    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    message = adt(f"W-{named}")
    assert change[0] in message
    with running(settings_for(vhost, dsn)) as listener:
        ack = Client(listener.port).ask(message.replace(*change))
    assert segment(ack, "MSA")[1:3] == ["AE", f"W-{named}"]
    err = segment(ack, "ERR")
    assert err[2].startswith(where) and named in err[8]
    assert b"2512489996" not in ack
    assert audit_details(dsn)[0]["ack"] == "AE"


def test_a_v2_4_message_gets_its_error_in_err_1_and_msa_3(vhost: str, tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    broken = adt("OLD", version="2.4").replace(CPR_FIELD, b"PID|1||25124\\Q\\89996^^^CPR^NI")
    with running(settings_for(vhost, dsn)) as listener:
        ack = Client(listener.port).ask(broken)
    msa, err = segment(ack, "MSA"), segment(ack, "ERR")
    assert msa[1:3] == ["AE", "OLD"] and "PID-3" in msa[3]
    assert len(err) == 2 and err[1].split("^")[:3] == ["PID", "1", "3"] and err[1].endswith("&HL70357")
    assert segment(ack, "MSH")[11] == "2.4" and b"2512489996" not in ack


A13_FORGED = (b"|EPJ|RHN^1.2.208.176.1.1^ISO|", b"|EPJ|OTHER^1.2.208.176.1.99^ISO|")


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (A13_FORGED, "MSH^1^4"),  # another sending facility
        ((b"|EPJ|RHN^", b"|NOTEPJ|RHN^"), "MSH^1^3"),  # the facility, but not the application on the list
    ],
)
def test_a_sender_not_on_the_list_is_ar_103_audited_and_never_published(
    vhost_of_its_own: str, audit_dsn: str, change: tuple[bytes, bytes], where: str
) -> None:
    cancel = adt("FORGED").replace(b"ADT^A03^ADT_A03", b"ADT^A13^ADT_A01").replace(b"EVN|A03|", b"EVN|A13|")
    assert change[0] in cancel
    with running(settings_for(vhost_of_its_own, audit_dsn)) as listener:
        client = Client(listener.port)
        ack = client.ask(cancel.replace(*change))
        allowed = client.ask(adt("ALLOWED"))
    assert segment(ack, "MSA")[1:3] == ["AR", "FORGED"]
    err = segment(ack, "ERR")
    assert err[2] == where and err[3].startswith("103^") and "mllp_allowed_senders" in err[8]
    assert segment(allowed, "MSA")[1] == "AA"
    assert [m.body for m in queued(vhost_of_its_own)] == [adt("ALLOWED")]
    refused = audit_details(audit_dsn)[0]
    assert refused["ack"] == "AR" and refused["trigger"] == "A13" and refused["error"].startswith("103")


def test_a_facility_entry_matches_msh_4_whole_or_its_namespace_id_only(vhost: str, tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    settings = settings_for(vhost, dsn, mllp_allowed_senders=("RHN^1.2.208.176.1.1^ISO",))
    with running(settings) as listener:
        client = Client(listener.port)
        whole = client.ask(adt("WHOLE"))
        other_oid = client.ask(adt("OID").replace(b"RHN^1.2.208.176.1.1^ISO", b"RHN^1.2.208.176.1.9^ISO"))
    assert segment(whole, "MSA")[1] == "AA"
    assert segment(other_oid, "MSA")[1] == "AR" and segment(other_oid, "ERR")[2] == "MSH^1^4"


def test_no_sender_list_takes_no_one(vhost: str, tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    with running(settings_for(vhost, dsn, mllp_allowed_senders=())) as listener:
        ack = Client(listener.port).ask(adt("NOLIST"))
    assert segment(ack, "MSA")[1] == "AR" and segment(ack, "ERR")[3].startswith("103^")


def test_mutual_tls_requires_a_client_certificate_signed_by_the_configured_ca(vhost: str, tmp_path: Path) -> None:
    (tmp_path / "server").mkdir()
    (tmp_path / "client").mkdir()
    (tmp_path / "stranger").mkdir()
    cert, key = self_signed(tmp_path / "server")
    client_cert, client_key = self_signed(tmp_path / "client")  # self-signed: it is its own CA
    stranger_cert, stranger_key = self_signed(tmp_path / "stranger")
    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    settings = settings_for(
        vhost, dsn, mllp_tls_cert_file=cert, mllp_tls_key_file=key, mllp_tls_client_ca_file=client_cert
    )

    def context(chain: tuple[Path, Path] | None) -> ssl.SSLContext:
        trust = ssl.create_default_context(cafile=str(cert))
        if chain is not None:
            trust.load_cert_chain(str(chain[0]), str(chain[1]))
        return trust

    with running(settings) as listener:
        ack = Client(listener.port, tls=context((client_cert, client_key))).ask(adt("MTLS"))
        for chain in (None, (stranger_cert, stranger_key)):
            try:
                refused = Client(listener.port, tls=context(chain), timeout=5)
                refused.send(adt("NOCERT"))
                assert refused.closed()  # TLS 1.3: the server's refusal comes after the client's handshake ends
            except (ssl.SSLError, ConnectionError):
                pass
    assert segment(ack, "MSA")[1:3] == ["AA", "MTLS"]
    assert [d["controlId"] for d in audit_details(dsn)] == ["MTLS"]


@pytest.mark.parametrize(("accept", "app", "field"), [("XX", "", "15"), ("al", "", "15"), ("AL", "YY", "16")])
def test_an_ack_condition_not_in_table_0155_is_cr_103_at_its_field_and_not_published(
    vhost_of_its_own: str, audit_dsn: str, accept: str, app: str, field: str
) -> None:
    with running(settings_for(vhost_of_its_own, audit_dsn)) as listener:
        client = Client(listener.port, timeout=5)
        first = client.ask(adt("COND", accept=accept, app=app))
        again = client.ask(adt("COND", accept=accept, app=app))  # answered again, never replayed as NE
    for ack in (first, again):
        assert segment(ack, "MSA")[1:3] == ["CR", "COND"]
        err = segment(ack, "ERR")
        assert err[2] == f"MSH^1^{field}" and err[3].startswith("103^") and f"MSH-{field}" in err[8]
    assert queued(vhost_of_its_own) == []
    assert [d["ack"] for d in audit_details(audit_dsn)] == ["CR", "CR"]


def test_a_start_block_inside_a_frame_drops_that_frame_and_answers_the_next(
    vhost_of_its_own: str, audit_dsn: str
) -> None:
    with running(settings_for(vhost_of_its_own, audit_dsn)) as listener:
        client = Client(listener.port, timeout=10)
        client.sock.sendall(b"\x0b" + adt("NEST-1")[:50])
        ack = client.ask(adt("NEST-2"))
    assert segment(ack, "MSA")[1:3] == ["AA", "NEST-2"]
    assert [m.body for m in queued(vhost_of_its_own)] == [adt("NEST-2")]


def test_idle_connections_from_one_address_cannot_lock_out_another(vhost: str, tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    settings = settings_for(vhost, dsn, mllp_max_connections_per_peer=3)
    with running(settings) as listener:
        idle = [Client(listener.port) for _ in range(3)]
        time.sleep(0.2)
        fourth = Client(listener.port, timeout=5)
        assert fourth.closed()  # over the cap of its address
        engine = Client(listener.port, source="127.0.0.2")  # the hospital's engine: another address
        assert segment(engine.ask(adt("ENGINE")), "MSA")[1] == "AA"
        idle[0].close()
        time.sleep(0.2)
        assert segment(Client(listener.port).ask(adt("UNDER-CAP")), "MSA")[1] == "AA"  # the same address, under it
        assert listener.refused_connections == 1


def test_a_new_connection_without_a_frame_is_closed_after_the_frame_timeout_not_the_idle_one(
    vhost: str, tmp_path: Path
) -> None:
    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    settings = settings_for(vhost, dsn, mllp_frame_timeout_seconds=1, mllp_idle_timeout_seconds=300)
    with running(settings) as listener:
        talking = Client(listener.port, timeout=5)
        assert segment(talking.ask(adt("TALKED")), "MSA")[1] == "AA"
        started = time.monotonic()
        silent = Client(listener.port, timeout=10)
        assert silent.closed() and time.monotonic() - started < 4
        talking.sock.settimeout(1.5)
        with pytest.raises(TimeoutError):  # a connection that has sent a frame waits the idle timeout
            talking.sock.recv(1)
        assert segment(talking.ask(adt("AGAIN")), "MSA")[1] == "AA"


@pytest.mark.parametrize(
    "resend",
    [
        lambda raw: raw.replace(b"\r", b"\r\n"),  # CRLF
        lambda raw: raw.replace(b"|20261120140512|", b"|20261120150000|", 1),  # MSH-7 re-stamped
        lambda raw: raw.replace(b"\rEVN|", b"|\rEVN|", 1),  # a trailing separator
    ],
)
def test_a_resend_changed_only_in_form_gets_the_first_ack_and_is_not_published_again(
    vhost_of_its_own: str, audit_dsn: str, resend
) -> None:
    first_copy = adt("FORM")
    again_copy = resend(first_copy)
    assert again_copy != first_copy
    with running(settings_for(vhost_of_its_own, audit_dsn)) as listener:
        client = Client(listener.port)
        first = client.ask(first_copy)
        again = client.ask(again_copy)
    assert segment(first, "MSA")[1] == "AA" and again == first
    assert len(queued(vhost_of_its_own)) == 1
    assert [d.get("resent", False) for d in audit_details(audit_dsn)] == [False, True]


@pytest.mark.parametrize("version", ["2.8.1", "2.9"])
def test_every_version_the_reader_reads_is_taken(vhost: str, tmp_path: Path, version: str) -> None:
    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    with running(settings_for(vhost, dsn)) as listener:
        ack = Client(listener.port).ask(adt(f"V{version}", version=version))
    assert segment(ack, "MSA")[1:3] == ["AA", f"V{version}"] and segment(ack, "MSH")[11] == version
