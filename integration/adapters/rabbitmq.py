"""RabbitMQ through pika: the only module that imports pika, and the one that translates its errors.

Its channel is its own: the consumer, the queue migration and the commands drive the broker through
`RabbitConnection`'s named operations (publish, consume, get, ack, requeue, the queue operations, a side
channel for operations the broker may refuse), never through pika.

Publishing is always persistent, mandatory and confirmed, and carries our broker user as the
AMQP user-id: `publish` returns only when the broker has taken responsibility for the message.
`publish_all` puts a window of messages on the wire without waiting for each confirm, then waits
for all of them (decision 29: the consumer's outputs of a whole batch): one round trip instead of
one per message. A refused or unroutable publish is Transient (`Unconfirmed`, naming the ones that
were confirmed; the broker refuses for now: a full queue, a resource alarm); a lost connection or
channel is ConnectionLost, and the consumer reconnects; a queue the broker will not let us consume
(missing, or not ours to read) is QueueRefused.

A dead peer is noticed by AMQP heartbeats (15 s: pika gives up after 20 to 40 s of silence) and,
where the network drops packets, by TCP keepalives and a TCP user timeout. The heartbeat is no
shorter because the consumer loop is away from the socket for as long as one audit store call can
take (its 15 s deadline): a broker closes a connection silent for two to three heartbeats, and
would then return every message held through a database outage. A URL may set its own
`?heartbeat=` or `?blocked_connection_timeout=`.

Several broker URLs (the nodes of one cluster, comma-separated) are tried in order on every
(re)connection, so the service carries on through the loss of the node it was connected to.

A publisher writes the header table of its messages, and pika decodes it inside its frame reader,
where an exception drops the whole connection (and every message in hand comes back, again and
again). Importing this module installs `GuardedProperties` as pika's decoder of message properties:
a table that cannot be decoded, nested too deep, or not writable again is left out, the other
properties are kept, and the message is refused naming its headers (`received`).
"""

from __future__ import annotations

import ssl
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pika
import pika.data
import pika.exceptions as px
import pika.spec
import structlog
from pika.adapters.blocking_connection import BlockingChannel, _IoloopTimerContext

from integration.adapters.amqp_properties import read_properties
from integration.errors import TOPOLOGY, ConfigurationError, ConnectionLost, Unconfirmed
from integration.flows.results import FHIR_JSON
from integration.log import one_line
from integration.service.ports import Publication
from integration.topology import RETIRED_EXCHANGES, bindings, exchanges, queues

log = structlog.get_logger("integration.rabbitmq")

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
    prefetch: int = 100  # deliveries in hand at once: a batch shares its transactions and its confirm window
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    heartbeat: int = 15  # seconds; see the module's docstring before lowering it
    socket_timeout: float = 5.0  # seconds to reach a node before trying the next
    confirm_timeout: float = 30.0  # seconds to wait for a window's publisher confirms before it is Unconfirmed

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(u.strip() for u in self.url.split(",") if u.strip())


AMQP_SHORT = 65_535  # the largest value of AMQP 0-9-1's 16-bit fields (the port of a URL is one too)

# Linux TCP options (pika sets those the platform has): probe an idle peer after 10 s, every 5 s, 3 times;
# give up on data the peer has not acknowledged for 30 s.
TCP_OPTIONS = {"TCP_KEEPIDLE": 10, "TCP_KEEPINTVL": 5, "TCP_KEEPCNT": 3, "TCP_USER_TIMEOUT": 30_000}


class BrokerRefused(ConnectionLost):
    """The broker answered and refused us: our login (wrong user or password), our vhost (missing, or not
    ours). Waiting will not mend it; `run` exits 3 at start (decision in `ConsumerService._connect`)."""


# pika's errors for a broker that answers and refuses our login or vhost; a connection closed by the
# broker with these codes while opening means the same (403 ACCESS_REFUSED, 530 NOT_ALLOWED).
_REFUSED = (px.ProbableAuthenticationError, px.ProbableAccessDeniedError, px.AuthenticationError)
_REFUSED_CODES = frozenset({403, 530})


