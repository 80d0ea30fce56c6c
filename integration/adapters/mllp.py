"""The MLLP listener: HL7 v2 messages over TCP (optionally TLS), framed by MLLP, answered with HL7 ACKs.

MLLP (HL7 v2 transport, MLLP release 1): a message is sent as the start block 0x0B, the message, the end
block 0x1C and a carriage return 0x0D; the ACK comes back framed the same way on the same connection. The
block characters are python-hl7's (`hl7.mllp.streams`); its reader is not used, because it cannot do what
a listener on a hospital network must: its size limit clears the buffer and raises, so the frame's head is
gone (no MSH to answer with AR) and the rest of an oversized frame is then read as garbage; and it has no
deadline per frame. `FrameReader` keeps only the first `HEADER_BYTES` of a frame past the limit and throws
the rest away as it arrives, so a 10 MB frame costs a few kilobytes.

Bounds: at most `max_connections` at once, and `max_connections_per_peer` from one address (one more is
closed at accept, and logged); a new connection must begin its first frame within `frame_timeout` seconds, and
a connection silent for `idle_timeout` seconds between frames is closed; a frame must arrive whole within
`frame_timeout` seconds of its start block (a client trickling bytes cannot hold a slot: it is closed, nothing
published); the ACK must be taken by the client within `frame_timeout` too; a publish whose confirm does not come
within `publish_timeout` seconds is answered AR/CE 207 (the sender sends again; `hl7_intake.message_id`
makes a late copy on the bus a redelivery).

What each message is answered: `integration.service.hl7_intake`. Its store and broker calls run on one
worker thread (their connections are not shared), the network on the event loop, so a slow broker never
stops the listener from reading, timing out or refusing other connections.
"""

from __future__ import annotations

import asyncio
import queue
import ssl
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog
from hl7.mllp.streams import CARRIAGE_RETURN, END_BLOCK, START_BLOCK  # type: ignore[import-untyped]

from integration.adapters.health import Health
from integration.errors import ConnectionLost, Transient
from integration.formats.hl7_ack import HEADER_BYTES, MshHeader, read_header
from integration.log import one_line
from integration.service import metrics
from integration.service.hl7_intake import Answer, Hl7Receipt, Intake, Unavailable

log = structlog.get_logger("integration.mllp")
T = TypeVar("T")
END = END_BLOCK + CARRIAGE_RETURN
READ_CHUNK = 64 * 1024
MAX_SKIPPED = 1024  # bytes outside a frame (line breaks an engine adds) tolerated between two frames
BEAT_SECONDS = 5.0  # the event loop's beat (/livez), and how often a broker found down is probed again
BROKER, STORE = "broker", "audit-store"  # the dependencies /readyz names


@dataclass(frozen=True, slots=True)
class Frame:
    """A whole frame's message (without its block characters)."""

    raw: bytes


@dataclass(frozen=True, slots=True)
class Oversized:
    """A frame longer than the limit: its first HEADER_BYTES, and how many bytes it had in all."""

    head: bytes
    size: int


