"""`integration board`: hash-password prints an argon2 hash (never the password); serve refuses to start without
its users or its session secret, or with a bad listen address (exit 3, one line naming the setting)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from click.testing import CliRunner

from integration.cli.main import main


def run(args: list[str], env: dict[str, str], stdin: str | None = None) -> tuple[int, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    result = CliRunner().invoke(main, args, input=stdin, env={**clean, **env}, catch_exceptions=False)
    return result.exit_code, result.output


def test_hash_password_reads_stdin_and_prints_an_argon2_hash() -> None:
    code, out = run(["board", "hash-password"], {}, stdin="correct horse battery\n")
    assert code == 0 and "correct horse" not in out
    hashed = out.strip()
    assert hashed.startswith("$argon2id$") and PasswordHasher().verify(hashed, "correct horse battery")


def test_hash_password_refuses_an_empty_password() -> None:
    code, out = run(["board", "hash-password"], {}, stdin="\n")
    assert code == 2 and "empty password" in out


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    users = tmp_path / "users.toml"
    code, hashed = run(["board", "hash-password"], {}, stdin="pw-1234567\n")
    users.write_text(f'[[user]]\nname = "ann"\nrole = "clinical"\npassword_hash = "{hashed.strip()}"\n')
    secret = tmp_path / "secret"
    secret.write_text("x" * 48)
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
    code, out = run(["board", "serve"], files | {"INTEGRATION_BOARD_SESSION_SECRET_FILE": str(short)})
    assert code == 3 and "at least 32 bytes" in out and "too short" not in out