def _refusal(exc: BaseException) -> bool:
    if isinstance(exc, _REFUSED):
        return True
    return isinstance(exc, px.ConnectionClosedByBroker) and exc.reply_code in _REFUSED_CODES


def _described(exc: BaseException) -> str:
    """pika's error as one line: its type and what it says, or what it wraps (a refused TCP connection is an
    AMQPConnectionError whose text is empty)."""
    text = str(exc) or "; ".join(repr(a) if isinstance(a, BaseException) else str(a) for a in exc.args)
    return one_line(f"{type(exc).__name__}: {text}" if text else type(exc).__name__, 300)


class QueueRefused(ConnectionLost):
    """The broker closed our channel rather than let us consume a queue: it is missing (404), or not ours to
    read (403). Waiting alone will not mend it; an operator must, and the consumer retries with backoff."""

    def __init__(self, queue: str, code: int, text: str) -> None:
        if code == 404:
            what = f"queue {queue} does not exist: run `integration topology apply`"
        elif code == 403:
            what = f"the broker refused us queue {queue} ({text}): check the service user's permissions"
        else:
            what = f"the broker refused to let us consume queue {queue} ({code} {text})"
        super().__init__(what)
        self.queue = queue
        self.code = code


DEEPEST_HEADERS = 16  # levels of nested tables and arrays; senders' headers are flat, pika's decoder recurses


class GuardedProperties(pika.spec.BasicProperties):  # type: ignore[misc]  # pika is untyped
    """BasicProperties whose decoding never raises. `unreadable` is ("headers" or "properties", why) when
    they could not be read whole; the headers are then None and every other property is still decoded."""

    unreadable: tuple[str, str] | None = None
    headers: Any

    def decode(self, encoded: bytes, offset: int = 0) -> GuardedProperties:
        try:
            super().decode(encoded, offset)
        except Exception as exc:  # a publisher's bytes: any error of pika's decoder is a refusal
            self._decode_without_headers(encoded, offset, f"could not be decoded ({_short(exc)})")
            return self
        if self.headers is not None and (why := _unwritable(self.headers)):
            self.headers = None
            self.unreadable = ("headers", why)
        return self

    def _decode_without_headers(self, encoded: bytes, offset: int, why: str) -> None:
        try:
            super().decode(_without_header_table(encoded, offset), 0)
            self.unreadable = ("headers", why)
        except Exception as exc:  # not even the rest can be read: refused for that
            pika.spec.BasicProperties.__init__(self)
            self.unreadable = ("properties", f"could not be decoded ({_short(exc)})")


def _short(exc: BaseException) -> str:
    return one_line(f"{type(exc).__name__}: {exc}", 120)


def _unwritable(headers: object) -> str | None:
    """Why a decoded header table cannot go into our dead letter as it is, or None when it can."""
    if _depth(headers) > DEEPEST_HEADERS:
        return f"nested deeper than {DEEPEST_HEADERS} levels"
    try:
        pika.data.encode_table([], headers)
    except Exception as exc:  # e.g. a double too big for an AMQP long, which pika decodes as an int
        return f"could not be encoded again ({_short(exc)})"
    return None