class FrameReader:
    """MLLP framing as a state machine over the bytes as they arrive (`feed`), bounded in memory: at most
    `max_bytes` + one chunk are held. Bytes between frames (a line break an engine adds) are skipped and
    counted in `skipped`; `in_frame` says whether a start block is waiting for its end."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._buffer = bytearray()
        self._in_frame = False
        self._oversized = 0  # bytes of the current frame thrown away, or 0
        self._head = b""
        self.skipped = 0
        self.restarted = 0  # frames given up because a start block came before their end block
        self.peak = 0  # the most bytes held at once: the tests' proof of the bound

    @property
    def in_frame(self) -> bool:
        return self._in_frame

    def feed(self, data: bytes) -> list[Frame | Oversized]:
        out: list[Frame | Oversized] = []
        view = memoryview(data)
        while len(view):
            if not self._in_frame:
                start = bytes(view).find(START_BLOCK)
                if start < 0:
                    self.skipped += len(view)
                    break
                self.skipped += start
                view = view[start + 1 :]
                self._in_frame, self._buffer, self._oversized, self._head = True, bytearray(), 0, b""
                continue
            view = self._take(view, out)
        return out

    def _take(self, view: memoryview, out: list[Frame | Oversized]) -> memoryview:
        """Add bytes of the current frame; on its end, emit it and return what follows. A start block before
        the end block (ER7 never holds 0x0B) begins a new frame: the sender gave up the one before, which gets
        no ACK (it was never whole) and is resent by the sender; the one that follows is answered."""
        restart = bytes(view).find(START_BLOCK)
        if restart >= 0 and END not in bytes(self._buffer[-1:]) + bytes(view[:restart]):
            self.restarted += 1
            self._buffer, self._oversized, self._head = bytearray(), 0, b""
            return view[restart + 1 :]
        scan_from = max(len(self._buffer) - 1, 0)  # an end block may straddle two reads
        self._buffer += view
        self.peak = max(self.peak, len(self._buffer))
        end = self._buffer.find(END, scan_from)
        if end < 0:
            if len(self._buffer) > self.max_bytes:
                self._spill()
            return view[len(view) :]
        rest = len(self._buffer) - end - len(END)
        message = bytes(self._buffer[:end])
        if self._oversized or len(message) > self.max_bytes:
            head = self._head + message[: HEADER_BYTES - len(self._head)]
            out.append(Oversized(head, self._oversized + len(message)))
        else:
            out.append(Frame(message))
        self._in_frame, self._buffer, self._oversized, self._head = False, bytearray(), 0, b""
        return view[len(view) - rest :]

    def _spill(self) -> None:
        """Past the limit: keep the frame's first HEADER_BYTES, and only the last byte (half an end block,
        maybe); throw the rest away."""
        thrown = len(self._buffer) - 1
        self._head += bytes(self._buffer[: min(thrown, HEADER_BYTES - len(self._head))])
        self._oversized += thrown
        del self._buffer[:-1]


@dataclass(frozen=True, slots=True)
class ListenerSettings:
    host: str = "127.0.0.1"
    port: int = 2575
    max_message_bytes: int = 1024 * 1024
    max_connections: int = 20
    idle_timeout: float = 300.0  # seconds between frames
    frame_timeout: float = 30.0  # seconds from a frame's start block to its end block
    publish_timeout: float = 15.0  # seconds for the broker's confirm
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_client_ca_file: str | None = None  # mutual TLS: a client certificate signed by one of these is required
    max_connections_per_peer: int = 4

    def tls_context(self) -> ssl.SSLContext | None:
        """A server context from the certificate chain and key, and with `tls_client_ca_file` one that requires
        a client certificate it verifies (OSError/ssl.SSLError when a file cannot be read)."""
        if not self.tls_cert_file:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.tls_cert_file, self.tls_key_file or None)
        if self.tls_client_ca_file:
            context.load_verify_locations(cafile=self.tls_client_ca_file)
            context.verify_mode = ssl.CERT_REQUIRED
        return context


class DaemonWorker(Executor):
    """One daemon thread running the calls given to it in order. Not a ThreadPoolExecutor: its threads are
    joined when the interpreter exits, so a call stuck in a dependency (a publish to a black-holed broker,
    which the listener has already answered AR 207) would keep the process from ending after SIGTERM. A call
    cut off at exit has written nothing of its own: the receipt's row comes after the confirm, in one
    transaction, and the sender resends what was not AA'd."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None] = (
            queue.SimpleQueue()
        )
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        if self._closed:
            raise RuntimeError("the worker is shut down")
        future: Future[T] = Future()
        self._calls.put((future, lambda: fn(*args, **kwargs), ()))
        return future

    def _work(self) -> None:
        while (item := self._calls.get()) is not None:
            future, call, _ = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as exc:  # handed to the caller awaiting the future, as an executor does
                future.set_exception(exc)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._closed = True
        self._calls.put(None)
        if wait:
            self._thread.join()


def unframed(raw: bytes) -> bytes:
    """`raw` without one MLLP frame around it (a message captured from the wire: 0x0B, the message, 0x1C and
    0x0D, perhaps with a line break after), else `raw` as it is."""
    if not raw.startswith(START_BLOCK):
        return raw
    inside = raw[len(START_BLOCK) :].rstrip(b"\r\n")
    if not inside.endswith(END_BLOCK):
        return raw
    message = inside[: -len(END_BLOCK)]
    return raw if START_BLOCK in message or END_BLOCK in message else message


def _frame(message: bytes) -> bytes:
    return bytes(START_BLOCK + message + END)


