"""The gauges whose truth is in the audit store or the broker, refreshed from the consumer loop.

`GaugeRefresher` is called between batches (`ConsumerService`, every `metrics.REFRESH_SECONDS`), on
the consumer's own connection: never on the HTTP thread, so a scrape costs neither a query nor a
broker round trip and cannot hang on a dependency. Each source is refreshed on its own; one that
fails (or is skipped: the audit store while the consumer knows it is down) leaves its gauges at
their last value, counts `rehab_metrics_refresh_failures{source}`, and does not stop the others —
nor the consumer: a refresh never raises but for the broker connection lost (ConnectionLost, which
the consumer reconnects from anyway).

Sources:

- `audit-store`: our MedCom messages by state (`rehab_outbound_messages`), unanswered hotline requests
  past the limit (`rehab_hotline_overdue`: the domain's rule `overdue_hours`, counted only — noting
  and auditing them stays with `integration hotline pending`), the chain's head (`rehab_audit_chain_head`).
  Only counts leave the store: no patient's data is read out, so nothing here is an audited read.
- `broker`: the messages ready in each dead-letter queue (`rehab_dead_letter_queue_messages`) and in
  each consumed inbound queue (`rehab_inbound_queue_messages`), by a passive declare
  (`RabbitConnection.queue_depths`).
- `pathway`: courses past a deadline of the pathway, by rule (`rehab_pathway_overdue`), from
  `integration.service.pathway_watch.overdue_counts` (wired by `bootstrap.pathway_overdue`). It reads every
  open course (and the hotlines' opening hours from the mappings), so it runs every `pathway_every` seconds
  (60), not at every refresh.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import structlog

from integration.domain.course import OutboundState
from integration.domain.hotline import Hotline, overdue_hours
from integration.errors import ConnectionLost
from integration.log import one_line
from integration.service import metrics
from integration.service.pathway_watch import OVERDUE_RULES

log = structlog.get_logger("integration.metrics")

# The states counted: awaiting an ack, and the two a person must follow up (`OutboundState.needing_a_person`).
# Acknowledged messages only ever grow in number: counting them would be a cost without an alert.
OUTBOUND_STATES = (OutboundState.AWAITING, *OutboundState.needing_a_person())

# The rules of `pathway_watch.overdue_counts`; each is set (0 when absent from an answer) so that a rule that
# clears goes back to 0 instead of keeping its last count.
PATHWAY_RULES = OVERDUE_RULES
PATHWAY_SHARE = 0.05  # at most this share of the time counting the pathway apart (pathway_every lengthens)


class CountingStore(Protocol):
    """What the refresher reads of the audit store: counts and the head, no patient's data."""

    def outbound_count(self, state: OutboundState) -> int: ...

    def open_requests(self) -> Sequence[Any]: ...

    def head(self) -> tuple[int, str]: ...


class QueueDepths(Protocol):
    """The broker connection's passive declares (`integration.adapters.rabbitmq.RabbitConnection`)."""

    def queue_depths(self, names: Sequence[str]) -> dict[str, int | None]: ...


PathwayCounts = Callable[[datetime], Mapping[str, int]]