def _depth(value: object) -> int:
    """How deeply tables and arrays nest in `value`, without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, level + 1)
            if deepest > DEEPEST_HEADERS:
                return deepest
            stack.extend((child, level + 1) for child in children)
    return deepest


def _without_header_table(encoded: bytes, offset: int) -> bytes:
    """The encoded properties with their header table cut out and its flag cleared (AMQP 0-9-1 4.2.6.1: the
    flags, then content-type and content-encoding as short strings, then the table with its length)."""
    flags = struct.unpack_from(">H", encoded, offset)[0]
    if not flags & pika.spec.BasicProperties.FLAG_HEADERS or flags & 1:  # no table, or flag words we do not know
        raise ValueError("no header table to leave out")
    start = offset + 2
    for flag in (pika.spec.BasicProperties.FLAG_CONTENT_TYPE, pika.spec.BasicProperties.FLAG_CONTENT_ENCODING):
        if flags & flag:
            start += 1 + encoded[start]
    end = start + 4 + struct.unpack_from(">I", encoded, start)[0]
    if end > len(encoded):
        raise ValueError("the header table runs past the properties")
    cleared = flags & ~pika.spec.BasicProperties.FLAG_HEADERS
    return struct.pack(">H", cleared) + bytes(encoded[offset + 2 : start]) + bytes(encoded[end:])


# pika's frame reader builds the properties of every delivery from this table (pika.frame.decode_frame).
pika.spec.props[pika.spec.BasicProperties.INDEX] = GuardedProperties


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
    given = parse_qs(urlsplit(url).query)
    if problems := _out_of_range(params):
        raise ConfigurationError(f"broker_url: {masked_url(url)}: {'; '.join(problems)}")
    if "heartbeat" not in given:
        params.heartbeat = settings.heartbeat
    if "blocked_connection_timeout" not in given:
        params.blocked_connection_timeout = 60
    params.tcp_options = dict(TCP_OPTIONS)
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


def _out_of_range(params: pika.URLParameters) -> list[str]:
    """What pika takes from a URL and the connection cannot use: port 0 (pika tries it, and waits for the
    broker forever), a heartbeat past AMQP's 16-bit connection.tune-ok field (pika fails mid-handshake, which
    reads as a refused login)."""
    problems = []
    if not 0 < params.port <= AMQP_SHORT:
        problems.append(f"the port must be 1 to {AMQP_SHORT}")
    if isinstance(params.heartbeat, int) and params.heartbeat > AMQP_SHORT:
        problems.append(f"heartbeat must be 0 to {AMQP_SHORT} seconds (a 16-bit field of AMQP 0-9-1)")
    return problems


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


class OperationRefused(Exception):
    """The broker closed the channel rather than do what was asked (AMQP 0-9-1 channel.close): 404 NOT_FOUND
    (no such queue or exchange), 403 ACCESS_REFUSED (not ours), 406 PRECONDITION_FAILED (a queue declared
    with other arguments), …. The channel is gone with it; pika's error is the cause."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text


@contextmanager
def _refusals() -> Iterator[None]:
    try:
        yield
    except px.ChannelClosedByBroker as exc:
        raise OperationRefused(exc.reply_code, str(exc.reply_text)) from exc


class QueueOperations:
    """Declaring, counting, binding and deleting queues and exchanges, on one channel. The broker refusing
    one raises OperationRefused (and closes the channel); a lost connection raises pika's error, which
    `translate_lost` recognises."""

    def __init__(self, channel: BlockingChannel) -> None:
        self._channel = channel

    def declare_queue(self, name: str, arguments: Mapping[str, Any] | None = None) -> None:
        """A durable queue with these `x-` arguments (RabbitMQ fixes them when the queue is first declared)."""
        with _refusals():
            self._channel.queue_declare(name, durable=True, arguments=arguments)

    def declare_temporary_queue(self) -> str:
        """A server-named queue for this connection alone, deleted when it closes. Returns its name."""
        with _refusals():
            return str(self._channel.queue_declare("", exclusive=True, auto_delete=True).method.queue)

    def queue_counts(self, name: str) -> tuple[int, int]:
        """(messages ready, consumers) of an existing queue, by a passive declare: messages delivered and not
        yet acked are not counted. OperationRefused (404) when there is no such queue."""
        with _refusals():
            ok = self._channel.queue_declare(name, passive=True)
        return int(ok.method.message_count), int(ok.method.consumer_count)

    def message_count(self, name: str) -> int:
        """The messages ready in an existing queue (`queue_counts`)."""
        return self.queue_counts(name)[0]

    def bind_queue(self, queue: str, exchange: str, routing_key: str) -> None:
        with _refusals():
            self._channel.queue_bind(queue, exchange, routing_key)

    def unbind_queue(self, queue: str, exchange: str, routing_key: str) -> None:
        with _refusals():
            self._channel.queue_unbind(queue, exchange, routing_key)

    def delete_queue(self, name: str) -> int:
        """Delete a queue, whatever it holds. Returns how many messages were deleted with it."""
        with _refusals():
            return int(self._channel.queue_delete(name).method.message_count)

    def delete_exchange(self, name: str) -> None:
        """Delete an exchange, its bindings with it; deleting an absent exchange is no error."""
        with _refusals():
            self._channel.exchange_delete(name)

    def apply_topology(self) -> list[str]:
        """Declare every exchange, queue and binding of `integration.topology`, and delete retired exchanges;
        idempotent. Returns what was done, one line each. Raises ConfigurationError when the broker refuses."""
        done = []
        try:
            for name in RETIRED_EXCHANGES:
                self.delete_exchange(name)
                done.append(f"exchange {name} deleted (retired)")
            for exchange in exchanges():
                with _refusals():
                    self._channel.exchange_declare(
                        exchange.name, exchange.type, durable=True, arguments=exchange.arguments
                    )
                done.append(f"exchange {exchange.name}")
            for queue in queues():
                self.declare_queue(queue.name, queue.arguments)
                done.append(f"queue {queue.name}")
            for binding in bindings():
                self.bind_queue(binding.queue, binding.exchange, binding.routing_key)
                done.append(f"binding {binding.exchange} → {binding.queue} ({binding.routing_key or '*'})")
        except OperationRefused as exc:
            raise ConfigurationError(f"the broker refused the topology ({exc.code} {exc.text})") from None
        return done


