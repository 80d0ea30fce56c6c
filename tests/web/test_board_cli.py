"""`integration board`: hash-password prints an argon2 hash (never the password); serve refuses to start without
its users or its session secret, or with a bad listen address (exit 3, one line naming the setting)."""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from click.testing import CliRunner

from integration.cli.main import main
from integration.errors import ConfigurationError
from integration.web.auth import load_users


def run(args: list[str], env: dict[str, str], stdin: str | None = None) -> tuple[int, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    result = CliRunner().invoke(main, args, input=stdin, env={**clean, **env}, catch_exceptions=False)
    return result.exit_code, result.output


def test_hash_password_reads_stdin_and_prints_an_argon2_hash() -> None:
    code, out = run(["board", "hash-password"], {}, stdin="correct horse battery\n")
    assert code == 0 and "correct horse" not in out
    hashed = out.strip()
    assert hashed.startswith("$argon2id$") and PasswordHasher().verify(hashed, "correct horse battery")


@pytest.mark.parametrize("password", ["", "short-pw-11"])
def test_hash_password_refuses_a_password_shorter_than_12(password: str) -> None:
    code, out = run(["board", "hash-password"], {}, stdin=f"{password}\n")
    assert code == 2 and "at least 12 characters" in out and (not password or password not in out)


def test_a_users_file_with_a_weak_argon2_hash_is_refused_naming_the_setting(tmp_path: Path) -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1).hash("a-good-long-password")
    users = tmp_path / "users.toml"
    users.write_text(f'[[user]]\nname = "ann"\nrole = "clinical"\npassword_hash = "{weak}"\n')
    users.chmod(0o600)
    with pytest.raises(ConfigurationError, match="board_users_file: .* weaker than"):
        load_users(users)


def test_serve_binds_before_it_says_it_listens_and_a_taken_port_is_exit_3(files: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out = run(["board", "serve", "--listen", f"127.0.0.1:{port}"], files)
    assert code == 3 and "cannot be bound" in out and "listens on" not in out
    assert len(out.strip().splitlines()) == 1


def test_serve_believes_x_forwarded_for_only_from_the_trusted_proxies(
    files: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    seen: list[uvicorn.Config] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: seen.append(self.config))
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        listen = f"127.0.0.1:{free.getsockname()[1]}"
    assert run(["board", "serve", "--listen", listen], files)[0] == 0
    trusted = {**files, "INTEGRATION_BOARD_TRUSTED_PROXIES": "10.0.0.5, 10.1.0.0/16"}
    assert run(["board", "serve", "--listen", listen], trusted)[0] == 0
    default, proxied = seen
    assert default.proxy_headers is False
    assert proxied.proxy_headers is True and proxied.forwarded_allow_ips == "10.0.0.5/32,10.1.0.0/16"
    code, out = run(["board", "serve"], {**files, "INTEGRATION_BOARD_TRUSTED_PROXIES": "the proxy"})
    assert code == 3 and "board_trusted_proxies must be IP addresses" in out


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    users = tmp_path / "users.toml"
    code, hashed = run(["board", "hash-password"], {}, stdin="pw-1234567-long\n")
    users.write_text(f'[[user]]\nname = "ann"\nrole = "clinical"\npassword_hash = "{hashed.strip()}"\n')
    secret = tmp_path / "secret"
    secret.write_text(secrets.token_urlsafe(48))
    users.chmod(0o600)
    secret.chmod(0o600)
    return {
        "INTEGRATION_BOARD_USERS_FILE": str(users),
        "INTEGRATION_BOARD_SESSION_SECRET_FILE": str(secret),
        "INTEGRATION_AUDIT_DSN": f"sqlite:///{tmp_path / 'audit.sqlite3'}",
    }


@pytest.mark.parametrize(
    ("drop", "change", "named"),
    [
        ("INTEGRATION_BOARD_SESSION_SECRET_FILE", {}, "board_session_secret_file is not set"),
        ("INTEGRATION_BOARD_USERS_FILE", {}, "board_users_file is not set"),
        (None, {"INTEGRATION_BOARD_LISTEN": "localhost"}, "board_listen must be host:port"),
        (None, {"INTEGRATION_BOARD_LISTEN": "127.0.0.1:99999"}, "board_listen must be host:port"),
        (None, {"INTEGRATION_BOARD_SECURE_COOKIES": "sometimes"}, "board_secure_cookies must be true or false"),
    ],
)
def test_serve_refuses_to_start_without_what_it_needs(
    files: dict[str, str], drop: str | None, change: dict[str, str], named: str
) -> None:
    env = {k: v for k, v in files.items() if k != drop} | change
    code, out = run(["board", "serve"], env)
    assert code == 3 and named in out and len(out.strip().splitlines()) == 1


def test_serve_refuses_a_short_secret(files: dict[str, str], tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_text("too short")
    short.chmod(0o600)
    code, out = run(["board", "serve"], files | {"INTEGRATION_BOARD_SESSION_SECRET_FILE": str(short)})
    assert code == 3 and "at least 32 random bytes" in out and "too short" not in out
