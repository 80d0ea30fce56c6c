"""The `board` commands: serve the pathway board and message browser (`integration.web`), and make a password
hash for its users file.

`board serve` listens on `board_listen` (default 127.0.0.1:8080) over plain HTTP: TLS terminates at a reverse
proxy in front of it (the session cookie is Secure unless `board_secure_cookies` is false, so a browser sends
it over HTTPS only). It needs its users (`board_users_file`) and the secret that signs its session cookies
(`board_session_secret_file`): without either it refuses to start (exit 3, one line naming the setting). It
reads the existing audit store (never creates one) and the configured broker, per request.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from integration.adapters.sql.store import AuditStore
from integration.adapters.sql.stores import open_store
from integration.bootstrap import broker_connection
from integration.cli.audit import EXIT_CONFIGURATION, fail, settings_or_exit
from integration.config import Settings, listen_address
from integration.errors import ConfigurationError

if TYPE_CHECKING:
    from integration.web.app import Board, Deadlines

EXIT_USAGE = 2


@click.group()
def board() -> None:
    """The pathway board and message browser (a web application for the operations and clinical roles)."""


def pathway_deadlines() -> Deadlines:
    """The board's overdue markers: `integration.service.pathway_watch.deadlines`."""
    from integration.service.pathway_watch import deadlines

    return deadlines


def board_for(settings: Settings) -> Board:
    """The board over the configured store and broker; ConfigurationError naming the setting for missing users."""
    from integration.web.app import Board
    from integration.web.auth import load_users

    @contextmanager
    def store() -> Iterator[AuditStore]:
        opened = open_store(settings, create=False)
        try:
            yield opened
        finally:
            opened.close()

    return Board(
        settings, load_users(settings.board_users_file), store, lambda: broker_connection(settings), pathway_deadlines()
    )


def serve_board(settings: Settings, listen: str | None = None) -> None:
    """Run the board until interrupted (uvicorn; no access log: a path may name a message, never a patient).
    The address is bound before the board says it listens: an address in use is exit 3 naming the setting.
    X-Forwarded-For is believed only from `board_trusted_proxies` (none by default)."""
    import socket

    import uvicorn

    from integration.web.app import create_app
    from integration.web.auth import load_secret

    key = "--listen" if listen else "board_listen"
    try:
        host, port = listen_address(listen or settings.board_listen, key)
        secret = load_secret(settings.board_session_secret_file)
        app = create_app(board_for(settings), secret, settings.board_secure_cookies)
    except ConfigurationError as exc:
        fail(EXIT_CONFIGURATION, f"configuration: {exc}")
    try:
        bound = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as exc:
        fail(EXIT_CONFIGURATION, f"configuration: {key} {host}:{port} cannot be bound ({exc.strerror or exc})")
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=bool(settings.board_trusted_proxies),
        forwarded_allow_ips=settings.board_trusted_proxies or None,
    )
    shown = f"[{host}]" if ":" in host else host  # an IPv6 address in a URL
    click.echo(
        f"the board listens on http://{shown}:{bound.getsockname()[1]}/ (TLS at the reverse proxy in front of it)"
    )
    uvicorn.Server(config).run(sockets=[bound])


@board.command("serve")
@click.option("--listen", default=None, metavar="HOST:PORT", help="where to listen (default: the board_listen setting)")
def board_serve(listen: str | None) -> None:
    """Serve the pathway board until interrupted. Exit 3 on a configuration error (no users file, no session
    secret, a bad listen address), one line naming the setting."""
    serve_board(settings_or_exit(), listen)


@board.command("hash-password")
def board_hash_password() -> None:
    """Read a password (prompted twice on a terminal, else the first line of stdin) and print its argon2 hash,
    for a `[[user]]` table's password_hash in the board's users file. The password is never printed."""
    from integration.web.auth import hash_password

    if sys.stdin.isatty():
        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        click.echo(hash_password(password))
    except ValueError as exc:
        fail(EXIT_USAGE, str(exc))