class RabbitConnection(QueueOperations):
    """One connection (to the first reachable node) with one confirming channel, which only this module
    drives: publishing, consuming, getting, acking and requeueing, and the queue operations of
    `QueueOperations`. `side_channel` opens a second channel for operations the broker may refuse."""

    def __init__(self, settings: BrokerSettings) -> None:
        parameters = connection_parameters(settings)
        try:
            self._connection = pika.BlockingConnection(parameters)
            channel: BlockingChannel = self._connection.channel()
            channel.basic_qos(prefetch_count=settings.prefetch)
            self._window = ConfirmWindow(self._connection, settings.confirm_timeout)
        except _LOST as exc:
            if _refusal(exc):
                raise BrokerRefused(f"the broker refused our login or vhost: {_described(exc)}") from exc
            raise ConnectionLost(f"broker unreachable: {_described(exc)}") from exc
        super().__init__(channel)
        connected = self._connection._impl.params  # noqa: SLF001 - pika keeps which node it reached only here
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
        """Publish one message and wait for its confirm (see `publish_all`)."""
        self.publish_all([Publication(exchange, routing_key, body, message_id, headers, content_type)])

    def publish_all(self, publications: Sequence[Publication]) -> None:
        """Publish every message, persistent and mandatory, then wait for all their confirms (decision 29).

        Raises Unconfirmed (a Transient naming the positions confirmed) when the broker nacked or returned any,
        or their confirms took longer than the confirm timeout; ConnectionLost when the connection or the
        publishing channel went."""
        properties = [self._properties(p) for p in publications]
        self._window.publish_all(publications, properties)

    def _properties(self, publication: Publication) -> pika.BasicProperties:
        return self._fitting(
            pika.BasicProperties(
                delivery_mode=pika.DeliveryMode.Persistent,
                content_type=publication.content_type,
                message_id=publication.message_id,
                user_id=self.user,
                headers=dict(publication.headers) if publication.headers else None,
            )
        )

    def _fitting(self, properties: pika.BasicProperties) -> pika.BasicProperties:
        """`properties` as they can be sent: AMQP carries them in one content-header frame, and the broker
        closes a connection that sends a larger one. Only a copy of a sender's headers can be that large (a
        dead letter or a replay of a message whose table nearly filled a frame): those are dropped then, our
        `x-rehab-*` kept, and `x-rehab-headers-dropped` says how many and why — else the copy could never be
        published and its message would come back for ever, holding up every other."""
        size = _encoded_size(properties)
        if size <= self._frame_max() - _CONTENT_HEADER_OVERHEAD or not properties.headers:
            return properties
        ours = {k: v for k, v in properties.headers.items() if str(k).startswith("x-rehab-")}
        dropped = len(properties.headers) - len(ours)
        ours["x-rehab-headers-dropped"] = f"{dropped} header(s): {size} bytes of properties, more than one frame holds"
        properties.headers = ours
        log.warning("headers dropped from a copy: too large for one frame", dropped=dropped, size=size)
        return properties

    def _frame_max(self) -> int:
        """The frame size negotiated with the broker (pika writes it into its parameters at connection.tune)."""
        frame_max = getattr(getattr(getattr(self._connection, "_impl", None), "params", None), "frame_max", None)
        return frame_max if isinstance(frame_max, int) and frame_max > 0 else pika.spec.FRAME_MAX_SIZE

    def consume(self, queue: str, callback: Callable[[Received], None]) -> None:
        """Deliver `queue`'s messages to `callback` (unacked, up to the prefetch) while `process_events` runs.
        Raises QueueRefused when the broker will not let us consume it."""

        def on_message(_channel: BlockingChannel, method: Any, properties: pika.BasicProperties, body: bytes) -> None:
            callback(received(method, properties, body))

        try:
            self._channel.basic_consume(queue, on_message, auto_ack=False)
        except px.ChannelClosedByBroker as exc:
            raise QueueRefused(queue, exc.reply_code, one_line(exc.reply_text, 200)) from exc

    def process_events(self, seconds: float) -> None:
        """Serve the connection (deliveries, confirms, heartbeats) for up to `seconds` (0: what is waiting)."""
        self._connection.process_data_events(time_limit=seconds)

    def get(self, queue: str) -> Received | None:
        """One message from `queue` (AMQP basic.get), unacked: it returns to the queue on `requeue` or close."""
        method, properties, body = self._channel.basic_get(queue, auto_ack=False)
        return None if method is None else received(method, properties, body)

    def ack(self, delivery_tag: int, multiple: bool = False) -> None:
        """The message is done with: the broker forgets it. Only after everything durable about it is done.
        `multiple`: every unacked delivery on this channel up to and including `delivery_tag` (one frame for a
        batch; the caller must know that no delivery up to it is still in hand)."""
        self._channel.basic_ack(delivery_tag, multiple=multiple)

    def requeue(self, delivery_tag: int) -> None:
        """Return the message to its queue, redelivered (AMQP basic.nack with requeue); a quorum queue counts
        the delivery towards its `x-delivery-limit` and dead-letters the message past it."""
        self._channel.basic_nack(delivery_tag, requeue=True)

    @contextmanager
    def side_channel(self, doing: str = "opening a channel") -> Iterator[QueueOperations]:
        """Queue operations on a channel of their own, closed afterwards: one the broker refuses closes that
        channel only. Raises ConnectionLost ("lost while `doing`") when the channel cannot be opened."""
        try:
            channel = self._connection.channel()
        except _LOST as exc:
            raise ConnectionLost(f"lost while {doing}: {type(exc).__name__}") from None
        try:
            yield QueueOperations(channel)
        finally:
            if channel.is_open:
                channel.close()

    def queue_depths(self, names: Sequence[str]) -> dict[str, int | None]:
        """The messages ready in each queue (`queue_counts`: a passive declare, so nothing is created and no
        message is touched), on side channels of this connection; None for a queue the broker refuses to
        count (404: there is none; 403: not ours). Used for the dead-letter queues' gauges (metrics).
        A lost connection raises ConnectionLost or pika's error (`translate_lost`)."""
        depths: dict[str, int | None] = {}
        pending = list(names)
        while pending:
            with self.side_channel("counting queues") as operations:
                while pending:
                    name = pending.pop(0)
                    try:
                        depths[name] = operations.message_count(name)
                    except OperationRefused:
                        depths[name] = None
                        break  # the refusal closed the channel: the rest on a new one
        return depths

    def close(self) -> None:
        try:
            if self._connection.is_open:
                self._connection.close()
        except _LOST:
            pass


