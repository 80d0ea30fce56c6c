"""The topology as data: the policy the definitions file carries agrees with the queues `topology apply` declares."""

from __future__ import annotations

import re

from integration.topology import FLOWS, USERS, definitions, queues


def test_the_inbound_limits_policy_covers_every_inbound_queue_and_says_what_their_arguments_say() -> None:
    (policy,) = definitions(dict.fromkeys(USERS, "hash"))["policies"]
    assert policy["name"] == "rehab-inbound-limits" and policy["apply-to"] == "queues"
    declared = {q.name: q.arguments for q in queues()}
    matched = {name for name in declared if re.fullmatch(policy["pattern"], name)}
    assert matched == {f.queue for f in FLOWS}  # every flow's inbound queue, no dead-letter queue
    for name in matched:  # `topology apply` sets the same limits as queue arguments (AMQP cannot set a policy)
        arguments = declared[name]
        assert arguments["x-max-length"] == policy["definition"]["max-length"]
        assert arguments["x-overflow"] == policy["definition"]["overflow"]
        assert arguments["x-delivery-limit"] == policy["definition"]["delivery-limit"]


def test_only_each_sender_writes_its_inbound_exchange_and_no_one_the_retired_one() -> None:
    from integration.topology import ADMIN_USER, RETIRED_EXCHANGES, SENDERS

    inbound = [s.exchange for s in SENDERS] + list(RETIRED_EXCHANGES)
    for user, (_, configure, write, _) in USERS.items():
        if user == ADMIN_USER:
            continue
        may = {exchange for exchange in inbound if re.fullmatch(write, exchange) or re.fullmatch(configure, exchange)}
        assert may == {s.exchange for s in SENDERS if s.user == user}, user  # rehab-service: none of them


def test_every_outbound_route_goes_to_a_declared_topic_exchange_the_service_may_write() -> None:
    from integration.topology import ROUTES, SERVICE_USER, UNROUTED_EXCHANGE, exchanges

    declared = {e.name: e for e in exchanges()}
    _, _, write, _ = USERS[SERVICE_USER]
    for route in ROUTES:
        exchange = declared[route.exchange]
        assert exchange.type == "topic" and exchange.arguments == {"alternate-exchange": UNROUTED_EXCHANGE}
        assert re.fullmatch(write, route.exchange), route
    assert {r.exchange for f in FLOWS for r in f.routes} <= {r.exchange for r in ROUTES}


def test_a_route_fills_its_routing_key_template() -> None:
    from integration.topology import ACKNOWLEDGEMENT, REFERRAL_TO_MUNICIPALITY, STATUS_TO_GP

    assert REFERRAL_TO_MUNICIPALITY.routing_key(code="851") == "referral.municipality.851"
    assert STATUS_TO_GP.routing_key(ydernummer="012345") == "gp.status.012345"
    assert (ACKNOWLEDGEMENT.exchange, ACKNOWLEDGEMENT.routing_key(sor="434751000016002")) == (
        "rehab.ack",
        "ack.434751000016002",
    )


def test_a_gp_may_send_its_referral_to_a_queue_of_its_own_and_no_other_sender_may() -> None:
    """The agreement: "Ved senere opstået behov kan egen læge henvise til kommunal rehabilitering"; the
    referral to municipal rehabilitation comes "fra både hospital og almen praksis"."""
    from integration.topology import FLOWS_BY_NAME, REFERRAL_TO_MUNICIPALITY, SENDERS, bindings

    flow = FLOWS_BY_NAME["gp-referral"]
    assert (flow.queue, flow.dead_letter_queue) == ("rehab.gp-referrals", "rehab.gp-referrals.dlq")
    assert flow.routes == (REFERRAL_TO_MUNICIPALITY,)  # a GP refers to the municipality only
    may_send = {s.kind for s in SENDERS if "gp-referral" in s.flows}
    assert may_send == {"gp"}
    senders_bound = {
        b.exchange for b in bindings() if b.queue == flow.queue and b.exchange.startswith("rehab.inbound.")
    }
    assert senders_bound == {"rehab.inbound.gp"}
    assert {s.kind: s.flows for s in SENDERS} == {
        "hospital": ("discharge", "hotline", "acknowledgement"),
        "municipality": ("hotline", "closing", "acknowledgement"),
        "gp": ("hotline", "gp-referral", "acknowledgement"),
    }


def test_every_flow_queue_is_replayable_dead_lettered_and_read_by_the_service() -> None:
    from integration.topology import DEAD_LETTER_EXCHANGE, REPLAY_EXCHANGE, SERVICE_USER, bindings

    bound = {(b.exchange, b.queue, b.routing_key) for b in bindings()}
    _, _, _, read = USERS[SERVICE_USER]
    assert [f.name for f in FLOWS] == ["discharge", "hotline", "closing", "acknowledgement", "gp-referral"]
    for flow in FLOWS:
        assert (REPLAY_EXCHANGE, flow.queue, flow.name) in bound
        assert (DEAD_LETTER_EXCHANGE, flow.dead_letter_queue, flow.name) in bound
        assert re.fullmatch(read, flow.queue) and re.fullmatch(read, flow.dead_letter_queue)


def test_the_hospitals_follow_up_plan_to_the_gp_goes_out_from_the_discharge_queue() -> None:
    """A hospital's events share one queue (a patient's events stay in order); the follow-up plan is one of them."""
    from integration.topology import FLOWS_BY_NAME, REFERRAL_TO_HOSPITAL, REFERRAL_TO_MUNICIPALITY, STATUS_TO_GP

    assert FLOWS_BY_NAME["discharge"].routes == (REFERRAL_TO_MUNICIPALITY, REFERRAL_TO_HOSPITAL, STATUS_TO_GP)


def test_the_committed_definitions_file_is_the_topology() -> None:
    """deploy/rabbitmq/definitions.json is generated from the topology (`integration topology export --out …`)."""
    from integration.cli.ops import definitions_document
    from integration.config import PROJECT_ROOT

    committed = (PROJECT_ROOT / "deploy" / "rabbitmq" / "definitions.json").read_bytes()
    assert committed == definitions_document(), (
        "run: integration topology export --out deploy/rabbitmq/definitions.json"
    )
