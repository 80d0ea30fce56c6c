"""The consumer loop on RabbitMQ: consume each flow's inbound queue, process, ack last.

One canonical log line per message (flow, correlation id, outcome, outputs, milliseconds).
A lost connection is re-established with exponential backoff and jitter, for as long as it
takes; unacked messages come back from the broker meanwhile. `stop()` (SIGTERM, SIGINT) lets
the message in hand finish and be acked, then closes.
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


class ConsumerService:
    def __init__(
        self,
        broker: BrokerSettings,
        flows: Sequence[Flow],
        make_processor: Callable[[Bus], Processor],
        reconnect_max_wait: float = 10.0,
    ) -> None:
        self._broker = broker
        self._flows = flows
        self._make_processor = make_processor
        self._reconnect_max_wait = reconnect_max_wait
        self._stopping = threading.Event()
        self._connection: RabbitConnection | None = None
        self.handled = 0

    def stop(self) -> None:
        """Finish the message in hand, ack it, stop consuming and close. Safe from a signal handler or thread."""
        self._stopping.set()
        connection = self._connection
        if connection is not None:
            try:
                connection.connection.add_callback_threadsafe(connection.channel.stop_consuming)
            except Exception:  # noqa: BLE001 - the connection is already gone: nothing left to stop
                pass

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
                self._connection = None
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
        self._connection = connection
        return connection

    def _pause(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def _serve(self, connection: RabbitConnection) -> None:
        processor = self._make_processor(connection)
        for flow in self._flows:
            consume(connection, flow.queue, partial(self._handle, connection, processor, flow))
        log.info("consuming", queues=[f.queue for f in self._flows])
        if self._stopping.is_set():
            return
        try:
            connection.channel.start_consuming()
        except Exception as exc:
            if translate_lost(exc):
                raise ConnectionLost(f"{type(exc).__name__}: {exc}") from None
            raise

    def _handle(self, connection: RabbitConnection, processor: Processor, flow: Flow, message: Received) -> None:
        delivery = Delivery(
            flow.name, message.body, message.message_id, message.redelivered, message.headers, message.content_type
        )
        started = time.perf_counter()
        bound = log.bind(flow=flow.name, correlation_id=delivery.key, redelivered=delivery.redelivered)
        try:
            outcome = processor.process(delivery)
        except ConnectionLost:
            raise
        except Transient as exc:
            connection.channel.basic_nack(message.delivery_tag, requeue=True)
            bound.warning("message", outcome="requeued", reason=str(exc), ms=_ms(started))
            return
        except Exception as exc:  # a bug: back to the queue; the delivery limit dead-letters it
            connection.channel.basic_nack(message.delivery_tag, requeue=True)
            bound.error("message", outcome="failed", error=type(exc).__name__, reason=str(exc), ms=_ms(started))
            return
        connection.channel.basic_ack(message.delivery_tag)
        self.handled += 1
        try:
            processor.acknowledged(delivery, outcome)
        except Transient as exc:
            bound.warning("ack not audited", reason=str(exc))
        bound.info("message", outcome=outcome.disposition, outputs=outcome.outputs, ms=_ms(started))
        if self._stopping.is_set():
            connection.channel.stop_consuming()


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