_Key = tuple[str, str, str | None, int]  # what a publish carried: exchange, routing key, message-id, body's hash
TAKEN, REFUSED, RETURNED = "taken", "refused", "returned"  # what the broker's confirm said of a publish
UNROUTABLE_WHY = " (no queue is bound for it: has a receiver's queue or rehab.unrouted been deleted?)"
MAX_LATE_CONFIRMS = 10_000  # confirms kept for publishes no window asks about any more (the oldest dropped)


class ConfirmWindow:
    """A channel of its own in publisher-confirm mode whose confirms are collected, not awaited one by one.

    pika's BlockingChannel in confirm mode waits for each message's confirm before the next is sent. Here
    the channel's confirm mode is driven below that (the channel implementation's `confirm_delivery`
    with our callback): `publish_all` writes every message, then serves the connection until each one is
    acked or nacked by the broker (a `multiple` confirm settles every delivery tag up to it), or until the
    timeout. A message the broker returns as unroutable (mandatory) is returned before its ack and counts as
    not confirmed. A publish still unconfirmed when a window gives up stays in flight on the channel: asked
    for again (the processor's retry), it is not sent a second time but awaited — its late confirm counts —,
    so a slow broker (an alarm, a loaded node) gets no copy per retry. One window at a time; not thread-safe
    (the consumer loop's thread)."""

    def __init__(self, connection: pika.BlockingConnection, timeout: float) -> None:
        self._connection = connection
        self._timeout = timeout
        self._channel: BlockingChannel = connection.channel()
        self._impl = self._channel._impl  # noqa: SLF001 - confirm mode below the blocking wrapper (see the class)
        self._next_tag = 1
        self._in_flight: dict[int, _Key] = {}  # delivery tag → what it carried, until the broker confirms it
        self._settled: dict[_Key, str] = {}  # confirms in, not yet asked for: TAKEN, REFUSED (nacked) or RETURNED
        self._returned: set[_Key] = set()  # returned as unroutable, their ack still to come
        selected: list[bool] = []
        self._impl.confirm_delivery(ack_nack_callback=self._on_confirm, callback=lambda _frame: selected.append(True))
        self._impl.add_on_return_callback(self._on_return)
        self._channel._flush_output(lambda: bool(selected))  # noqa: SLF001 - wait for Confirm.SelectOk

    @staticmethod
    def _key(exchange: str, routing_key: str, message_id: str | None, body: bytes) -> _Key:
        return (exchange, routing_key, message_id, hash(body))

    def publish_all(self, publications: Sequence[Publication], properties: Sequence[pika.BasicProperties]) -> None:
        keys = [self._key(p.exchange, p.routing_key, p.message_id, p.body) for p in publications]
        try:
            for key, publication, props in zip(keys, publications, properties, strict=True):
                if self._settled.get(key) == TAKEN or key in self._in_flight.values():
                    continue  # confirmed late, or still in flight from a window that gave up: not sent again
                self._settled.pop(key, None)  # refused before: sent again
                self._impl.basic_publish(
                    publication.exchange, publication.routing_key, publication.body, props, mandatory=True
                )
                self._in_flight[self._next_tag] = key
                self._next_tag += 1
            wanted = set(keys)
            with _IoloopTimerContext(self._timeout, self._connection._impl) as timer:  # noqa: SLF001
                self._channel._flush_output(lambda: wanted <= self._settled.keys(), timer.is_ready)  # noqa: SLF001
        except px.ChannelClosedByBroker as exc:
            raise ConnectionLost(f"the broker closed the publishing channel: {one_line(exc.reply_text, 200)}") from None
        except _LOST as exc:
            raise ConnectionLost(f"lost while publishing: {type(exc).__name__}") from None
        if self._channel.is_closed:
            raise ConnectionLost("lost while publishing: the broker closed the publishing channel")
        outcome = {key: self._settled.pop(key) for key in set(keys) if key in self._settled}
        confirmed = frozenset(i for i, key in enumerate(keys) if outcome.get(key) == TAKEN)
        if len(confirmed) < len(keys):
            dependency = TOPOLOGY if RETURNED in outcome.values() else "broker"
            raise Unconfirmed(self._unconfirmed_text(publications, keys, outcome), confirmed, dependency)

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tag = method.delivery_tag
        tags = [t for t in self._in_flight if t <= tag] if method.multiple else [tag]
        taken = isinstance(method, pika.spec.Basic.Ack)
        for each in tags:
            if (key := self._in_flight.pop(each, None)) is not None:
                returned = key in self._returned
                self._returned.discard(key)
                self._settled[key] = RETURNED if returned else TAKEN if taken else REFUSED
        while len(self._settled) > MAX_LATE_CONFIRMS:
            del self._settled[next(iter(self._settled))]

    def _on_return(self, _channel: Any, method: Any, properties: pika.BasicProperties, body: bytes) -> None:
        self._returned.add(self._key(method.exchange, method.routing_key, properties.message_id, body))

    def _unconfirmed_text(self, publications: Sequence[Publication], keys: list[_Key], outcome: dict[_Key, str]) -> str:
        for what, said, why in (
            (RETURNED, "unroutable:", UNROUTABLE_WHY),
            (REFUSED, "the broker refused the message for", ""),
        ):
            first = next((p for p, key in zip(publications, keys, strict=True) if outcome.get(key) == what), None)
            if first is not None:
                return f"{said} {first.exchange} {first.routing_key}{why}"
        waiting = sum(1 for key in keys if key not in outcome)
        return f"{waiting} of {len(publications)} publishes not confirmed within {self._timeout:g} s"