@dataclass
class _Connection:
    peer: str
    address: str  # the peer's IP address: the per-address cap counts these
    busy: bool = False
    task: asyncio.Task[Any] | None = None


@dataclass
class MllpListener:
    """The listener: `start` binds (OSError when the address is in use), `stop` ends it cleanly; `port` is
    the port bound (for port 0). `intake` runs on one worker thread of its own."""

    settings: ListenerSettings
    intake: Intake
    _server: asyncio.Server | None = None
    _connections: dict[int, _Connection] = field(default_factory=dict)
    _worker: Executor = field(default_factory=lambda: DaemonWorker("mllp-intake"))
    on_stop: Callable[[], None] | None = None  # run on the worker thread when stopped (closes the publisher)
    _stopping: bool = False
    refused_connections: int = 0
    health: Health | None = None  # /livez, /readyz: the loop's beat, the broker and the store as last seen
    probe: Callable[[], None] | None = None  # opens the publisher's connection (worker thread); raises if it cannot
    _watch: asyncio.Task[None] | None = None
    _down: dict[str, str] = field(default_factory=dict)  # dependencies last seen failing, with the reason
    _recording: set[Future[None]] = field(default_factory=set)  # outage records not yet written

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve,
            self.settings.host,
            self.settings.port,
            ssl=self.settings.tls_context(),
            ssl_handshake_timeout=self.settings.frame_timeout if self.settings.tls_cert_file else None,
            limit=READ_CHUNK,
        )
        log.info(
            "listening",
            host=self.settings.host,
            port=self.port,
            tls=bool(self.settings.tls_cert_file),
            client_certificates=bool(self.settings.tls_cert_file and self.settings.tls_client_ca_file),
            senders=",".join(self.intake.senders.entries),
            max_message_bytes=self.settings.max_message_bytes,
            max_connections=self.settings.max_connections,
        )
        if self.health is not None:
            self._watch = asyncio.get_running_loop().create_task(self._beat(self.health))

    async def first_probe(self) -> Exception | None:
        """Open the publisher's connection once, before listening: what failed (None: connected, or no probe).
        `integration mllp` exits 3 on the broker refusing our login or vhost; an unreachable broker is only
        logged (the listener answers AR 207 and /readyz is down until it comes)."""
        if self.probe is None:
            return None
        try:
            await self._run(self.probe)
        except Exception as exc:  # the caller decides: a refusal is configuration, the rest an outage
            self._seen(BROKER, f"{type(exc).__name__}: {exc}")
            return exc
        self._seen(BROKER, None)
        return None

    async def _beat(self, health: Health) -> None:
        """Beat every BEAT_SECONDS (/livez: the loop turns); while the broker is not known to take messages,
        probe it (/readyz: ready once the broker answers and the store has not failed)."""
        while not self._stopping:
            health.beat()
            if self.probe is not None and not health.available(BROKER):
                try:
                    await self._run(self.probe)
                except Exception as exc:  # any failure to connect keeps it not ready, with the reason
                    self._seen(BROKER, f"{type(exc).__name__}: {exc}")
                else:
                    self._seen(BROKER, None)
            await asyncio.sleep(BEAT_SECONDS)

    def _seen(self, dependency: str, failure: str | None) -> None:
        """Note a dependency as seen: a change is logged (a warning when it goes, info when it is back), also
        without /readyz."""
        was = self._down.get(dependency)
        if failure is None:
            self._down.pop(dependency, None)
            if self.health is not None:
                self.health.up(dependency)
            if was is not None:
                log.info("dependency available again", dependency=dependency)
            return
        self._down[dependency] = failure
        if self.health is not None:
            self.health.down(dependency, failure)
        if was != failure:
            log.warning("dependency unavailable", dependency=dependency, reason=one_line(failure, 300))

    async def stop(self, grace: float = 10.0) -> None:
        """Stop accepting; connections waiting for a frame are closed at once, a message being answered gets
        `grace` seconds to finish (else its connection is closed without an ACK: the sender sends it again)."""
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
        if self.health is not None:
            self.health.down("mllp-listener", "stopping")
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections.values()):
            if not connection.busy and connection.task is not None:
                connection.task.cancel()
        busy = [c.task for c in self._connections.values() if c.task is not None and not c.task.done()]
        if busy:
            _, late = await asyncio.wait(busy, timeout=grace)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=1.0)
        if self._recording:  # outage records: written if the store and the worker can within the grace
            await asyncio.wait([asyncio.wrap_future(f) for f in list(self._recording)], timeout=min(grace, 3.0))
        if self.on_stop is not None:
            self._worker.submit(self.on_stop)
        self._worker.shutdown(wait=False, cancel_futures=False)
        log.info("stopped")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer, address = _peer(writer), _address(writer)
        if (why := self._refusal(address)) is not None:
            self.refused_connections += 1
            metrics.MLLP_CONNECTIONS.labels("refused").inc()
            log.warning(f"connection refused: {why[0]}", peer=peer, limit=why[1])
            writer.transport.abort()
            return
        key = id(writer)
        connection = _Connection(peer, address, task=asyncio.current_task())
        self._connections[key] = connection
        metrics.MLLP_CONNECTIONS.labels("accepted").inc()
        metrics.MLLP_OPEN_CONNECTIONS.inc()
        try:
            await self._converse(reader, writer, connection)
        except asyncio.CancelledError:
            pass
        except (ConnectionError, OSError, ssl.SSLError) as exc:
            log.info("connection lost", peer=peer, error=type(exc).__name__)
        finally:
            metrics.MLLP_OPEN_CONNECTIONS.dec()
            self._connections.pop(key, None)
            writer.transport.abort() if not writer.transport.is_closing() else None

    def _refusal(self, address: str) -> tuple[str, int] | None:
        """Why a new connection from `address` is closed at accept (and the limit), or None. The cap per
        address keeps one peer (idle connections, or a flood) from taking every slot from the hospital's
        engine, which connects from an address of its own."""
        if self._stopping:
            return "stopping", 0
        if len(self._connections) >= self.settings.max_connections:
            return "too many connections", self.settings.max_connections
        from_there = sum(1 for c in self._connections.values() if c.address == address)
        if from_there >= self.settings.max_connections_per_peer:
            return "too many connections from this address", self.settings.max_connections_per_peer
        return None

    async def _converse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: _Connection
    ) -> None:
        frames = FrameReader(self.settings.max_message_bytes)
        loop = asyncio.get_running_loop()
        frame_started: float | None = None
        connected, answered = loop.time(), False
        while not self._stopping:
            if frames.in_frame:
                frame_started = frame_started if frame_started is not None else loop.time()
                wait = self.settings.frame_timeout - (loop.time() - frame_started)
            elif not answered:  # a new connection must begin its first frame within frame_timeout
                frame_started, wait = None, self.settings.frame_timeout - (loop.time() - connected)
            else:
                frame_started, wait = None, self.settings.idle_timeout
            try:
                data = await asyncio.wait_for(reader.read(READ_CHUNK), timeout=max(wait, 0.0))
            except TimeoutError:
                why = "frame not complete in time" if frames.in_frame else "idle" if answered else "no frame in time"
                if frames.in_frame:
                    metrics.MLLP_FRAMES_REFUSED.labels("frame-timeout").inc()
                log.info("connection closed", peer=connection.peer, reason=why, partial_frame=frames.in_frame)
                return
            if not data:
                if frames.in_frame:
                    metrics.MLLP_FRAMES_REFUSED.labels("unfinished").inc()
                    log.info("connection closed with a frame unfinished", peer=connection.peer)
                return
            restarted = frames.restarted
            units = frames.feed(data)
            if frames.restarted > restarted:
                metrics.MLLP_FRAMES_REFUSED.labels("restarted").inc()
                log.warning("a start block inside a frame: the frame before it is dropped", peer=connection.peer)
            if frames.skipped > MAX_SKIPPED:
                metrics.MLLP_FRAMES_REFUSED.labels("outside-frame").inc()
                log.warning("connection closed: bytes outside any MLLP frame", peer=connection.peer)
                return
            for unit in units:
                frames.skipped = 0
                connection.busy = True
                try:
                    answer = await self._answer(unit, connection.peer)
                    if answer is None:
                        return  # no MSH: no one to answer; the connection goes
                    if answer.ack is not None:
                        writer.write(_frame(answer.ack))
                        await asyncio.wait_for(writer.drain(), timeout=self.settings.frame_timeout)
                finally:
                    connection.busy = False
                answered = True
                if frames.in_frame:
                    frame_started = loop.time()  # the next frame began in the same read

    async def _run(self, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._worker, call, *args)

    async def _answer(self, unit: Frame | Oversized, peer: str) -> Answer | None:
        head = unit.head if isinstance(unit, Oversized) else unit.raw
        header = read_header(head)
        if header is None:
            metrics.MLLP_FRAMES_REFUSED.labels("no-msh").inc()
            log.warning("frame without a readable MSH: connection closed", peer=peer, size=len(head))
            return None
        try:
            if isinstance(unit, Oversized):
                metrics.MLLP_FRAMES_REFUSED.labels("too-large").inc()
                log.warning("message too large", peer=peer, size=unit.size, limit=self.settings.max_message_bytes)
                answer = await self._run(self.intake.too_large, header, self.settings.max_message_bytes)
            else:
                answer = await self._accept_or_refuse(header, unit.raw)
        except Unavailable as exc:
            answer = self._unavailable(header, str(exc), peer)
        self._log(answer, header, peer)
        return answer

    async def _accept_or_refuse(self, header: MshHeader, raw: bytes) -> Answer:
        checked = await self._in_store(self.intake.check, header, raw)
        if not isinstance(checked, Hl7Receipt):
            return checked
        receipt: Hl7Receipt = checked
        try:
            await asyncio.wait_for(
                self._run(self.intake.publish_message, raw, receipt), timeout=self.settings.publish_timeout
            )
        except TimeoutError:
            self._seen(BROKER, "the broker did not confirm in time")
            raise Unavailable("the broker did not confirm in time") from None
        except (Transient, ConnectionLost) as exc:
            self._seen(BROKER, f"the broker did not take the message ({type(exc).__name__})")
            raise Unavailable("the broker did not take the message") from exc
        self._seen(BROKER, None)
        return await self._in_store(self.intake.accept, header, receipt)

    async def _in_store(self, call: Callable[..., T], *args: Any) -> T:
        """An intake step that reads or writes the store: its Unavailable marks the store down (/readyz)."""
        try:
            done = await self._run(call, *args)
        except Unavailable as exc:
            self._seen(STORE, str(exc))
            raise
        self._seen(STORE, None)
        return done

    def _unavailable(self, header: MshHeader, why: str, peer: str) -> Answer:
        """The 207 answer, at once; its audit record is written by the worker when it is free (it may still be
        held by the publish that timed out), and a store that cannot take it is logged."""
        log.warning("not accepted now: answered for a retry", peer=peer, control_id=header.control_id, reason=why)
        answer = self.intake.unavailable(header, why)
        try:
            recorded = self._worker.submit(self.intake.record_unavailable, header, answer, why)
        except RuntimeError:  # stopped meanwhile: the log line above is all there is
            return answer
        self._recording.add(recorded)
        recorded.add_done_callback(self._recording.discard)
        recorded.add_done_callback(lambda done: self._not_recorded(done, header, peer))
        return answer

    @staticmethod
    def _not_recorded(done: Future[None], header: MshHeader, peer: str) -> None:
        if not done.cancelled() and done.exception() is not None:
            log.warning(
                "a message not published because of an outage could not be audited either",
                peer=peer,
                control_id=header.control_id,
                error=type(done.exception()).__name__,
            )

    def _log(self, answer: Answer, header: MshHeader, peer: str) -> None:
        trigger = answer.trigger if answer.trigger in self.intake.supported.triggers else "other"
        metrics.MLLP_MESSAGES.labels(trigger, answer.code.value).inc()
        log.info(
            "message answered",
            peer=peer,
            sender=f"{header.sending_application}/{header.sending_facility}",
            control_id=answer.control_id,
            trigger=answer.trigger,
            ack=answer.code.value,
            ack_sent=answer.ack is not None,
            error=answer.error or None,
            resent=answer.resent or None,
        )


def _address(writer: asyncio.StreamWriter) -> str:
    address = writer.get_extra_info("peername")
    return str(address[0]) if isinstance(address, tuple) and address else "?"


def _peer(writer: asyncio.StreamWriter) -> str:
    address = writer.get_extra_info("peername")
    if isinstance(address, tuple) and len(address) >= 2:
        return f"[{address[0]}]:{address[1]}" if ":" in str(address[0]) else f"{address[0]}:{address[1]}"
    return "?"
