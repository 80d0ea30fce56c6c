"""The consumer loop on RabbitMQ: consume each flow's inbound queue, process in batches, ack last.

Deliveries that arrive together (up to the prefetch) are processed as one batch, so the audit
log's transactions are shared; each delivery is still acked only after its own outputs are
confirmed and its records committed. One canonical log line per message (flow, correlation id,
outcome, outputs, milliseconds). A lost connection is re-established with exponential backoff
and jitter, for as long as it takes; unacked messages come back from the broker meanwhile.
`stop()` (SIGTERM, SIGINT) lets the batch in hand finish and be acked, then closes. Between
batches, `periodic` (the resend of our unacknowledged messages) runs every `period` seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from functools import partial

import structlog
from tenacity import Retrying, retry_if_exception_type, stop_when_event_set, wait_exponential_jitter

from integration.errors import ConnectionLost, Transient
from integration.runtime.processor import Bus, Delivery, Processor
from integration.runtime.rabbitmq import BrokerSettings, RabbitConnection, Received, consume, translate_lost
from integration.topology import Flow

log = structlog.get_logger("integration.consumer")
POLL_SECONDS = 0.2


class ConsumerService:
    def __init__(
        self,
        broker: BrokerSettings,
        flows: Sequence[Flow],
        make_processor: Callable[[Bus], Processor],
        reconnect_max_wait: float = 10.0,
        periodic: Callable[[Bus], object] | None = None,
        period: float = 60.0,
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
        self.handled = 0

    def stop(self) -> None:
        """Finish the batch in hand, ack it, stop consuming and close. Safe from a signal handler or thread."""
        self._stopping.set()

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                connection = self._connect()
            except ConnectionLost:
                break  # stopping while the broker was away
            try:
                self._serve(connection)
            except ConnectionLost as exc:
                log.warning("broker connection lost; reconnecting", error=str(exc))
            finally:
                self._in_hand.clear()  # unacked: the broker redelivers them
                connection.close()

    def _connect(self) -> RabbitConnection:
        retrying = Retrying(
            retry=retry_if_exception_type(ConnectionLost),
            wait=wait_exponential_jitter(multiplier=0.2, max=self._reconnect_max_wait, jitter=0.2),
            stop=stop_when_event_set(self._stopping),
            sleep=self._pause,
            before_sleep=lambda state: log.warning("broker unreachable; retrying", attempt=state.attempt_number),
            reraise=True,
        )
        connection: RabbitConnection = retrying(RabbitConnection, self._broker)
        return connection

    def _take(self, flow: Flow, message: Received) -> None:
        self._in_hand.append((flow, message))

    def _pause(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def _serve(self, connection: RabbitConnection) -> None:
        processor = self._make_processor(connection)
        for flow in self._flows:
            consume(connection, flow.queue, partial(self._take, flow))
        log.info("consuming", queues=[f.queue for f in self._flows])
        try:
            while not self._stopping.is_set():
                connection.connection.process_data_events(time_limit=0 if self._in_hand else POLL_SECONDS)
                if self._in_hand:
                    batch, self._in_hand = self._in_hand, []
                    self._handle(connection, processor, batch)
                self._run_periodic(connection)
        except Exception as exc:
            if translate_lost(exc):
                raise ConnectionLost(f"{type(exc).__name__}: {exc}") from None
            raise

    def _run_periodic(self, connection: RabbitConnection) -> None:
        if self._periodic is None or time.monotonic() < self._next_periodic:
            return
        self._next_periodic = time.monotonic() + self._period
        try:
            self._periodic(connection)
        except Transient as exc:  # the store or a publish failed: the next run tries again
            log.warning("periodic job failed; next run retries", reason=str(exc))

    def _handle(self, connection: RabbitConnection, processor: Processor, batch: list[tuple[Flow, Received]]) -> None:
        deliveries = [
            Delivery(flow.name, m.body, m.message_id, m.redelivered, m.headers, m.content_type, m.source)
            for flow, m in batch
        ]
        started = time.perf_counter()
        try:
            outcomes = processor.process_batch(deliveries)
        except ConnectionLost:
            raise
        except Transient as exc:
            for _, message in batch:
                connection.channel.basic_nack(message.delivery_tag, requeue=True)
            log.warning("batch", outcome="requeued", messages=len(batch), reason=str(exc), ms=_ms(started))
            return
        acked = []
        for (flow, message), delivery, outcome in zip(batch, deliveries, outcomes, strict=True):
            if outcome.ackable:
                connection.channel.basic_ack(message.delivery_tag)
                acked.append((delivery, outcome))
            else:  # a bug in the flow: back to the queue; the delivery limit dead-letters it
                connection.channel.basic_nack(message.delivery_tag, requeue=True)
            log.info(
                "message",
                flow=flow.name,
                correlation_id=delivery.key,
                redelivered=delivery.redelivered,
                outcome=outcome.disposition,
                outputs=outcome.outputs,
                error=outcome.error,
                batch=len(batch),
                ms=_ms(started),
            )
        self.handled += len(acked)
        try:
            processor.acknowledged(acked)
        except Transient as exc:
            log.warning("acks not audited", reason=str(exc), messages=len(acked))


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