# A content-header frame: the frame's own 8 bytes, then class, weight and body size (12) before the properties.
_CONTENT_HEADER_OVERHEAD = 8 + 12 + 64  # and a margin


def _encoded_size(properties: pika.BasicProperties) -> int:
    return sum(len(part) for part in properties.encode())


@contextmanager
def connected(settings: BrokerSettings) -> Iterator[RabbitConnection]:
    connection = RabbitConnection(settings)
    try:
        yield connection
    finally:
        connection.close()


@dataclass(frozen=True, slots=True)
class Received:
    """One delivery with its properties checked (`integration.adapters.amqp_properties`)."""

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
    checked = read_properties(
        properties.message_id,
        properties.user_id,
        properties.content_type,
        properties.headers,
        getattr(properties, "unreadable", None),
    )
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


def drain(connection: RabbitConnection, queue: str, limit: int) -> list[Received]:
    """Take up to `limit` messages without acking them (they return to the queue on requeue or close)."""
    taken: list[Received] = []
    while len(taken) < limit and (message := connection.get(queue)) is not None:
        taken.append(message)
    return taken


def translate_lost(exc: BaseException) -> bool:
    """Whether `exc` is pika's (or the socket's) way of saying the connection or channel is gone."""
    return isinstance(exc, _LOST)


