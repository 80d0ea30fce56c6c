"""The only wiring: `build(settings, *, bus=None, store=None, clock=None)` reads the mappings and schemas once
and returns what a process needs (the pipeline, each flow's handler, a processor on a bus); the `run` command,
the demo, the other commands and the tests all take it from here, with the real adapters or with fakes.

Also the service's process itself (`run_consumers`: the consumers until a signal, the audit store waited for)
and the adapters a command opens from the settings (`broker_connection`)."""

from __future__ import annotations

import gc
import json
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import cached_property, partial
from pathlib import Path
from types import FrameType
from zoneinfo import ZoneInfo

import structlog
from lxml import etree

from integration.adapters.consumer import STORE, ConsumerService
from integration.adapters.health import MAPPINGS, Health, serve
from integration.adapters.mllp import ListenerSettings, MllpListener
from integration.adapters.rabbitmq import (
    BrokerSettings,
    ConfirmedPublisher,
    RabbitConnection,
    connection_parameters,
    masked_url,
)
from integration.adapters.sql.store import AuditStore, Signer
from integration.adapters.sql.stores import mac_keys, masked_dsn, open_audit_store
from integration.adapters.workers import first_signal
from integration.config import Settings, listen_address
from integration.errors import ConfigurationError, ConnectionLost, StoreDamaged, Transient
from integration.flows.acknowledging import AckContext, Acknowledger
from integration.flows.closing import ClosingContext
from integration.flows.dispatch import (
    FLOWS,
    Pipeline,
    answer_unprocessable,
    handler,
    kind_of,
    read_inbound,
    transform,
)
from integration.flows.hotline import HotlineContext
from integration.flows.referral import ReferralContext, ReferralRouting
from integration.formats.json_contract import JsonContract
from integration.log import one_line
from integration.mappings import load_hl7_profile, load_mappings
from integration.service import hl7_intake, pathway_watch
from integration.service.anchors import anchor_job
from integration.service.hl7_intake import ReceiptStore
from integration.service.metrics_refresh import GaugeRefresher, PathwayCounts
from integration.service.outbound import ResendPolicy, resend_unacknowledged
from integration.service.ports import Bus
from integration.service.processor import Handler, Processor, RetryPolicy, Unprocessable
from integration.topology import (
    ACKNOWLEDGEMENT,
    FLOWS_BY_NAME,
    HOTLINE_REPLY,
    HOTLINE_REQUEST,
    REFERRAL_TO_HOSPITAL,
    REFERRAL_TO_MUNICIPALITY,
    REFUSED_QUEUE,
    SENDERS_BY_KIND,
    STATUS_TO_DHRD,
    STATUS_TO_GP,
    Flow,
)

log = structlog.get_logger("integration.run")
DANISH_TIME = ZoneInfo("Europe/Copenhagen")
Clock = Callable[[], datetime]
Fault = Callable[[str], None]  # the processor's fault-injection seam: called at named points (tests only)


def now() -> datetime:
    """The service's clock: the time in Denmark."""
    return datetime.now(DANISH_TIME)