@dataclass
class GaugeRefresher:
    """Refresh the store- and broker-derived gauges. `store_up` says whether the consumer believes the
    audit store answers (`Health.available`): while it does not, the store is not asked (a query would
    only wait out its timeout in the consumer loop) and the refresh counts as failed.

    `dead_letter_queues`: the queues whose ready messages are counted (the consumed flows' `.dlq` queues
    and `rehab.inbound.refused`); `inbound_queues`: the consumed flows' queues. `hotline_limit`:
    INTEGRATION_HOTLINE_OVERDUE_HOURS. `pathway`: the pathway's overdue counts at a moment, or None while it
    is not wired (the gauge stays empty); asked every `pathway_every` seconds (`monotonic`: the clock of that)."""

    store: CountingStore
    hotlines: Mapping[str, Hotline]
    hotline_limit: float
    dead_letter_queues: Sequence[str]
    clock: Callable[[], datetime]
    store_up: Callable[[], bool] = lambda: True
    pathway: PathwayCounts | None = None
    inbound_queues: Sequence[str] = ()
    pathway_every: float = 60.0
    monotonic: Callable[[], float] = time.monotonic
    pathway_apart: bool = False  # count the pathway in a thread of its own (its own store handle: bootstrap)
    _pathway_thread: threading.Thread | None = field(default=None, init=False, repr=False)
    _pathway_next: float = field(default=float("-inf"), init=False, repr=False)
    _failing: set[str] = field(default_factory=set, init=False, repr=False)  # logged once until it recovers

    def __call__(self, broker: QueueDepths) -> None:
        now = self.clock()
        self._source("audit-store", lambda: self._from_store(now))
        self._source("broker", lambda: self._from_broker(broker))
        if self.pathway is not None and self.monotonic() >= self._pathway_next:
            # Where the pathway's deadlines become gauges (pathway_watch.overdue_counts, bootstrap.pathway_overdue).
            self._pathway_next = self.monotonic() + self.pathway_every
            pathway = self.pathway
            if not self.pathway_apart:
                self._source("pathway", lambda: self._from_pathway(pathway, now))
            elif self._pathway_thread is None or not self._pathway_thread.is_alive():  # one count at a time
                self._pathway_thread = threading.Thread(target=self._count_apart, args=(pathway, now), daemon=True)
                self._pathway_thread.start()

    def _count_apart(self, pathway: PathwayCounts, now: datetime) -> None:
        """The pathway's count in its thread; the next one no sooner than PATHWAY_SHARE allows: a count that took
        seconds (tens of thousands of open courses) may use at most that share of the time, so that it never
        takes the consumer loop's core (the interpreter's lock) for long."""
        started = self.monotonic()
        self._source("pathway", lambda: self._from_pathway(pathway, now))
        took = self.monotonic() - started
        self._pathway_next = max(self._pathway_next, started + took / PATHWAY_SHARE)

    def _source(self, source: str, refresh: Callable[[], None]) -> None:
        if source in ("audit-store", "pathway") and not self.store_up():
            metrics.REFRESH_FAILURES.labels(source).inc()
            return
        try:
            refresh()
        except ConnectionLost:
            raise
        except Exception as exc:  # the store or the broker failed us, or a defect: the last values stay
            metrics.REFRESH_FAILURES.labels(source).inc()
            if source not in self._failing:  # one line when it starts failing, not one every refresh
                self._failing.add(source)
                log.warning("metrics refresh failed; gauges keep their last value", source=source, reason=one_line(exc))
            return
        if source in self._failing:
            self._failing.discard(source)
            log.info("metrics refresh works again", source=source)
        metrics.REFRESHED.labels(source).set(time.time())

    def _from_store(self, now: datetime) -> None:
        counts = {state: self.store.outbound_count(state) for state in OUTBOUND_STATES}
        overdue = sum(
            1
            for pending in self.store.open_requests()
            if overdue_hours(self.hotlines, pending.request.department, pending.received_at, now, self.hotline_limit)
            is not None
        )
        seq, _ = self.store.head()
        for state, count in counts.items():  # set only once every read succeeded: all fresh, or all as before
            metrics.OUTBOUND.labels(state.value).set(count)
        metrics.HOTLINE_OVERDUE.set(overdue)
        metrics.AUDIT_HEAD.set(seq)

    def _from_broker(self, broker: QueueDepths) -> None:
        depths = broker.queue_depths([*self.dead_letter_queues, *self.inbound_queues])
        for queue, depth in depths.items():
            gauge = metrics.DEAD_LETTER_QUEUE if queue in self.dead_letter_queues else metrics.INBOUND_QUEUE
            if depth is None:  # no such queue (topology not applied) or not ours: not a depth of 0
                with suppress(KeyError):
                    gauge.remove(queue)
            else:
                gauge.labels(queue).set(depth)
        missing = [q for q, d in depths.items() if d is None]
        if missing:
            raise LookupError(f"cannot count queue(s) {', '.join(missing)}: missing or not ours (topology apply)")

    def _from_pathway(self, pathway: PathwayCounts, now: datetime) -> None:
        counts = dict(pathway(now))
        for rule in sorted(set(PATHWAY_RULES) | set(counts)):
            metrics.PATHWAY_OVERDUE.labels(rule).set(counts.get(rule, 0))