@dataclass(frozen=True, slots=True)
class BrokerCause:
    """The pika error behind an exception, in the terms `integration.cli.errors` reports it in."""

    error: BaseException
    login_refused: bool  # the broker refused our login or vhost
    reply_code: int | None = None  # the broker closed our channel with this AMQP reply code (403, 404, …)
    reply_text: str = ""


def broker_cause(exc: BaseException) -> BrokerCause | None:
    """The pika error behind `exc` (itself, or what this adapter translated: its cause or context), if any."""
    amqp_error: type[BaseException] = px.AMQPError  # pika is untyped
    seen: BaseException | None = exc
    while seen is not None and not isinstance(seen, amqp_error):
        seen = seen.__cause__ or seen.__context__
    if seen is None:
        return None
    login = isinstance(seen, px.ProbableAuthenticationError | px.ProbableAccessDeniedError)
    if isinstance(seen, px.ChannelClosedByBroker):
        return BrokerCause(seen, login, seen.reply_code, str(seen.reply_text))
    return BrokerCause(seen, login)


class ConfirmedPublisher:
    """Publishes to one exchange and routing key on a connection of its own, opened when first needed and
    again after it was lost (the MLLP listener: one thread uses it). `publish` returns after the broker's
    confirm; Transient when the broker refuses the message, ConnectionLost when no connection carries it
    (one fresh connection is tried first: an idle one may have been closed for missed heartbeats)."""

    def __init__(self, settings: BrokerSettings, exchange: str, routing_key: str) -> None:
        self._settings = settings
        self.exchange = exchange
        self.routing_key = routing_key
        self._connection: RabbitConnection | None = None

    def connect(self) -> None:
        """Open the connection now if it is not (a readiness probe); ConnectionLost when the broker is not there."""
        if self._connection is None:
            self._connection = RabbitConnection(self._settings)

    def publish(self, body: bytes, message_id: str, content_type: str) -> None:
        for attempt in (1, 2):
            try:
                if self._connection is None:
                    self._connection = RabbitConnection(self._settings)
                self._connection.publish(self.exchange, self.routing_key, body, message_id, content_type=content_type)
                return
            except ConnectionLost:
                self.close()
                if attempt == 2:
                    raise

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
