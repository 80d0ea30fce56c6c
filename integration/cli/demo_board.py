"""The demo's board: the pathway board over the demo's temporary store and vhost, up until Ctrl-C.

Its users (`operations` and `clinical`, each with a random password printed once) and its session secret
are made in the demo's temporary folder and removed with it; the session cookie is not Secure (plain HTTP on
this machine, no reverse proxy). On the in-memory bus there are no queues: the dead-letter page says so.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import click

from integration.adapters.rabbitmq import RabbitConnection
from integration.adapters.sql.store import AuditStore
from integration.adapters.sql.stores import open_audit_store
from integration.bootstrap import broker_connection
from integration.cli.board import pathway_deadlines
from integration.config import Settings, listen_address
from integration.errors import ConfigurationError, ConnectionLost
from integration.web.app import Board, create_app
from integration.web.auth import hash_password, load_users

Lines = list[tuple[str, str]]
ROLES = ("operations", "clinical")  # each the name of the demo's user with that role


def write_users(folder: Path) -> dict[str, str]:
    """The demo's users file in `folder` (users.toml, readable by the owner only); {name: password}."""
    passwords = {role: secrets.token_urlsafe(12) for role in ROLES}
    tables = [
        f'[[user]]\nname = "{role}"\nrole = "{role}"\npassword_hash = "{hash_password(password)}"\n'
        for role, password in passwords.items()
    ]
    users = folder / "users.toml"
    users.write_text("\n".join(tables), encoding="utf-8")
    users.chmod(0o600)
    return passwords


def holding_board(
    settings: Settings, dsn: str, folder: Path, listen: str, say: Callable[[Lines], None]
) -> Callable[[Lines, Settings | None], None]:
    """What the demo calls once its samples are handled: print the lines, serve the board on `listen` over the
    demo's store `dsn` (and the demo's vhost, when given its settings) until Ctrl-C."""
    host, port = listen_address(listen, "--board-listen")
    _bindable(host, port, listen)

    def hold(lines: Lines, on_broker: Settings | None) -> None:
        say(lines)
        passwords = write_users(folder)
        secret = secrets.token_bytes(48)
        board_settings = replace(on_broker or settings, audit_dsn=dsn)

        @contextmanager
        def store() -> Iterator[AuditStore]:
            opened = open_audit_store(dsn, create=False)
            try:
                yield opened
            finally:
                opened.close()

        @contextmanager
        def broker() -> Iterator[RabbitConnection]:
            if on_broker is None:
                raise ConnectionLost("the demo runs on the in-memory bus: no broker queues to show")
            with broker_connection(board_settings) as connection:
                yield connection

        board = Board(board_settings, load_users(folder / "users.toml"), store, broker, pathway_deadlines())
        serve(create_app(board, secret, secure_cookies=False), host, port, passwords)

    return hold


def _bindable(host: str, port: int, listen: str) -> None:
    """ConfigurationError (exit 3, as `board serve` on a taken port) when `host:port` cannot be bound now, so
    that a second demo on a taken port says so before it runs rather than after (the board binds it later)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds it
            probe.bind((host, port))
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise ConfigurationError(
            f"--board-listen {listen} cannot be bound ({why}): another board or demo may listen there; "
            "choose another with --board-listen"
        ) from None


def serve(app: object, host: str, port: int, passwords: dict[str, str]) -> None:
    """Serve `app` in a thread until Ctrl-C (SIGINT; SIGTERM and SIGHUP too, as `run_demo` sets) in this one."""
    import uvicorn

    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,  # no proxy in front of the demo: the address that connects is the client's
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.05)
    if not thread.is_alive():
        click.echo(f"the board could not listen on {host}:{port}", err=True)
        return
    click.echo(f"board: http://{host}:{port}/")
    for role, password in passwords.items():
        click.echo(f"board login: {role} / {password}  (role {role})")
    click.echo("the consumers keep running; Ctrl-C stops the board and the demo")
    try:
        while thread.is_alive():
            time.sleep(0.2)
    except KeyboardInterrupt:
        click.echo("stopping the board")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
