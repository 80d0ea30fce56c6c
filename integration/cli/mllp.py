"""The `mllp` command: the HL7 v2 MLLP listener until SIGTERM or SIGINT (`integration.adapters.mllp`)."""

from __future__ import annotations

import asyncio
import signal
import ssl
from dataclasses import replace
from typing import cast

import click
import structlog

from integration.adapters.health import Health
from integration.adapters.health import serve as serve_health
from integration.adapters.rabbitmq import BrokerRefused, masked_url
from integration.adapters.sql.stores import open_store
from integration.bootstrap import build_pipeline, mllp_listener
from integration.cli.audit import fail, settings_or_exit
from integration.cli.errors import EXIT_CONFIGURATION
from integration.config import Settings, listen_address
from integration.errors import ConfigurationError
from integration.service.hl7_intake import ANY_SENDER, ReceiptStore

log = structlog.get_logger("integration.mllp")


async def serve(settings: Settings) -> None:
    """Listen until SIGTERM or SIGINT; then messages being answered finish (or their connection closes
    without an ACK: the sender sends again). /livez, /readyz and /metrics on mllp_health_listen (a process of
    its own needs a port of its own: `run` has health_listen). Exit 3 naming the setting when an address is in
    use or TLS files cannot be read."""
    _check_senders(settings)
    if (problem := tls_problem(settings)) is not None:
        fail(EXIT_CONFIGURATION, f"configuration: {problem}")
    try:
        pipeline = build_pipeline(settings)
        store = open_store(settings)
        listener = mllp_listener(settings, cast(ReceiptStore, store), pipeline)
    except ConfigurationError as exc:
        fail(EXIT_CONFIGURATION, f"configuration: {exc}")
    health = Health()
    try:
        serve_health(health, settings.mllp_health_listen, "INTEGRATION_MLLP_HEALTH_LISTEN")
    except ConfigurationError as exc:
        store.close()
        fail(EXIT_CONFIGURATION, f"configuration: {exc}")
    listener.health = health
    _refused_by_the_broker(await listener.first_probe(), settings, store)
    try:
        await listener.start()
    except OSError as exc:
        store.close()
        fail(
            EXIT_CONFIGURATION,
            f"configuration: mllp_listen {settings.mllp_listen} cannot be bound ({exc.strerror or exc})",
        )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    log.info("stopping: finishing the messages being answered")
    await listener.stop()
    store.close()


def _refused_by_the_broker(failure: Exception | None, settings: Settings, store: object) -> None:
    """At start, the broker refusing our login or vhost is a configuration error (exit 3, one line naming the
    setting, as `integration run`); a broker that is not there is an outage: the listener starts, answers AR
    207 and is not ready until it comes (the probe's warning is logged)."""
    if not isinstance(failure, BrokerRefused):
        return
    setting = "INTEGRATION_MLLP_BROKER_URL" if settings.mllp_broker_url else "INTEGRATION_BROKER_URL"
    url = masked_url(settings.mllp_broker_url or settings.broker_url)
    close = getattr(store, "close", None)
    if callable(close):
        close()
    fail(EXIT_CONFIGURATION, f"configuration: the broker refused the login or vhost of {setting} ({url}): {failure}")


CERT, KEY, CLIENT_CA = (
    "INTEGRATION_MLLP_TLS_CERT_FILE",
    "INTEGRATION_MLLP_TLS_KEY_FILE",
    "INTEGRATION_MLLP_TLS_CLIENT_CA_FILE",
)


def tls_problem(settings: Settings) -> str | None:
    """What is wrong with the listener's TLS settings, naming the setting and its file, or None. Half a
    configuration is never plain TCP: a key without its certificate, a certificate without its key, or client
    CAs without a certificate of our own is refused (exit 3), as is a file that cannot be read or used."""
    cert, key, client_ca = settings.mllp_tls_cert_file, settings.mllp_tls_key_file, settings.mllp_tls_client_ca_file
    for given, missing, needs in ((key, CERT, KEY), (cert, KEY, CERT), (client_ca, CERT, CLIENT_CA)):
        if given and not (cert if missing == CERT else key):
            return f"{needs} is set but {missing} is not: TLS needs both the certificate chain and its key"
    if not cert or not key:
        return None
    for setting, path in ((CERT, cert), (KEY, key), (CLIENT_CA, client_ca)):
        if path is None:
            continue
        try:
            path.open("rb").close()
        except OSError as exc:
            return f"{setting} ({path}) cannot be read: {exc.strerror or type(exc).__name__}"
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, ValueError) as exc:
        return f"{CERT} ({cert}) and {KEY} ({key}) are not a PEM certificate chain and its key: {_ssl_reason(exc)}"
    if client_ca is not None:
        try:
            context.load_verify_locations(cafile=str(client_ca))
        except (ssl.SSLError, ValueError) as exc:
            return f"{CLIENT_CA} ({client_ca}) holds no PEM CA certificate: {_ssl_reason(exc)}"
    return None


def _ssl_reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", None) or exc.__class__.__name__)


def _check_senders(settings: Settings) -> None:
    """No sender list: exit 3 (a listener that takes ADT, A13 cancellations among them, from anyone who reaches
    the port must be asked for). `*`: started, with a warning on every start."""
    if not settings.mllp_allowed_senders:
        fail(
            EXIT_CONFIGURATION,
            "configuration: INTEGRATION_MLLP_ALLOWED_SENDERS (mllp_allowed_senders) is empty: list the sending "
            "facilities (MSH-4) or application@facility (MSH-3@MSH-4) this listener takes messages from",
        )
    if ANY_SENDER in settings.mllp_allowed_senders:
        log.warning(
            "INTEGRATION_MLLP_ALLOWED_SENDERS is *: messages from any sender are taken, whoever reaches the port "
            "(never in production)"
        )


@click.command()
@click.option("--host", default=None, help="address to listen on (default: the mllp_listen setting's)")
@click.option("--port", default=None, type=click.IntRange(0, 65535), help="port (default: mllp_listen's, 2575)")
def mllp(host: str | None, port: int | None) -> None:
    """Receive HL7 v2 ADT messages over MLLP and publish them to the discharge flow, acknowledging each only
    once it is on the bus (AA), or refusing it (AE/AR with an ERR naming the field). Exit 0 on SIGTERM, 3 on
    a configuration error (the address in use, TLS files unreadable), 65/66 for a damaged or missing store."""
    settings = settings_or_exit()
    try:
        default_host, default_port = listen_address(settings.mllp_listen, "mllp_listen")
    except ConfigurationError as exc:
        fail(EXIT_CONFIGURATION, f"configuration: {exc}")
    chosen_host = host or default_host
    chosen = f"[{chosen_host}]" if ":" in chosen_host else chosen_host
    settings = replace(settings, mllp_listen=f"{chosen}:{default_port if port is None else port}")
    asyncio.run(serve(settings))
