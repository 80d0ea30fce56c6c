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
