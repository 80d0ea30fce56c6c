"""RabbitMQ through pika: the only module that imports pika, and the one that translates its errors.

Publishing is always persistent, mandatory and confirmed: `publish` returns only when the
broker has taken responsibility for the message. A refused or unroutable publish is Transient;
a lost connection or channel is ConnectionLost, and the consumer reconnects.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions as px
from pika.adapters.blocking_connection import BlockingChannel

from integration.errors import ConfigurationError, ConnectionLost, Transient
from integration.flows.results import FHIR_JSON
from integration.topology import bindings, exchanges, queues

_LOST = (
    px.AMQPConnectionError,
    px.ConnectionClosed,
    px.ChannelClosed,
    px.ChannelWrongStateError,
    px.StreamLostError,
    ConnectionError,
    OSError,
)


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    url: str
    prefetch: int = 20
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    heartbeat: int = 30


def connection_parameters(settings: BrokerSettings) -> pika.URLParameters:
    params = pika.URLParameters(settings.url)
    params.heartbeat = settings.heartbeat
    params.blocked_connection_timeout = 60
    params.connection_attempts = 1
    if settings.url.startswith("amqps://"):
        context = ssl.create_default_context(cafile=settings.ca_file)
        if settings.cert_file:
            context.load_cert_chain(settings.cert_file, settings.key_file)
        params.ssl_options = pika.SSLOptions(context, params.host)
    elif settings.ca_file or settings.cert_file:
        raise ConfigurationError("TLS files are set but the broker URL is not amqps://")
    return params


class RabbitConnection:
    """One connection with one confirming channel."""

    def __init__(self, settings: BrokerSettings) -> None:
        try:
            self.connection = pika.BlockingConnection(connection_parameters(settings))
            self.channel: BlockingChannel = self.connection.channel()
            self.channel.confirm_delivery()
            self.channel.basic_qos(prefetch_count=settings.prefetch)
        except _LOST as exc:
            raise ConnectionLost(f"broker unreachable: {type(exc).__name__}: {exc}") from None

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        message_id: str,
        headers: Mapping[str, Any] | None = None,
        content_type: str = FHIR_JSON,
    ) -> None:
        properties = pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent,
            content_type=content_type,
            message_id=message_id,
            headers=dict(headers) if headers else None,
        )
        try:
            self.channel.basic_publish(exchange, routing_key, body, properties, mandatory=True)
        except px.UnroutableError:
            raise Transient(f"unroutable: {exchange} {routing_key}") from None
        except px.NackError:
            raise Transient(f"the broker refused the message for {exchange} {routing_key}") from None
        except _LOST as exc:
            raise ConnectionLost(f"lost while publishing: {type(exc).__name__}") from None

    def close(self) -> None:
        try:
            if self.connection.is_open:
                self.connection.close()
        except _LOST:
            pass


@contextmanager
def connected(settings: BrokerSettings) -> Iterator[RabbitConnection]:
    connection = RabbitConnection(settings)
    try:
        yield connection
    finally:
        connection.close()


def apply_topology(channel: BlockingChannel) -> list[str]:
    """Declare every exchange, queue and binding; idempotent. Returns what was declared."""
    done = []
    try:
        for exchange in exchanges():
            channel.exchange_declare(exchange.name, exchange.type, durable=True, arguments=exchange.arguments)
            done.append(f"exchange {exchange.name}")
        for queue in queues():
            channel.queue_declare(queue.name, durable=True, arguments=queue.arguments)
            done.append(f"queue {queue.name}")
        for binding in bindings():
            channel.queue_bind(binding.queue, binding.exchange, binding.routing_key)
            done.append(f"binding {binding.exchange} → {binding.queue} ({binding.routing_key or '*'})")
    except px.ChannelClosedByBroker as exc:
        raise ConfigurationError(f"the broker refused the topology ({exc.reply_code} {exc.reply_text})") from None
    return done


@dataclass(frozen=True, slots=True)
class Received:
    delivery_tag: int
    body: bytes
    message_id: str | None
    headers: Mapping[str, Any]
    content_type: str | None
    redelivered: bool
    source: str | None = None  # the publishing user (validated by the broker) or the sender's app id
    routing_key: str = ""


def received(method: Any, properties: pika.BasicProperties, body: bytes) -> Received:
    return Received(
        method.delivery_tag,
        body,
        properties.message_id,
        properties.headers or {},
        properties.content_type,
        bool(method.redelivered),
        properties.user_id or properties.app_id,
        method.routing_key,
    )


def consume(connection: RabbitConnection, queue: str, callback: Callable[[Received], None]) -> None:
    def on_message(_channel: BlockingChannel, method: Any, properties: pika.BasicProperties, body: bytes) -> None:
        callback(received(method, properties, body))

    connection.channel.basic_consume(queue, on_message, auto_ack=False)


def drain(connection: RabbitConnection, queue: str, limit: int) -> list[Received]:
    """Take up to `limit` messages without acking them (they return to the queue on nack or close)."""
    taken: list[Received] = []
    while len(taken) < limit:
        method, properties, body = connection.channel.basic_get(queue, auto_ack=False)
        if method is None:
            break
        taken.append(received(method, properties, body))
    return taken


def translate_lost(exc: BaseException) -> bool:
    return isinstance(exc, _LOST)
