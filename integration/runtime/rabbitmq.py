"""RabbitMQ through pika: the only module that imports pika, and the one that translates its errors.

Publishing is always persistent, mandatory and confirmed, and carries our broker user as the
AMQP user-id: `publish` returns only when the broker has taken responsibility for the message.
A refused or unroutable publish is Transient (the broker refuses for now: a full queue, a
resource alarm); a lost connection or channel is ConnectionLost, and the consumer reconnects.

Several broker URLs (the nodes of one cluster, comma-separated) are tried in order on every
(re)connection, so the service carries on through the loss of the node it was connected to.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions as px
from pika.adapters.blocking_connection import BlockingChannel

from integration.errors import ConfigurationError, ConnectionLost, Transient
from integration.flows.results import FHIR_JSON
from integration.runtime.amqp_properties import read_properties
from integration.topology import RETIRED_EXCHANGES, bindings, exchanges, queues

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
    url: str  # one amqp(s):// URL, or several separated by commas: the nodes of one cluster
    prefetch: int = 20
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    heartbeat: int = 30
    socket_timeout: float = 5.0  # seconds to reach a node before trying the next

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(u.strip() for u in self.url.split(",") if u.strip())


def connection_parameters(settings: BrokerSettings) -> list[pika.URLParameters]:
    """pika's parameters for each URL, in order. Raises ConfigurationError for a URL that cannot work."""
    urls = settings.urls
    if not urls:
        raise ConfigurationError("broker_url: no broker URL given")
    every = [_parameters(url, settings) for url in urls]
    vhosts = {p.virtual_host for p in every}
    if len(vhosts) > 1:
        raise ConfigurationError("broker_url: the URLs name different vhosts; list the nodes of one cluster")
    return every


def _parameters(url: str, settings: BrokerSettings) -> pika.URLParameters:
    if not url.startswith(("amqp://", "amqps://")):
        raise ConfigurationError(f"broker_url: {masked_url(url)} is not an amqp:// or amqps:// URL")
    try:
        params = pika.URLParameters(url)
    except ValueError as exc:
        raise ConfigurationError(f"broker_url: {masked_url(url)}: {exc}") from None
    params.heartbeat = settings.heartbeat
    params.blocked_connection_timeout = 60
    params.connection_attempts = 1
    params.socket_timeout = settings.socket_timeout
    params.stack_timeout = settings.socket_timeout * 2
    if url.startswith("amqps://"):
        context = ssl.create_default_context(cafile=settings.ca_file)
        if settings.cert_file:
            context.load_cert_chain(settings.cert_file, settings.key_file)
        params.ssl_options = pika.SSLOptions(context, params.host)
    elif settings.ca_file or settings.cert_file:
        raise ConfigurationError("TLS files are set but the broker URL is not amqps://")
    return params


def masked_url(url: str) -> str:
    """A URL (or comma-separated URLs) with every password replaced by ***, for printing."""
    return ",".join(_mask_one(u.strip()) for u in url.split(","))


def _mask_one(url: str) -> str:
    if "://" not in url or "@" not in url.split("://", 1)[1].split("/", 1)[0]:
        return url
    scheme, rest = url.split("://", 1)
    authority, _, path = rest.partition("/")
    credentials, host = authority.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" + (f"/{path}" if path or rest.endswith("/") else "")


class RabbitConnection:
    """One connection (to the first reachable node) with one confirming channel."""

    def __init__(self, settings: BrokerSettings) -> None:
        parameters = connection_parameters(settings)
        try:
            self.connection = pika.BlockingConnection(parameters)
            self.channel: BlockingChannel = self.connection.channel()
            self.channel.confirm_delivery()
            self.channel.basic_qos(prefetch_count=settings.prefetch)
        except _LOST as exc:
            raise ConnectionLost(f"broker unreachable: {type(exc).__name__}: {exc}") from None
        connected = self.connection._impl.params  # noqa: SLF001 - pika keeps which node it reached only here
        self.node = f"{connected.host}:{connected.port}"
        credentials = connected.credentials
        self.user: str | None = credentials.username if isinstance(credentials, pika.PlainCredentials) else None

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
            user_id=self.user,
            headers=dict(headers) if headers else None,
        )
        try:
            self.channel.basic_publish(exchange, routing_key, body, properties, mandatory=True)
        except px.UnroutableError:
            raise Transient(f"unroutable: {exchange} {routing_key}", "broker") from None
        except px.NackError:
            raise Transient(f"the broker refused the message for {exchange} {routing_key}", "broker") from None
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
    """Declare every exchange, queue and binding, and delete retired exchanges; idempotent. Returns what was done."""
    done = []
    try:
        for name in RETIRED_EXCHANGES:  # deleting an absent exchange is no error
            channel.exchange_delete(name)
            done.append(f"exchange {name} deleted (retired)")
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
    """One delivery with its properties checked (`integration.runtime.amqp_properties`)."""

    delivery_tag: int
    body: bytes
    message_id: str | None
    headers: Mapping[str, Any]
    content_type: str | None
    redelivered: bool
    source: str | None = None  # the AMQP user-id: the publishing user, as verified by the broker
    routing_key: str = ""
    exchange: str = ""
    problem: tuple[str, str] | None = None  # (property, what is wrong) when it must be refused
    raw_headers: Mapping[str, Any] = field(default_factory=dict)  # as received: for our own dead-letter queues


def received(method: Any, properties: pika.BasicProperties, body: bytes) -> Received:
    checked = read_properties(properties.message_id, properties.user_id, properties.content_type, properties.headers)
    return Received(
        method.delivery_tag,
        bytes(body),
        checked.message_id,
        checked.headers,
        checked.content_type,
        bool(method.redelivered),
        checked.user_id,
        str(method.routing_key),
        str(method.exchange),
        checked.problem,
        properties.headers if isinstance(properties.headers, dict) else {},
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
