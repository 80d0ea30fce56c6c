"""The consumer loop on RabbitMQ: consume each flow's inbound queue, process in batches, ack last.

Deliveries that arrive together (up to the prefetch) are processed as one batch, so the audit
log's transactions are shared; each delivery is still acked only after its own outputs are
confirmed and its records committed. A redelivered message is processed on its own, so that one
which troubles the consumer cannot take the others of its batch down with it. One canonical log
line per message (flow, correlation id, outcome, outputs, milliseconds).

Outages never spend a message's delivery attempts:

- the audit store down, or the broker refusing a publish (`Transient`): the batch is held unacked
  — not returned to its queue — and retried with backoff until the dependency answers; one log
  line when the wait starts, one every minute while it lasts, one when it ends; `/readyz` fails
  meanwhile (`integration.adapters.health`). Heartbeats go on, so the broker keeps the connection.
- the broker connection lost (`ConnectionLost`): reconnected with backoff, to the next node when
  several are configured; the unacked messages come back from the broker.
- a queue we may not consume (`QueueRefused`: missing, or not ours): one line naming it and what
  to do, `/readyz` failing meanwhile, and tried again with backoff.

Whatever ends a connection's service, the next one waits a little longer (1 s doubling to 30 s,
afresh after a minute of consuming), so that a fault that recurs at once is no hot loop. While no
message arrives, the audit store is asked every few seconds whether it answers, so that `/readyz`
tells of an outage before a message meets it.

A delivery a flow refuses for want of an earlier message (`Rejected.awaits_earlier_message`: a visitation
before its discharge) is held unacked and tried again for `wait_for_earlier` seconds (10) before it is
refused (decision 31): with competing consumers, the earlier message may be in another process's batch.

A batch's deliveries are acked with one `multiple` ack when they are every delivery in hand up to the highest
of them, else one by one (decision 29); the "acked" audit records go with the next batch's "published"
records, or are written when the consumer is idle or stops.

No exception from a message ever ends the loop: a defect is logged with its traceback and the
batch goes back to its queue. `stop()` (SIGTERM, SIGINT, SIGHUP) lets the batch in hand finish and be
acked, then closes. Between batches, `periodic` (the resend of our unacknowledged messages) runs
every `period` seconds, and `refresh` (the gauges read from the audit store and the broker,
`integration.service.metrics_refresh`) every `refresh_every` seconds, on this loop's connection; a
refresh that fails is counted (`rehab_metrics_refresh_failures`) and holds no message.

Counted here (`integration.service.metrics`): deliveries received and in flight, each message's
outcome and time to settle per flow, each batch's size and time.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import structlog
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_when_event_set, wait_exponential_jitter

from integration.adapters.amqp_properties import text_problem
from integration.adapters.health import Health
from integration.adapters.rabbitmq import (
    BrokerRefused,
    BrokerSettings,
    QueueRefused,
    RabbitConnection,
    Received,
    masked_url,
    translate_lost,
)
from integration.errors import ConfigurationError, ConnectionLost, Transient
from integration.log import one_line
from integration.service import metrics
from integration.service.audit_chain import AuditEntry
from integration.service.ports import Bus
from integration.service.processor import Delivery, Disposition, Held, Outcome, Processor, log_context
from integration.topology import REPLAY_EXCHANGE, Flow

log = structlog.get_logger("integration.consumer")
POLL_SECONDS = 0.2
ORIGINAL_SOURCE = "x-rehab-original-source"  # set by `integration dlq replay`
STILL_WAITING_EVERY = 60.0  # seconds between "still waiting" lines during an outage
PROBE_EVERY = 5.0  # seconds without a word from the audit store before the idle consumer asks it
HEALTHY_AFTER = 60.0  # seconds of consuming after which a failure is retried at the first backoff again
WAIT_FOR_EARLIER = 10.0  # seconds a delivery refused for want of an earlier message is held and tried again
WAIT_STEPS = (0.1, 0.25, 0.5, 1.0, 2.0)  # seconds between its tries (then the last, until WAIT_FOR_EARLIER)
STORE = "audit-store"


class ConsumerService:
    def __init__(
        self,
        broker: BrokerSettings,
        flows: Sequence[Flow],
        make_processor: Callable[[Bus], Processor],
        reconnect_max_wait: float = 10.0,
        periodic: Callable[[Bus], object] | None = None,
        period: float = 60.0,
        health: Health | None = None,
        wait_initial: float = 0.5,
        wait_max: float = 15.0,
        retry_initial: float = 1.0,
        retry_max: float = 30.0,
        probe_every: float = PROBE_EVERY,
        refresh: Callable[[RabbitConnection], object] | None = None,
        refresh_every: float = metrics.REFRESH_SECONDS,
        wait_for_earlier: float = WAIT_FOR_EARLIER,
    ) -> None:
        self._broker = broker
        self._flows = flows
        self._make_processor = make_processor
        self._reconnect_max_wait = reconnect_max_wait
        self._periodic = periodic
        self._period = period
        self._next_periodic = 0.0
        self._stopping = threading.Event()
        self._in_hand: list[tuple[Flow, Received]] = []
        self._unsettled: set[int] = set()  # delivery tags taken and neither acked nor requeued (multiple acks)
        self._carried_acks: list[AuditEntry] = []  # "acked" records a lost connection's processor could not write
        self._waiting: list[_Waiting] = []  # deliveries held for an earlier message (decision 31)
        self._first_tried: dict[int, float] = {}  # delivery tag → when it was first processed (time.monotonic)
        self._tries: dict[int, int] = {}  # delivery tag → how often it was held for an earlier message
        self._wait_for_earlier = wait_for_earlier
        self.health = health or Health()
        self._wait_initial = wait_initial
        self._wait_max = wait_max
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._probe_every = probe_every
        self._next_probe = 0.0
        self._refresh = refresh
        self._refresh_every = refresh_every
        self._next_refresh = 0.0
        self._consuming_since: float | None = None
        self._connected_once = False  # `_connect`: a refusal before it is a configuration error
        self.handled = 0

    def stop(self) -> None:
        """Finish the batch in hand, ack it, stop consuming and close. Safe from a signal handler or thread."""
        self._stopping.set()

    @property
    def stopping(self) -> threading.Event:
        return self._stopping

    def run(self) -> None:
        delay = self._retry_initial
        while not self._stopping.is_set():
            try:
                connection = self._connect()
            except ConnectionLost:
                break  # stopping while the broker was away
            try:
                self._serve(connection)
            except QueueRefused as exc:
                if self.health.down(f"queue {exc.queue}", str(exc)):
                    log.error("cannot consume a queue: retrying with backoff", queue=exc.queue, reason=one_line(exc))
            except ConnectionLost as exc:
                self._broker_lost(str(exc))
            except Exception as exc:  # a defect in the loop itself: never end the service for it
                log.error("consumer loop failed; reconnecting", error=type(exc).__name__, exc_info=exc)
                self._broker_lost(f"consumer loop failed: {type(exc).__name__}")
            finally:
                if self._waiting:
                    log.info("deliveries held for an earlier message go back to their queue", held=len(self._waiting))
                self._in_hand.clear()  # unacked: the broker redelivers them
                self._unsettled.clear()
                self._waiting.clear()
                self._first_tried.clear()
                self._tries.clear()
                connection.close()
                metrics.IN_FLIGHT.set(0)
            if self._consuming_since is not None and time.monotonic() - self._consuming_since >= HEALTHY_AFTER:
                delay = self._retry_initial
            self._consuming_since = None
            self._pause(delay * random.uniform(1.0, 1.2))  # jitter: consumers restarted together spread out
            delay = min(delay * 2, self._retry_max)

    def _broker_lost(self, reason: str) -> None:
        if self.health.down("broker", reason):
            log.warning("broker connection lost; reconnecting", reason=one_line(reason))

    def _connect(self) -> RabbitConnection:
        """Connect, retrying with backoff what can heal (a node down or unreachable, a timeout): one line when
        the wait begins, one a minute, each naming the cause.

        The broker refusing our login or vhost (`BrokerRefused`) before we ever connected is a configuration
        error (ConfigurationError: `run` exits 3 with one line) — retrying a wrong password helps nobody.
        Once this service has been connected, the same refusal is retried like an outage (a password rotated
        on the broker before the service's settings, a vhost being re-created): the service must not stop
        consuming for good on what an operator is likely mending, and every "still waiting" line names it."""
        noted = [0.0]

        def healable(exc: BaseException) -> bool:
            return isinstance(exc, ConnectionLost) and (self._connected_once or not isinstance(exc, BrokerRefused))

        def waiting(state: RetryCallState) -> None:
            reason = one_line(state.outcome.exception()) if state.outcome else None
            if state.attempt_number == 1 or time.monotonic() - noted[0] >= STILL_WAITING_EVERY:
                noted[0] = time.monotonic()
                what = "waiting for the broker" if state.attempt_number == 1 else "still waiting for the broker"
                log.warning(what, broker=masked_url(self._broker.url), attempt=state.attempt_number, reason=reason)

        retrying = Retrying(
            retry=retry_if_exception(healable),
            wait=wait_exponential_jitter(multiplier=0.2, max=self._reconnect_max_wait, jitter=0.2),
            stop=stop_when_event_set(self._stopping),
            sleep=self._pause,
            before_sleep=waiting,
            reraise=True,
        )
        try:
            connection: RabbitConnection = retrying(RabbitConnection, self._broker)
        except BrokerRefused as exc:
            if self._connected_once:
                raise  # stopping while refused: as for any other wait
            raise ConfigurationError(f"{exc} ({masked_url(self._broker.url)})") from exc
        self._connected_once = True
        away = self.health.up("broker")
        if away is not None:  # a change: not every reconnection while a queue is missing
            log.info("connected to the broker", node=connection.node, after_s=round(away, 1))
        return connection

    def _take(self, flow: Flow, message: Received) -> None:
        self._in_hand.append((flow, message))
        self._unsettled.add(message.delivery_tag)
        taken(flow)

    def _pause(self, seconds: float) -> None:
        """Wait, or until stopped; still alive for /healthz meanwhile (waiting out a fault is the loop's work)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0 and not self._stopping.is_set():
            self.health.beat()
            self._stopping.wait(min(left, 1.0))

    def _serve(self, connection: RabbitConnection) -> None:
        processor = self._make_processor(connection)
        processor.carry_acks(self._carried_acks)  # the last connection's, not written yet
        self._carried_acks = []
        try:
            for flow in self._flows:
                connection.consume(flow.queue, partial(self._take, flow))
                if self.health.up(f"queue {flow.queue}") is not None:
                    log.info("queue available again", queue=flow.queue)
            self._consuming_since = time.monotonic()
            log.info("consuming", queues=[f.queue for f in self._flows])
            while not self._stopping.is_set():
                self.health.beat()
                connection.process_events(0 if self._in_hand else self._idle_wait())
                self._take_back_waiting()
                if self._in_hand:
                    in_hand, self._in_hand = self._in_hand, []
                    for batch in _batches(in_hand):
                        self._handle(connection, processor, batch)
                else:
                    if self.health.available(STORE):  # while it is down, the probe asks it; no line per loop
                        self._record_acks(processor)
                    self._probe_when_idle(processor)
                self._run_periodic(connection)
                self._refresh_metrics(connection)
        except Exception as exc:
            if translate_lost(exc):
                raise ConnectionLost(f"{type(exc).__name__}: {exc}") from None
            raise
        finally:  # the acks the broker was told of are recorded, now or by the next connection's processor
            self._record_acks(processor)
            self._carried_acks = processor.unrecorded_acks()

    def _idle_wait(self) -> float:
        """Seconds to wait for deliveries: the poll, or less when a held delivery is due sooner."""
        due = min((w.due for w in self._waiting), default=None)
        return POLL_SECONDS if due is None else max(0.0, min(POLL_SECONDS, due - time.monotonic()))

    def _take_back_waiting(self) -> None:
        """Deliveries held for an earlier message whose time to try again has come join the messages in hand."""
        now = time.monotonic()
        due = [w for w in self._waiting if w.due <= now]
        if due:
            self._waiting = [w for w in self._waiting if w.due > now]
            self._in_hand += [(w.flow, w.message) for w in due]

    def _record_acks(self, processor: Processor) -> None:
        """Write the "acked" records not written with a batch (idle, or stopping); an outage keeps them for later."""
        try:
            processor.flush_acknowledged()
        except Transient as exc:
            log.warning("acks not audited yet; kept for the next try", reason=one_line(exc))

    def _probe_when_idle(self, processor: Processor) -> None:
        """Ask the audit store whether it answers, when nothing else has for `probe_every` seconds (readiness)."""
        if time.monotonic() < self._next_probe:
            return
        try:
            processor.probe()
        except Transient as exc:
            self._dependency_down(exc, held=0)
        except Exception as exc:  # not an outage we know: readiness still fails, with the traceback once
            if translate_lost(exc):
                raise
            if self.health.down(STORE, f"the probe failed: {type(exc).__name__}"):
                log.error(f"{STORE} probe failed", error=type(exc).__name__, exc_info=exc)
        else:
            self._store_up()
        self._next_probe = time.monotonic() + self._probe_every

    def _dependency_down(self, exc: Transient, held: int) -> bool:
        """Mark the dependency down; one line when that is news. True when it was."""
        if not self.health.down(exc.dependency, str(exc)):
            return False
        what = "holding messages unacked until it is back" if held else "not ready until it answers"
        log.warning(f"{exc.dependency} unavailable: {what}", held=held, reason=one_line(exc))
        return True

    def _store_up(self) -> None:
        away = self.health.up(STORE)
        if away is not None:
            log.info(f"{STORE} available again: resuming", waited_s=round(away, 1))

    def _run_periodic(self, connection: RabbitConnection) -> None:
        if self._periodic is None or time.monotonic() < self._next_periodic:
            return
        self._next_periodic = time.monotonic() + self._period
        try:
            self._periodic(connection)
        except ConnectionLost:
            raise
        except Transient as exc:  # the store or a publish failed: the next run tries again
            log.warning("periodic job failed; next run retries", reason=one_line(exc))
        except Exception as exc:  # a defect: logged, and the next run tries again
            if translate_lost(exc):
                raise
            log.error("periodic job failed", error=type(exc).__name__, exc_info=exc)

    def _refresh_metrics(self, connection: RabbitConnection) -> None:
        """Refresh the store- and broker-derived gauges when due. The refresher counts its own failures; what
        escapes it (a defect) is counted and logged here: a refresh never ends the loop nor holds a message."""
        if self._refresh is None or time.monotonic() < self._next_refresh:
            return
        self._next_refresh = time.monotonic() + self._refresh_every
        try:
            self._refresh(connection)
        except ConnectionLost:
            raise
        except Exception as exc:
            if translate_lost(exc):
                raise
            metrics.REFRESH_FAILURES.labels("refresher").inc()
            log.error("metrics refresh failed", error=type(exc).__name__, exc_info=exc)

    def _handle(self, connection: RabbitConnection, processor: Processor, batch: list[tuple[Flow, Received]]) -> None:
        deliveries = [delivery_of(flow, m, may_wait=self._may_wait(m)) for flow, m in batch]
        started = time.perf_counter()
        try:
            outcomes = self._process_waiting(connection, processor, deliveries)
        except ConnectionLost:
            raise
        except Exception as exc:
            if translate_lost(exc):
                raise
            log.error("batch could not be processed; returned to its queue", error=type(exc).__name__, exc_info=exc)
            for _, message in batch:
                self._requeue(connection, message)
                metrics.IN_FLIGHT.dec()
            return
        if outcomes is None:  # stopping during an outage: the broker returns them when we close
            return
        batch_settled(len(batch), started)
        self._ack_all(connection, [m for (_, m), o in zip(batch, outcomes, strict=True) if o.ackable])
        acked = []
        for (flow, message), delivery, outcome in zip(batch, deliveries, outcomes, strict=True):
            if outcome.ackable:
                acked.append((delivery, outcome))
            elif outcome.disposition is Disposition.WAITING:  # held unacked, tried again shortly
                self._hold(flow, message)
                metrics.IN_FLIGHT.dec()
                continue
            else:  # a failure of ours, counted: back to the queue until the processor gives up on it
                self._requeue(connection, message)
            settled(flow, outcome, started)
            log.info(
                "message",
                **log_context(delivery),
                redelivered=delivery.redelivered,
                outcome=outcome.disposition,
                outputs=outcome.outputs,
                error=outcome.error,
                reason=outcome.reason,
                batch=len(batch),
                ms=_ms(started),
            )
        self.handled += len(acked)
        processor.note_acknowledged(acked)

    def _ack_all(self, connection: RabbitConnection, messages: Sequence[Received]) -> None:
        """Ack these deliveries: with one `multiple` ack when they are every delivery in hand up to the highest of
        them (decision 29), else one by one — a multiple ack must never take along one still in hand or held."""
        tags = {m.delivery_tag for m in messages}
        if not tags:
            return
        highest = max(tags)
        if len(tags) > 1 and {t for t in self._unsettled if t <= highest} == tags:
            connection.ack(highest, multiple=True)
        else:
            for tag in sorted(tags):
                connection.ack(tag)
        for tag in tags:
            self._forget(tag)

    def _requeue(self, connection: RabbitConnection, message: Received) -> None:
        connection.requeue(message.delivery_tag)
        self._forget(message.delivery_tag)

    def _forget(self, tag: int) -> None:
        """A delivery acked or requeued: no longer in hand."""
        self._unsettled.discard(tag)
        self._first_tried.pop(tag, None)
        self._tries.pop(tag, None)

    def _may_wait(self, message: Received) -> bool:
        """Whether a delivery refused for want of an earlier message may still be held (WAIT_FOR_EARLIER)."""
        first = self._first_tried.setdefault(message.delivery_tag, time.monotonic())
        return time.monotonic() - first < self._wait_for_earlier

    def _hold(self, flow: Flow, message: Received) -> None:
        tries = self._tries.get(message.delivery_tag, 0)
        self._tries[message.delivery_tag] = tries + 1
        pause = WAIT_STEPS[min(tries, len(WAIT_STEPS) - 1)]
        self._waiting.append(_Waiting(time.monotonic() + pause, flow, message))

    def _process_waiting(
        self, connection: RabbitConnection, processor: Processor, deliveries: list[Delivery]
    ) -> list[Outcome] | None:
        """process_batch, waiting out an unavailable dependency with the deliveries held unacked.

        Returns None when asked to stop during the wait (the deliveries stay unacked)."""
        delay, waiting_for, since, noted = self._wait_initial, None, 0.0, 0.0
        missed: set[str] = set()  # every dependency this wait met: all are back once the batch is settled
        held = Held()  # what the batch already did: a retry after the wait goes on from there
        while True:
            try:
                outcomes = processor.process_batch(deliveries, held)
            except Transient as exc:
                newly_down = self._dependency_down(exc, held=len(deliveries))
                missed.add(exc.dependency)
                if waiting_for is None:
                    waiting_for, since, noted = exc.dependency, time.monotonic(), time.monotonic()
                    if not newly_down:  # known to be down since an idle probe: the wait for it begins now
                        log.warning(f"holding messages until the {exc.dependency} is back", held=len(deliveries))
                elif not newly_down and time.monotonic() - noted >= STILL_WAITING_EVERY:
                    noted = time.monotonic()
                    log.warning(
                        f"still waiting for the {exc.dependency}",
                        held=len(deliveries) + len(self._in_hand),
                        waited_s=round(noted - since),
                        reason=one_line(exc),
                    )
                metrics.WAITING_MESSAGES.set(len(deliveries) + len(self._in_hand))
                self._pause_connected(connection, delay)
                if self._stopping.is_set():
                    return None
                delay = min(delay * 2, self._wait_max)
                continue
            if waiting_for is not None:
                metrics.WAITING_MESSAGES.set(0)
            for dependency in sorted(missed):
                away = self.health.up(dependency)
                if away is not None:
                    log.info(f"{dependency} available again: resuming", waited_s=round(away, 1))
            self._store_up()  # the batch was settled: the store answered, whatever the probe said last
            self._next_probe = time.monotonic() + self._probe_every
            return outcomes

    def _pause_connected(self, connection: RabbitConnection, seconds: float) -> None:
        """Wait, keeping the connection's heartbeats going (new deliveries join the messages in hand)."""
        deadline = time.monotonic() + seconds
        while not self._stopping.is_set() and (left := deadline - time.monotonic()) > 0:
            self.health.beat()
            connection.process_events(min(left, 1.0))


@dataclass(frozen=True, slots=True)
class _Waiting:
    """A delivery held unacked for an earlier message, to be tried again at `due` (time.monotonic)."""

    due: float
    flow: Flow
    message: Received


def delivery_of(flow: Flow, message: Received, may_wait: bool = False) -> Delivery:
    """The processor's view of a delivery. Only on `rehab.replay` (which the service and the administrator alone
    may write) is our own header naming a replayed message's first sender believed."""
    original = message.raw_headers.get(ORIGINAL_SOURCE) if message.exchange == REPLAY_EXCHANGE else None
    return Delivery(
        flow.name,
        message.body,
        message.message_id,
        message.redelivered,
        message.headers,
        message.content_type,
        message.source,
        message.exchange,
        message.problem,
        original_source=original if isinstance(original, str) and text_problem(original) is None else None,
        delivery_tag=message.delivery_tag,
        may_wait=may_wait,
    )


def taken(flow: Flow) -> None:
    """Count a delivery taken from `flow`'s queue: received, and in flight until `settled` (or requeued)."""
    metrics.RECEIVED.labels(flow.name).inc()
    metrics.IN_FLIGHT.inc()


def batch_settled(size: int, started: float) -> None:
    """Count a batch of `size` deliveries whose processing began at `started` (time.perf_counter)."""
    metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
    metrics.BATCH_SIZE.observe(size)


def settled(flow: Flow, outcome: Outcome, started: float) -> None:
    """Count a delivery acked or requeued with `outcome`: no longer in flight, its outcome by flow, and the
    seconds since its batch began (`started`, time.perf_counter). The in-memory bus counts as this loop does."""
    metrics.IN_FLIGHT.dec()
    metrics.MESSAGES.labels(flow.name, outcome.disposition).inc()
    metrics.PROCESSING_SECONDS.labels(flow.name).observe(time.perf_counter() - started)


def _batches(in_hand: list[tuple[Flow, Received]]) -> list[list[tuple[Flow, Received]]]:
    """Redelivered messages one by one (one that troubles the consumer must not take others along), then the rest."""
    again = [[item] for item in in_hand if item[1].redelivered]
    fresh = [item for item in in_hand if not item[1].redelivered]
    return again + ([fresh] if fresh else [])


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
