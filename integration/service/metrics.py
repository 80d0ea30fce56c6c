"""The service's Prometheus metrics (served on /metrics by `integration.adapters.health`).

Counters only ever grow; an operator alerts on their rate. Labels are flows, outcomes, reason
codes, queue names, states, rules and dependency names: never an id or anything from a message.

Two kinds of source:

- events, counted where they happen (a delivery taken, a message settled, a batch, a resend, an
  audit record written);
- state held in the audit store or the broker (messages awaiting an ack, requests overdue, dead
  letters waiting, the chain's head), read by `integration.service.metrics_refresh` from the consumer
  loop every `REFRESH_SECONDS` — never on the HTTP thread, never while the store is known to be down.
  A failed read leaves the gauge at its last value and counts `rehab_metrics_refresh_failures`;
  `rehab_metrics_refreshed_timestamp_seconds` says how fresh each source's gauges are.

The alerting rules (deploy/prometheus/alerts.yml) and the dashboard (deploy/grafana/dashboard.json)
name these metrics; tests/test_deploy_observability.py keeps the three in step.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REFRESH_SECONDS = 15.0  # how often the consumer loop refreshes the store- and broker-derived gauges

# -- inbound messages (events) ---------------------------------------------------------------------
RECEIVED = Counter(
    "rehab_messages_received", "Deliveries taken from a flow's inbound queue (redeliveries too)", ["flow"]
)
MESSAGES = Counter(
    "rehab_messages",
    "Inbound messages settled, by flow and outcome (processed, replayed-outputs and duplicate-in-batch: "
    "duplicates, dead-lettered: rejected, failed: back to the queue)",
    ["flow", "outcome"],
)
DEAD_LETTERS = Counter("rehab_dead_letters", "Messages we dead-lettered, by flow and reason code", ["flow", "reason"])
REUSED_MESSAGE_IDS = Counter(
    "rehab_reused_message_ids", "Messages refused because their message-id was used for other content", ["flow"]
)
PROCESSING_SECONDS = Histogram(
    "rehab_processing_seconds",
    "Seconds from the start of a message's batch to its settlement (ack or requeue), by flow",
    ["flow"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
BATCH_SECONDS = Histogram("rehab_batch_seconds", "Time to settle one batch of deliveries")
BATCH_SIZE = Histogram(
    "rehab_batch_size", "Deliveries per batch settled together", buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500)
)
IN_FLIGHT = Gauge("rehab_messages_in_flight", "Deliveries taken from the broker and not yet acked or requeued")
WAITING_MESSAGES = Gauge("rehab_messages_held", "Messages held unacked while a dependency is unavailable")

# -- dependencies ------------------------------------------------------------------------------
DEPENDENCY_UP = Gauge(
    "rehab_dependency_up",
    "1 while a dependency answers, 0 while we wait for it (broker, audit-store, mappings, queue <name>)",
    ["dependency"],
)

READY = Gauge("rehab_ready", "1 while /readyz answers 200 (every dependency available), else 0")
LOOP_BEAT = Gauge(
    "rehab_consumer_loop_beat_timestamp_seconds", "Unix time the consumer loop last turned (/livez fails after 60 s)"
)

# -- our MedCom messages (reliable messaging) ---------------------------------------------------
OUTBOUND = Gauge(
    "rehab_outbound_messages",
    "Our MedCom messages by state, from the audit store: awaiting (an ack), failed (an error ack) and "
    "gave-up (no ack after the last resend); failed and gave-up are flagged for a person",
    ["state"],
)
OUTBOUND_RESENT = Counter("rehab_outbound_resent", "Our MedCom messages sent again for want of an ack")
OUTBOUND_GAVE_UP = Counter("rehab_outbound_gave_up", "Our MedCom messages flagged for a person after the last resend")

# -- deadlines -----------------------------------------------------------------------------------
HOTLINE_OVERDUE = Gauge(
    "rehab_hotline_overdue", "Unanswered hotline requests past INTEGRATION_HOTLINE_OVERDUE_HOURS opening hours"
)
PATHWAY_OVERDUE = Gauge(
    "rehab_pathway_overdue",
    "Rehabilitation courses past a deadline of the pathway, by rule (visitation, ack-missing, ack-error, "
    "closing-report, hotline-hours, missed-referral)",
    ["rule"],
)

# -- the broker's dead-letter queues -------------------------------------------------------------
DEAD_LETTER_QUEUE = Gauge(
    "rehab_dead_letter_queue_messages",
    "Messages ready in each dead-letter queue (and rehab.inbound.refused), by a passive queue declare",
    ["queue"],
)

INBOUND_QUEUE = Gauge(
    "rehab_inbound_queue_messages",
    "Messages ready (not yet delivered to a consumer) in each consumed flow's inbound queue, by a passive declare",
    ["queue"],
)

# -- the audit log ---------------------------------------------------------------------------------
AUDIT_RECORDS = Counter("rehab_audit_records", "Records appended to the audit chain by this process")
AUDIT_HEAD = Gauge("rehab_audit_chain_head", "Sequence number of the audit chain's last record (its head)")

# -- the refresher itself -----------------------------------------------------------------------
REFRESH_FAILURES = Counter(
    "rehab_metrics_refresh_failures",
    "Refreshes of store- or broker-derived gauges that failed (the gauges keep their last value), by source",
    ["source"],
)
REFRESHED = Gauge(
    "rehab_metrics_refreshed_timestamp_seconds",
    "Unix time of the last successful refresh of a source's gauges (audit-store, broker, pathway)",
    ["source"],
)

# -- the MLLP listener (`integration mllp`, its own process and /metrics) ----------------------------
MLLP_MESSAGES = Counter(
    "rehab_mllp_messages",
    "HL7 v2 messages answered by the MLLP listener, by trigger (MSH-9.2 when one the listener takes, else "
    "'other') and acknowledgement code decided (AA/AE/AR, CA/CE/CR; also when MSH-15 asked for no ack)",
    ["trigger", "ack"],
)
MLLP_CONNECTIONS = Counter(
    "rehab_mllp_connections",
    "Connections to the MLLP listener by outcome: accepted, or refused (over mllp_max_connections, or stopping)",
    ["outcome"],
)
MLLP_OPEN_CONNECTIONS = Gauge("rehab_mllp_connections_open", "Connections to the MLLP listener open now")
MLLP_FRAMES_REFUSED = Counter(
    "rehab_mllp_frames_refused",
    "MLLP frames or connections cut off without an answer or with AR 104, by reason: too-large, no-msh, "
    "frame-timeout (slowloris), unfinished (closed mid-frame), outside-frame (bytes outside any frame), "
    "restarted (a start block inside a frame)",
    ["reason"],
)
