"""The service's Prometheus metrics (served on /metrics by `integration.adapters.health`).

Counters only ever grow; an operator alerts on their rate. Labels are flows, outcomes, reason
codes and dependency names: never an id or anything from a message.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES = Counter("rehab_messages", "Inbound messages settled, by flow and outcome", ["flow", "outcome"])
DEAD_LETTERS = Counter("rehab_dead_letters", "Messages we dead-lettered, by flow and reason code", ["flow", "reason"])
REUSED_MESSAGE_IDS = Counter(
    "rehab_reused_message_ids", "Messages refused because their message-id was used for other content", ["flow"]
)
DEPENDENCY_UP = Gauge("rehab_dependency_up", "1 while a dependency answers, 0 while we wait for it", ["dependency"])
WAITING_MESSAGES = Gauge("rehab_messages_held", "Messages held unacked while a dependency is unavailable")
BATCH_SECONDS = Histogram("rehab_batch_seconds", "Time to settle one batch of deliveries")