def load_contract(schemas_dir: Path, name: str) -> JsonContract:
    path = schemas_dir / name
    try:
        return JsonContract(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot load schema {path}: {exc}") from None


def load_xml_schema(schemas_dir: Path, name: str) -> etree.XMLSchema:
    path = schemas_dir / name
    try:
        return etree.XMLSchema(etree.parse(str(path)))
    except (OSError, etree.XMLSchemaParseError, etree.XMLSyntaxError) as exc:
        raise ConfigurationError(f"cannot load schema {path}: {exc}") from None


def build_pipeline(settings: Settings) -> Pipeline:
    mappings = load_mappings(settings.mappings_dir)
    hotline = mappings.hotline_settings
    return Pipeline(
        discharge_contract=load_contract(settings.schemas_dir, "discharge-event.schema.json"),
        gp_referral_contract=load_contract(settings.schemas_dir, "gp-referral.schema.json"),
        hospital_closing_contract=load_contract(settings.schemas_dir, "hospital-closing.schema.json"),
        referral=ReferralContext(
            directory=mappings.directory,
            rules=mappings.referral_rules,
            terminology=mappings.terminology,
            routing=ReferralRouting(
                exchange=REFERRAL_TO_MUNICIPALITY.exchange,
                municipality_key=REFERRAL_TO_MUNICIPALITY.key,
                hospital_key=REFERRAL_TO_HOSPITAL.key,
            ),
            gp_clinics=mappings.gp_clinics,
            dcs_suggestions=mappings.dcs_suggestions,
        ),
        max_payload_bytes=settings.max_payload_bytes,
        advice_contract=load_contract(settings.schemas_dir, "advice-request.schema.json"),
        hotline=HotlineContext(
            hotlines=mappings.hotlines,
            timezone=ZoneInfo(hotline["timezone"]),
            replies=hotline["replies"],
            exchange=HOTLINE_REQUEST.exchange,
            queue_key=HOTLINE_REQUEST.key,
            reply_key=HOTLINE_REPLY.key,
            reply_contract=load_contract(settings.schemas_dir, "advice-reply.schema.json"),
            triage_phone=str(hotline["triagePhone"]),
            regional_on_call=hotline["regionalOnCall"],
            terminology=mappings.terminology,
            departments=mappings.directory.departments,
        ),
        closing_schema=load_xml_schema(settings.schemas_dir, "closing-report.xsd"),
        closing=ClosingContext(
            terminology=mappings.terminology,
            directory=mappings.directory,
            gp_clinics=mappings.gp_clinics,
            exchange=STATUS_TO_GP.exchange,
            gp_key=STATUS_TO_GP.key,
            dhrd_key=STATUS_TO_DHRD.key,
        ),
        acknowledger=Acknowledger(
            AckContext(
                exchange=ACKNOWLEDGEMENT.exchange, routing_key=ACKNOWLEDGEMENT.key, terminology=mappings.terminology
            )
        ),
        municipality_sors=frozenset(
            m.endpoint.sor for m in mappings.directory.municipalities.values() if m.endpoint is not None
        ),
        hl7_profile=load_hl7_profile(settings.mappings_dir, mappings.directory),
        missed_referral=mappings.missed_referral,
    )


def flow_handlers(pipeline: Pipeline) -> dict[str, Handler]:
    """The handler of each flow's inbound queue: one per row of the dispatch table (`flows.dispatch.FLOWS`)."""
    return {flow: handler(pipeline, flow) for flow in FLOWS}


def unprocessable_answer(pipeline: Pipeline) -> Unprocessable:
    """What the processor sends for a message it gives up on for now."""
    return lambda body, now: answer_unprocessable(body, pipeline, now)


@dataclass(frozen=True)
class Wiring:
    """What a process needs, wired once by `build`. `processor_on(bus)` makes a processor on a bus (the
    consumer makes one per connection); `processor` is the one on the bus given to `build`."""

    settings: Settings
    pipeline: Pipeline
    handlers: Mapping[str, Handler]
    unprocessable: Unprocessable | None
    clock: Clock
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    store: AuditStore | None = None
    bus: Bus | None = None
    fault: Fault | None = None

    def processor_on(self, bus: Bus) -> Processor:
        """A processor publishing on `bus` and recording in the store. RuntimeError (a bug) without a store."""
        if self.store is None:
            raise RuntimeError("no audit store was given to build(); a processor records in one")
        if self.fault is None:
            return Processor(self.handlers, self.store, bus, self.clock, self.retry, self.unprocessable)
        return Processor(self.handlers, self.store, bus, self.clock, self.retry, self.unprocessable, fault=self.fault)

    @cached_property
    def processor(self) -> Processor:
        """The processor on the bus given to `build`. RuntimeError (a bug) without a bus or a store."""
        if self.bus is None:
            raise RuntimeError("no bus was given to build(); use processor_on(bus)")
        return self.processor_on(self.bus)

    def with_store(self, store: AuditStore) -> Wiring:
        """The same wiring recording in `store` (opened after the rest: `run` waits for it)."""
        return replace(self, store=store)

    def flows(self, names: str | None = None) -> list[Flow]:
        """The flows to consume: `names` (comma-separated), else the configured ones, else every flow with a
        handler. ConfigurationError naming a flow without a handler."""
        chosen = [n.strip() for n in names.split(",")] if names else list(self.settings.flows) or list(self.handlers)
        unknown = [n for n in chosen if n not in self.handlers]
        if unknown:
            raise ConfigurationError(
                f"no handler for flow(s) {', '.join(unknown)}; available: {', '.join(self.handlers)}"
            )
        return [FLOWS_BY_NAME[n] for n in chosen]


def build(
    settings: Settings,
    *,
    bus: Bus | None = None,
    store: AuditStore | None = None,
    clock: Clock | None = None,
    pipeline: Pipeline | None = None,
    handlers: Mapping[str, Handler] | None = None,
    retry: RetryPolicy | None = None,
    fault: Fault | None = None,
) -> Wiring:
    """Wire a process from `settings`: the pipeline from its mappings and schemas (ConfigurationError when they
    cannot be read), each flow's handler, the answer to a message given up on, the clock (default: `now`).
    A bus and a store are given by the caller, real or fake; a test may also give a pipeline it configured,
    handlers of its own, a faster retry policy or a fault hook."""
    pipeline = build_pipeline(settings) if pipeline is None else pipeline
    return Wiring(
        settings=settings,
        pipeline=pipeline,
        handlers=flow_handlers(pipeline) if handlers is None else handlers,
        unprocessable=unprocessable_answer(pipeline),
        clock=now if clock is None else clock,
        retry=RetryPolicy() if retry is None else retry,
        store=store,
        bus=bus,
        fault=fault,
    )


def mllp_listener(
    settings: Settings,
    store: ReceiptStore,
    pipeline: Pipeline,
    clock: Clock = now,
    validate: hl7_intake.Validate | None = None,
    bind: tuple[str, int] | None = None,
    publish: hl7_intake.Publish | None = None,
) -> MllpListener:
    """The MLLP listener (`integration mllp`, the demo): its intake validates a message as the discharge
    flow's consumer will read it (`read_inbound`, the queue's kind, its `read`: the flow itself is not run)
    and publishes it to the hospitals' exchange under the discharge flow's routing key, as a hospital would.
    The listener's broker user is `mllp_broker_url`'s (default: broker_url's). A test may give `validate`; the demo
    and the tests `bind` an address of their own (port 0: a free one); the demo on its in-memory bus gives
    `publish`."""

    def as_the_consumer_reads(raw: bytes, at: datetime) -> None:
        message = read_inbound(raw, pipeline.max_payload_bytes)
        kind_of(message, hl7_intake.FLOW).read(message, pipeline, at)

    broker = replace(broker_settings(settings), url=settings.mllp_broker_url or settings.broker_url)
    publisher = ConfirmedPublisher(broker, SENDERS_BY_KIND["hospital"].exchange, hl7_intake.FLOW)
    host, port = bind or listen_address(settings.mllp_listen, "mllp_listen")
    listener_settings = ListenerSettings(
        host=host,
        port=port,
        max_message_bytes=settings.mllp_max_message_bytes,
        max_connections=settings.mllp_max_connections,
        idle_timeout=float(settings.mllp_idle_timeout_seconds),
        frame_timeout=float(settings.mllp_frame_timeout_seconds),
        publish_timeout=float(settings.mllp_publish_timeout_seconds),
        tls_cert_file=str(settings.mllp_tls_cert_file) if settings.mllp_tls_cert_file else None,
        tls_key_file=str(settings.mllp_tls_key_file) if settings.mllp_tls_key_file else None,
        tls_client_ca_file=str(settings.mllp_tls_client_ca_file) if settings.mllp_tls_client_ca_file else None,
        max_connections_per_peer=settings.mllp_max_connections_per_peer,
    )
    intake = hl7_intake.Intake(
        store=store,
        validate=validate or as_the_consumer_reads,
        publish=publish or (lambda body, message_id: publisher.publish(body, message_id, hl7_intake.ER7_CONTENT_TYPE)),
        clock=clock,
        new_control_id=lambda: uuid.uuid4().hex[:20],
        senders=hl7_intake.AllowedSenders(settings.mllp_allowed_senders),
    )
    probe = None if publish else publisher.connect
    return MllpListener(listener_settings, intake, on_stop=publisher.close, probe=probe)


def broker_settings(settings: Settings) -> BrokerSettings:
    return BrokerSettings(
        settings.broker_url,
        settings.prefetch,
        settings.broker_ca_file,
        settings.broker_cert_file,
        settings.broker_key_file,
    )


@contextmanager
def broker_connection(settings: Settings) -> Iterator[RabbitConnection]:
    """The configured broker, for a command. A broker that cannot be reached, or refuses us, is a
    ConnectionLost naming the (masked) URL; the broker's own error stays its cause."""
    try:
        connection = RabbitConnection(broker_settings(settings))
    except ConnectionLost as exc:
        cause = exc.__cause__ or exc.__context__ or exc  # the adapter keeps pika's error as the context
        said = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
        raise ConnectionLost(f"no connection to {masked_url(settings.broker_url)} ({said})") from exc
    try:
        yield connection
    finally:
        connection.close()


# The shipped sample inputs (package data, the demo's too): what `warm_up` runs through the pipeline.
WARM_UP_SAMPLES = Path(__file__).resolve().parent / "cli" / "samples"


def warm_up(pipeline: Pipeline, clock: Clock, samples: Path = WARM_UP_SAMPLES) -> int:
    """Run each sample input under `samples` through the pipeline once (`transform`: nothing stored, nothing
    published), so that the first real message does not pay for what is made on first use — the R4 schema
    validator compiled, the FHIRPath rules parsed, the mappings' caches filled: about 100 ms each for the first
    referral and the first of each other kind (issue #16's latency). A sample that fails is skipped: a warm-up
    never stops the service (a region's own mappings may refuse a shipped sample: the line names them). Returns
    how many samples ran; logs one line with those that failed and the milliseconds taken."""
    started, ran, failed = time.perf_counter(), 0, []
    for path in sorted(p for p in samples.glob("*/*") if p.is_file()):
        try:
            transform(path.read_bytes(), pipeline, clock())
        except Exception as exc:  # noqa: BLE001 - a refusal or a defect: the message path will say it for real
            failed.append(path.name)
            log.debug("warm-up sample not transformed", sample=path.name, error=type(exc).__name__)
        ran += 1
    log.info("warmed up", samples=ran, failed=failed, ms=round((time.perf_counter() - started) * 1000))
    return ran


def freeze_long_lived() -> None:
    """Collect, then keep every object made so far out of the cyclic garbage collector's full collections
    (`gc.freeze`): the definitions, schemas, compiled rules and mappings live as long as the process, and a
    full collection walking them paused the consumer loop for tens of milliseconds (issue #16's p99)."""
    gc.collect()
    gc.freeze()


def resend_policy(settings: Settings) -> ResendPolicy:
    return ResendPolicy(timedelta(minutes=settings.ack_timeout_minutes), settings.max_resends)


def run_consumers(
    settings: Settings, flow_names: str | None, fault: Fault | None = None, worker: tuple[int, int] | None = None
) -> None:
    """Run the consumers until SIGTERM, SIGINT or SIGHUP. An audit store that is down at start is waited for,
    as during operation: one line says what is awaited, `/readyz` fails until it answers. The health
    endpoints are served first (their address in use is a ConfigurationError), and `/readyz` names the
    mappings until they have loaded. `fault` is passed to the processors (the fault tests' kill switch;
    never set by the command line). `worker` (i, N): this process is worker i of `run --processes N`
    (`adapters.workers`): every log line names it, and only worker 0 runs the periodic jobs (the resend
    of unacknowledged messages, the chain's anchor), so that nothing is resent once per worker.

    The stopping signals are handled from the first moment (a stop while starting is a clean stop, exit 0, not
    a kill); when the start fails, the handlers before are put back."""
    if worker is not None:
        structlog.contextvars.bind_contextvars(worker=worker[0])
    previous = {signum: signal.getsignal(signum) for signum in STOPPING_SIGNALS}
    stopping, signalled = _stop_on_signals()
    try:
        _start_and_consume(settings, flow_names, fault, worker is None or worker[0] == 0, stopping, signalled)
    except BaseException:  # a start that failed hands the process back as it was (an in-process caller, a test)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        raise
    # Stopped: the handlers stay, so that a second signal arriving as the process exits (the group's SIGHUP after
    # the supervisor's SIGTERM) cannot turn a clean stop into a kill.


def _start_and_consume(
    settings: Settings,
    flow_names: str | None,
    fault: Fault | None,
    jobs: bool,
    stopping: threading.Event,
    signalled: list[str],
) -> None:
    """`run_consumers` once the stopping signals are handled: serve health, build, open the store, warm up,
    consume until stopped. `jobs`: this process runs the periodic jobs (worker 0, or the only process)."""
    health = Health()
    health.down(MAPPINGS, f"not loaded yet ({settings.mappings_dir})")
    serve(health, settings.health_listen)
    wiring = build(settings, fault=fault)
    flows = wiring.flows(flow_names)
    broker = broker_settings(settings)
    # A broker URL that cannot work is a configuration error now, not a retry loop.
    vhost = connection_parameters(broker)[0].virtual_host
    keys = mac_keys(settings)
    store = wait_for_store(settings.audit_dsn, health, stopping, sign=keys.sign if keys else None)
    if store is None:
        log.info("stopped while waiting for the audit store", signal=signalled[0] if signalled else None)
        return
    # After every check an operator's mistake can fail (its one line is then the only one), before the first message
    warm_up(wiring.pipeline, wiring.clock)
    health.up(MAPPINGS)
    if stopping.is_set():
        log.info("stopped while starting", signal=signalled[0] if signalled else None)
        store.close()
        return
    policy = resend_policy(settings)
    anchor = anchor_job(settings, store)  # the chain's head, out of the database's reach (decision 15)
    service = ConsumerService(
        broker,
        flows,
        wiring.with_store(store).processor_on,
        periodic=(lambda bus: (anchor(), resend_unacknowledged(store, bus, wiring.clock(), policy))) if jobs else None,
        health=health,
        refresh=gauge_refresher(settings, wiring, store, flows, health, keys.sign if keys else None, pathway=jobs),
    )
    log.info(
        "starting",
        flows=[f.name for f in flows],
        queues=[f.queue for f in flows],
        vhost=vhost,
        broker=masked_url(broker.url),
        audit=masked_dsn(settings.audit_dsn),
        prefetch=broker.prefetch,
        periodic_jobs=jobs,
    )

    def stop_when_signalled() -> None:
        stopping.wait()
        if signalled:
            log.info("stopping: finishing the messages in hand", signal=signalled[0])
        service.stop()

    threading.Thread(target=stop_when_signalled, daemon=True).start()
    freeze_long_lived()
    try:
        service.run()
    finally:
        if jobs:
            anchor.last()
        store.close()
    log.info("stopped", handled=service.handled)


def gauge_refresher(
    settings: Settings,
    wiring: Wiring,
    store: AuditStore,
    flows: Sequence[Flow],
    health: Health,
    sign: Signer | None = None,
    pathway: bool = True,
) -> GaugeRefresher:
    """The refresher of the store- and broker-derived gauges for the consumer loop: the consumed flows'
    dead-letter queues, the refused queue and the flows' inbound queues, the hotline limit, the store asked
    only while the consumer believes it answers. The pathway's deadlines, which read every open course, are
    counted in a thread of their own on a store handle of their own (`pathway_overdue_apart`): never a pause in
    the consumer loop, however many courses are open (issue #16's soak); under `run --processes N` by worker 0
    alone (`pathway`), as the periodic jobs are."""
    return GaugeRefresher(
        store=store,
        hotlines=wiring.pipeline.hotline.hotlines,
        hotline_limit=settings.hotline_overdue_hours,
        dead_letter_queues=[f.dead_letter_queue for f in flows] + [REFUSED_QUEUE],
        inbound_queues=[f.queue for f in flows],
        clock=wiring.clock,
        store_up=lambda: health.available(STORE),
        pathway=pathway_overdue_apart(settings, sign) if pathway else None,
        pathway_apart=True,
    )


def pathway_overdue(settings: Settings, store: AuditStore) -> PathwayCounts:
    """The single place where the pathway's deadlines are wired into the metrics (`rehab_pathway_overdue`):
    the overdue deadlines of each rule at a moment (`pathway_watch.overdue_counts`), from the audit store."""
    return partial(pathway_watch.overdue_counts, store, settings)


def pathway_overdue_apart(settings: Settings, sign: Signer | None = None) -> PathwayCounts:
    """`pathway_overdue` on a store handle of its own, opened at the first count and kept (the refresher runs the
    counts one at a time in a thread of their own; the consumer's handle is its loop's). Opened as the service
    opens its store, not as a reader: a reader's open checks every page of the file, which the soak showed
    growing with the log at every count."""
    own: list[AuditStore] = []

    def counts(now: datetime) -> Mapping[str, int]:
        if not own:
            own.append(open_audit_store(settings.audit_dsn, sign=sign))
        return pathway_overdue(settings, own[0])(now)

    return counts


# What stops the consumers gracefully (the batch in hand finished and acked, the chain anchored once more, exit
# 0): SIGHUP too, the terminal closed or the process group hung up (a worker of `run --processes` gets the
# group's), which would otherwise end the process at once, unlogged and unanchored.
STOPPING_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _stop_on_signals() -> tuple[threading.Event, list[str]]:
    """An event set on any of STOPPING_SIGNALS, and the signals' names as they come."""
    stopping = threading.Event()
    signalled: list[str] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        # No logging here: a signal handler may interrupt a log line being written. The stopper thread says it.
        # Only the first signal sets the event: a second one (the group's SIGHUP and the supervisor's SIGTERM
        # arrive together) can run while the first handler is inside `stopping.set()`, holding the event's
        # lock, and would wait for it for ever in the same thread (`first_signal`).
        if first_signal(signalled, signal.Signals(signum).name):
            stopping.set()

    for signum in STOPPING_SIGNALS:
        signal.signal(signum, on_signal)
    return stopping, signalled


def wait_for_store(
    dsn: str, health: Health, stopping: threading.Event, max_wait: float = 15.0, sign: Signer | None = None
) -> AuditStore | None:
    """Open the audit store, waiting with backoff while it is unavailable; None when stopped meanwhile. A
    damaged store (StoreDamaged: its file, or a schema other than its version says) is raised at once:
    waiting will not mend it, and the service must not migrate it."""
    delay = 0.5
    while True:
        try:
            store = open_audit_store(dsn, sign=sign)
        except StoreDamaged:
            raise
        except Transient as exc:
            if health.down("audit-store", str(exc)):
                log.warning("waiting for the audit store", audit=masked_dsn(dsn), reason=one_line(exc))
            if stopping.wait(delay):
                return None
            delay = min(delay * 2, max_wait)
            continue
        away = health.up("audit-store")
        if away is not None:
            log.info("audit store available", waited_s=round(away, 1))
        return store
