"""Settings, read once: defaults that run on a laptop, then an optional TOML file, then the environment.

INTEGRATION_CONFIG             path of a TOML file whose [integration] table sets any key below
INTEGRATION_BROKER_URL         amqp(s)://user:password@host:port/vhost  (guest is for local development only);
                               several, comma-separated (a list in the file): the nodes of one cluster
INTEGRATION_BROKER_CA_FILE, INTEGRATION_BROKER_CERT_FILE, INTEGRATION_BROKER_KEY_FILE   TLS (amqps)
INTEGRATION_PREFETCH           unacked messages per consumer (default 100; at most 65535, AMQP's prefetch-count)
INTEGRATION_AUDIT_DSN          sqlite:///path or postgresql://… (default: sqlite in the user's state directory,
                               $XDG_STATE_HOME/hjerterehab-integration/audit.sqlite3, else
                               ~/.local/state/hjerterehab-integration/audit.sqlite3; never relative to the working
                               directory: a relative sqlite path is made absolute when the settings are read)
INTEGRATION_FLOWS              comma-separated flows to consume (default: every flow with a handler)
INTEGRATION_MAPPINGS_DIR, INTEGRATION_SCHEMAS_DIR, INTEGRATION_MAX_PAYLOAD_BYTES
INTEGRATION_HOTLINE_OVERDUE_HOURS  open hotline requests older than this are overdue (default 8)
INTEGRATION_ACK_TIMEOUT_MINUTES    our MedCom messages without an ack after this are resent (default 30)
INTEGRATION_MAX_RESENDS            resends before a message is flagged for manual follow-up (default 2)
INTEGRATION_VISITATION_WINDOW_DAYS days after a discharge without a referral by which the visitation talk is due
                                   (default 21: the agreement has the talk about two weeks after discharge)
INTEGRATION_HEART_FAILURE_VISITATION_WINDOW_DAYS  the same for a heart-failure patient, who may be visited later
                                   (default 56; at least the window above; both at most 366)
INTEGRATION_MEDCOM_DEFINITIONS_DIR, INTEGRATION_FHIR_CORE_DIR   definitions for `integration validate`'s
                                   profile checks (default ../shared/medcom/definitions, .cache/hl7.fhir.r4.core)
INTEGRATION_HEALTH_LISTEN          host:port of /healthz, /readyz and /metrics (default 127.0.0.1:9464; empty: off)
INTEGRATION_AUDIT_ANCHOR_MINUTES   the consumer publishes the audit chain's head this often, when it moved (default 5)
INTEGRATION_AUDIT_ANCHOR_FILE      and appends it to this file (default: none, the log line only); keep it where
                                   the database's owner cannot rewrite it (append-only, or shipped off the host)
INTEGRATION_AUDIT_HMAC_KEY_FILE    HMAC keys for the audit records, `<key id> <hex secret>` per line (default: none)
INTEGRATION_AUDIT_HMAC_KEY_ID      the key id that signs new records (default: the file's only key)
INTEGRATION_CLOSING_REPORT_WEEKS   weeks after its referral was sent by which a municipal course's closing report
                                   is due (`integration pathway overdue`; default 16, 1 to 104)
INTEGRATION_BOARD_LISTEN           host:port the pathway board (`integration board serve`) listens on
                                   (default 127.0.0.1:8080: behind a reverse proxy that terminates TLS)
INTEGRATION_BOARD_USERS_FILE       the board's users: a TOML file of `[[user]]` tables (name, role "operations" or
                                   "clinical", password_hash from `integration board hash-password`)
INTEGRATION_BOARD_SESSION_SECRET_FILE  the secret that signs the board's session cookies (at least 32 bytes); the
                                   board refuses to start without it
INTEGRATION_BOARD_SECURE_COOKIES   true (default) or false: the session cookie's Secure flag (the browser sends it
                                   over HTTPS only: TLS terminates at the reverse proxy); false for plain-HTTP tests
INTEGRATION_BOARD_TRUSTED_PROXIES  the reverse proxies whose X-Forwarded-For the board believes (IP addresses or
                                   networks, comma-separated; default none: the address that connects is the
                                   client's, for the login limit and the log)
INTEGRATION_MLLP_LISTEN           host:port the MLLP listener (`integration mllp`) binds (default 127.0.0.1:2575)
INTEGRATION_MLLP_MAX_MESSAGE_BYTES a frame larger than this is refused (AR) without being held (default 1 MiB)
INTEGRATION_MLLP_MAX_CONNECTIONS   connections at once; one more is closed at accept (default 20)
INTEGRATION_MLLP_IDLE_TIMEOUT_SECONDS  a connection silent this long between frames is closed (default 300)
INTEGRATION_MLLP_FRAME_TIMEOUT_SECONDS a frame must arrive whole within this of its start block (default 30)
INTEGRATION_MLLP_PUBLISH_TIMEOUT_SECONDS the broker's confirm must come within this, else AR 207 (default 15)
INTEGRATION_MLLP_TLS_CERT_FILE, INTEGRATION_MLLP_TLS_KEY_FILE   TLS for MLLP (PEM; default: none, plain TCP)
INTEGRATION_MLLP_BROKER_URL        the broker URL the listener publishes with (a hospital sender's user, which may
                                   write rehab.inbound.hospital; default: broker_url)
INTEGRATION_MLLP_HEALTH_LISTEN     host:port of the MLLP listener's /livez, /readyz and /metrics (default
                                   127.0.0.1:9465, beside `run`'s 9464 on one host; empty: off)
INTEGRATION_MLLP_ALLOWED_SENDERS   the senders the MLLP listener takes messages from, comma-separated: a sending
                                   facility (MSH-4, or its first component) or `application@facility` (MSH-3@MSH-4);
                                   `*` takes any sender (never in production). Empty (the default): `integration
                                   mllp` does not start; another sender's message is answered AR, ERR 103 at MSH-4
INTEGRATION_MLLP_TLS_CLIENT_CA_FILE  PEM CA certificates: mutual TLS, a client certificate signed by one of them is
                                   required (default: none, no client certificate asked for)
INTEGRATION_MLLP_MAX_CONNECTIONS_PER_PEER  connections at once from one address (default 4)

Every whole number is at least 1 and at most a bound (`MOST`: a protocol field's width, or a year, a day, where
more is a typing mistake); a value outside is refused naming the setting and its range.

A name the service does not know is refused (ConfigurationError naming it, with the nearest known name): a
table other than [integration] or a key not above in the file, and any INTEGRATION_* environment variable
other than these (and INTEGRATION_TEST_RABBIT_OWNER, which the test suite sets on broker nodes it starts) — a
misspelled setting must not leave the service running on a default.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from integration.errors import ConfigurationError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def shipped(name: str) -> Path:
    """`mappings` or `schemas` as this installation has them: the copy a wheel carries inside the package
    (setup.py), else the checkout's top-level folder (a checkout, an editable install)."""
    inside = Path(__file__).resolve().parent / "_shipped" / name
    return inside if inside.is_dir() else PROJECT_ROOT / name


STATE_DIR_NAME = "hjerterehab-integration"  # under $XDG_STATE_HOME (the systemd unit: StateDirectory=)
FILE_TABLE = "integration"
# INTEGRATION_* variables that are no setting but are known: the settings file's path, and the marker the test
# suite puts in the environment of the broker nodes it starts (tests/runtime/rabbit_nodes.py).
OTHER_VARIABLES = frozenset({"INTEGRATION_CONFIG", "INTEGRATION_TEST_RABBIT_OWNER"})

AUDIT_DSN_SETTING = "audit_dsn (INTEGRATION_AUDIT_DSN)"  # how an error names the setting
MAX_VISITATION_DAYS = 366  # a visitation window of more than a year is a typing mistake
MAX_CLOSING_REPORT_WEEKS = 104  # a municipal course of more than two years is a typing mistake
MAX_MESSAGE_BYTES = 512 * 1024 * 1024  # RabbitMQ's max_message_size cannot be set higher
A_DAY_SECONDS, A_YEAR_HOURS = 86_400, 366 * 24
_DIGITS = re.compile(r"[0-9]{1,18}")

DEFAULTS: dict[str, Any] = {
    "broker_url": "amqp://guest:guest@127.0.0.1:5672/hjerterehab",
    "broker_ca_file": None,
    "broker_cert_file": None,
    "broker_key_file": None,
    "prefetch": 100,
    "audit_dsn": None,  # default_audit_dsn(): in the user's state directory
    "flows": "",
    "mappings_dir": str(shipped("mappings")),
    "schemas_dir": str(shipped("schemas")),
    "max_payload_bytes": 1024 * 1024,
    "hotline_overdue_hours": 8,
    "ack_timeout_minutes": 30,
    "max_resends": 2,
    "visitation_window_days": 21,
    "heart_failure_visitation_window_days": 56,
    "medcom_definitions_dir": str(PROJECT_ROOT.parent / "shared" / "medcom" / "definitions"),
    "fhir_core_dir": str(PROJECT_ROOT / ".cache" / "hl7.fhir.r4.core"),
    "health_listen": "127.0.0.1:9464",
    "audit_anchor_minutes": 5,
    "audit_anchor_file": "",
    "audit_hmac_key_file": "",
    "audit_hmac_key_id": "",
    "closing_report_weeks": 16,
    "board_listen": "127.0.0.1:8080",
    "board_users_file": "",
    "board_session_secret_file": "",
    "board_secure_cookies": "true",
    "board_trusted_proxies": "",
    "mllp_listen": "127.0.0.1:2575",
    "mllp_max_message_bytes": 1024 * 1024,
    "mllp_max_connections": 20,
    "mllp_idle_timeout_seconds": 300,
    "mllp_frame_timeout_seconds": 30,
    "mllp_publish_timeout_seconds": 15,
    "mllp_tls_cert_file": "",
    "mllp_tls_key_file": "",
    "mllp_broker_url": "",
    "mllp_health_listen": "127.0.0.1:9465",
    "mllp_allowed_senders": "",
    "mllp_tls_client_ca_file": "",
    "mllp_max_connections_per_peer": 4,
}
# The settings that are true or false: a TOML boolean in the file, or true/false (also 1/0, yes/no) as text.
BOOLEANS = frozenset({"board_secure_cookies"})
_TRUE, _FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no"})
# The settings that are whole numbers (their defaults are integers); every other one is a string.
WHOLE_NUMBERS = frozenset(key for key, value in DEFAULTS.items() if type(value) is int)
# The largest value of each whole-number setting (the least is 1 for every one), its unit and why: a protocol
# field's width, or the point past which it is a typing mistake (and a time span would overflow `timedelta`).
# Checked when the settings are read (`_whole_number`): a value out of range is one line naming the setting.
MOST: dict[str, tuple[int, str, str]] = {
    "prefetch": (65_535, "", "AMQP 0-9-1 basic.qos prefetch-count is a 16-bit number"),
    "max_payload_bytes": (MAX_MESSAGE_BYTES, " bytes", "512 MiB: RabbitMQ takes no larger message"),
    "hotline_overdue_hours": (A_YEAR_HOURS, " hours", "a year"),
    "ack_timeout_minutes": (A_YEAR_HOURS * 60, " minutes", "a year"),
    "max_resends": (100, "", "a message resent more often needs a person long before"),
    "visitation_window_days": (MAX_VISITATION_DAYS, " days", "a year"),
    "heart_failure_visitation_window_days": (MAX_VISITATION_DAYS, " days", "a year"),
    "audit_anchor_minutes": (24 * 60, " minutes", "a day: anchors further apart leave more of the log unanchored"),
    "closing_report_weeks": (MAX_CLOSING_REPORT_WEEKS, " weeks", "two years"),
    "mllp_max_message_bytes": (MAX_MESSAGE_BYTES, " bytes", "512 MiB: RabbitMQ takes no larger message"),
    "mllp_max_connections": (65_535, "", "more is a typing mistake"),
    "mllp_max_connections_per_peer": (65_535, "", "more is a typing mistake"),
    "mllp_idle_timeout_seconds": (A_DAY_SECONDS, " seconds", "a day"),
    "mllp_frame_timeout_seconds": (A_DAY_SECONDS, " seconds", "a day"),
    "mllp_publish_timeout_seconds": (A_DAY_SECONDS, " seconds", "a day"),
}
MLLP_NUMBERS = (
    "mllp_max_message_bytes",
    "mllp_max_connections",
    "mllp_max_connections_per_peer",
    "mllp_idle_timeout_seconds",
    "mllp_frame_timeout_seconds",
    "mllp_publish_timeout_seconds",
)


@dataclass(frozen=True, slots=True)
class Settings:
    mappings_dir: Path
    schemas_dir: Path
    max_payload_bytes: int
    broker_url: str = DEFAULTS["broker_url"]
    broker_ca_file: str | None = None
    broker_cert_file: str | None = None
    broker_key_file: str | None = None
    prefetch: int = 100
    audit_dsn: str = ""  # from_env: default_audit_dsn() when not set
    flows: tuple[str, ...] = ()
    hotline_overdue_hours: int = 8
    ack_timeout_minutes: int = 30
    max_resends: int = 2
    visitation_window_days: int = 21
    heart_failure_visitation_window_days: int = 56
    medcom_definitions_dir: Path = Path(DEFAULTS["medcom_definitions_dir"])
    fhir_core_dir: Path = Path(DEFAULTS["fhir_core_dir"])
    health_listen: str = DEFAULTS["health_listen"]
    audit_anchor_minutes: int = 5
    audit_anchor_file: Path | None = None
    audit_hmac_key_file: Path | None = None
    audit_hmac_key_id: str | None = None
    closing_report_weeks: int = 16
    board_listen: str = DEFAULTS["board_listen"]
    board_users_file: Path | None = None
    board_session_secret_file: Path | None = None
    board_secure_cookies: bool = True
    board_trusted_proxies: str = ""
    mllp_listen: str = DEFAULTS["mllp_listen"]
    mllp_max_message_bytes: int = DEFAULTS["mllp_max_message_bytes"]
    mllp_max_connections: int = DEFAULTS["mllp_max_connections"]
    mllp_idle_timeout_seconds: int = DEFAULTS["mllp_idle_timeout_seconds"]
    mllp_frame_timeout_seconds: int = DEFAULTS["mllp_frame_timeout_seconds"]
    mllp_publish_timeout_seconds: int = DEFAULTS["mllp_publish_timeout_seconds"]
    mllp_tls_cert_file: Path | None = None
    mllp_tls_key_file: Path | None = None
    mllp_broker_url: str = ""  # empty: broker_url
    mllp_health_listen: str = DEFAULTS["mllp_health_listen"]
    mllp_allowed_senders: tuple[str, ...] = ()
    mllp_tls_client_ca_file: Path | None = None
    mllp_max_connections_per_peer: int = DEFAULTS["mllp_max_connections_per_peer"]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        _refuse_unknown_variables(env)
        values = dict(DEFAULTS)
        if path := env.get("INTEGRATION_CONFIG"):
            values.update(_read_file(Path(path)))
        values.update({key: env[name] for key in DEFAULTS if (name := f"INTEGRATION_{key.upper()}") in env})
        if not values["audit_dsn"]:
            values["audit_dsn"] = default_audit_dsn(env)
        return cls(
            mappings_dir=Path(values["mappings_dir"]),
            schemas_dir=Path(values["schemas_dir"]),
            max_payload_bytes=_whole_number(values, "max_payload_bytes"),
            broker_url=_url_list(values["broker_url"]),
            broker_ca_file=values["broker_ca_file"] or None,
            broker_cert_file=values["broker_cert_file"] or None,
            broker_key_file=values["broker_key_file"] or None,
            prefetch=_whole_number(values, "prefetch"),
            audit_dsn=(audit_dsn := _absolute_sqlite(str(values["audit_dsn"]))),
            flows=tuple(f.strip() for f in str(values["flows"]).split(",") if f.strip()),
            hotline_overdue_hours=_whole_number(values, "hotline_overdue_hours"),
            ack_timeout_minutes=_whole_number(values, "ack_timeout_minutes"),
            max_resends=_whole_number(values, "max_resends"),
            **_visitation_windows(values),
            medcom_definitions_dir=Path(values["medcom_definitions_dir"]),
            fhir_core_dir=Path(values["fhir_core_dir"]),
            health_listen=str(values["health_listen"] or ""),
            audit_anchor_minutes=_whole_number(values, "audit_anchor_minutes"),
            audit_anchor_file=_anchor_file(values, audit_dsn),
            audit_hmac_key_file=Path(values["audit_hmac_key_file"]) if values["audit_hmac_key_file"] else None,
            audit_hmac_key_id=str(values["audit_hmac_key_id"]) or None,
            closing_report_weeks=_whole_number(values, "closing_report_weeks"),
            board_listen=str(values["board_listen"]).strip(),  # checked by `board serve`: listen_address
            board_users_file=Path(values["board_users_file"]) if values["board_users_file"] else None,
            board_session_secret_file=(
                Path(values["board_session_secret_file"]) if values["board_session_secret_file"] else None
            ),
            board_secure_cookies=_boolean(values, "board_secure_cookies"),
            board_trusted_proxies=_addresses(values, "board_trusted_proxies"),
            mllp_listen=str(values["mllp_listen"]).strip(),  # checked by `integration mllp`: listen_address
            **{key: _whole_number(values, key) for key in MLLP_NUMBERS},
            mllp_tls_cert_file=Path(values["mllp_tls_cert_file"]) if values["mllp_tls_cert_file"] else None,
            mllp_tls_key_file=Path(values["mllp_tls_key_file"]) if values["mllp_tls_key_file"] else None,
            mllp_broker_url=_url_list(values["mllp_broker_url"]) if values["mllp_broker_url"] else "",
            mllp_health_listen=str(values["mllp_health_listen"] or "").strip(),
            mllp_allowed_senders=_text_list(values["mllp_allowed_senders"]),
            mllp_tls_client_ca_file=(
                Path(values["mllp_tls_client_ca_file"]) if values["mllp_tls_client_ca_file"] else None
            ),
        )


def listen_address(value: str, key: str) -> tuple[str, int]:
    """`host:port` (an IPv6 host in brackets) as (host, port), the port 1-65535; ConfigurationError naming
    `key` otherwise."""
    host, colon, port = value.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(f"{key} must be host:port (a port 1-65535), e.g. 127.0.0.1:8080")
    return host, int(port)


def _text_list(value: Any) -> tuple[str, ...]:
    """A comma-separated text (or a list in the file) as its non-empty parts, stripped."""
    parts = value if isinstance(value, list) else str(value or "").split(",")
    return tuple(part for part in (str(p).strip() for p in parts) if part)


def _addresses(values: Mapping[str, Any], key: str) -> str:
    """Comma-separated IP addresses or networks (e.g. `10.0.0.5,10.1.0.0/16`), normalised; "" for none;
    ConfigurationError naming the key for anything else."""
    import ipaddress

    text = str(values[key]).strip()
    parts = [part.strip() for part in text.split(",")] if text else []
    try:
        return ",".join(str(ipaddress.ip_network(part, strict=False)) for part in parts)
    except ValueError:
        raise ConfigurationError(f"{key} must be IP addresses or networks, comma-separated (or empty)") from None


def _boolean(values: Mapping[str, Any], key: str) -> bool:
    """true or false: a TOML boolean, or (the environment) true/false, 1/0, yes/no in any case."""
    value = values[key]
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise ConfigurationError(f"{key} must be true or false")


def _visitation_windows(values: Mapping[str, Any]) -> dict[str, int]:
    """The visitation windows (`course_sequence.visitation_due`), in days: each a positive whole number, the
    heart-failure window no shorter than the other (the agreement lets those patients be visited later, never
    sooner), at most a year (more is a typing mistake). ConfigurationError naming the setting otherwise."""
    window = _whole_number(values, "visitation_window_days")
    heart_failure = _whole_number(values, "heart_failure_visitation_window_days")
    if heart_failure < window:
        raise ConfigurationError(
            f"heart_failure_visitation_window_days ({heart_failure}) must be at least visitation_window_days "
            f"({window}): a heart-failure patient's visitation may come later, never sooner"
        )
    return {"visitation_window_days": window, "heart_failure_visitation_window_days": heart_failure}


def default_audit_dsn(env: Mapping[str, str]) -> str:
    """The SQLite audit store's one place when no DSN is set: `$XDG_STATE_HOME/hjerterehab-integration/
    audit.sqlite3` (an absolute XDG_STATE_HOME only, as the XDG spec says), else `~/.local/state/...`.
    Whatever the working directory, every command of a user finds the same chain."""
    state = env.get("XDG_STATE_HOME", "")
    if not os.path.isabs(state):
        home = env.get("HOME") or str(Path.home())
        state = os.path.join(home, ".local", "state")
    return "sqlite:///" + os.path.join(state, STATE_DIR_NAME, "audit.sqlite3")


def _absolute_sqlite(dsn: str) -> str:
    """A sqlite DSN with a relative path made absolute now, so that every line naming the store names the file.
    ConfigurationError (naming INTEGRATION_AUDIT_DSN) for a path that can never be the store's file: empty (it
    would be the working directory), a directory, a symbolic link, or under something that is not a directory.
    The service would wait for such a store forever, and it sets the mode of the file it opens (owner-only: it
    holds CPR numbers), which must never be a directory's or a link's target's."""
    if not dsn.startswith("sqlite:///"):
        return dsn
    path = dsn.removeprefix("sqlite:///")
    if path == ":memory:":
        return dsn
    if not path or path.endswith("/"):
        raise ConfigurationError(f"{AUDIT_DSN_SETTING}: {dsn} names no file (give sqlite:///path/to/audit.sqlite3)")
    absolute = os.path.abspath(path)
    if (problem := _not_a_file(absolute)) is not None:
        raise ConfigurationError(f"{AUDIT_DSN_SETTING}: {absolute} {problem} (give sqlite:///path/to/audit.sqlite3)")
    return "sqlite:///" + absolute


_KINDS = {stat.S_IFDIR: "is a directory, not a file", stat.S_IFLNK: "is a symbolic link: name the file itself"}


def _not_a_file(path: str) -> str | None:
    """Why `path` cannot be the SQLite store's file, as it stands now; None when it is a regular file or can
    be made one (absent, under a directory). A question the file system answers (lstat: a link is not followed)."""
    try:
        kind = stat.S_IFMT(os.lstat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return _under_a_file(path)
    except OSError:
        return None  # not ours to say (a directory we may not search): opening it says why
    if kind == stat.S_IFREG and (names := os.lstat(path).st_nlink) > 1:
        return hard_links(names)
    return None if kind == stat.S_IFREG else _KINDS.get(kind, "is not a regular file (a device, a pipe, a socket)")


def hard_links(count: int) -> str:
    """What is wrong with a store file of `count` names (SQLite names its WAL after the name it was opened by):
    said by the settings and, for a link made after they were read, by the SQLite adapter."""
    return (
        f"has {count} names (hard links): SQLite would keep a write-ahead log per name and lose or corrupt records; "
        "give the store a file of its own"
    )


def _anchor_file(values: Mapping[str, Any], audit_dsn: str) -> Path | None:
    """INTEGRATION_AUDIT_ANCHOR_FILE, which must not be the SQLite store's file nor its WAL or index: the anchor
    is appended through a descriptor of its own, and closing it would drop the service's locks on the store
    (decision 34) — and write into the records. ConfigurationError naming the setting."""
    if not values["audit_anchor_file"]:
        return None
    anchor = Path(values["audit_anchor_file"])
    if audit_dsn.startswith("sqlite:///") and (store := audit_dsn.removeprefix("sqlite:///")) != ":memory:":
        real = os.path.realpath(store)  # through any symbolic link on the way, to either
        names = [f"{real}{suffix}" for suffix in ("", "-wal", "-shm", "-journal")]
        if os.path.realpath(anchor) in names or any(_same_file(anchor, name) for name in names):
            raise ConfigurationError(
                f"audit_anchor_file (INTEGRATION_AUDIT_ANCHOR_FILE): {anchor} is the audit store's own file ({store}): "
                "keep the anchors apart, out of the database's reach"
            )
    return anchor


def _same_file(one: Path, other: str) -> bool:
    try:
        return os.path.samefile(one, other)
    except OSError:
        return False


def _under_a_file(path: str) -> str | None:
    """Why an absent `path` cannot be created: its nearest existing ancestor is no directory; else None."""
    parent = os.path.dirname(path)
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    return None if os.path.isdir(parent) else f"cannot be created: {parent} is not a directory"


def _nearest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.8)
    return f" (did you mean {close[0]}?)" if close else ""


def _refuse_unknown_variables(env: Mapping[str, str]) -> None:
    known = {f"INTEGRATION_{key.upper()}" for key in DEFAULTS} | OTHER_VARIABLES
    unknown = sorted(name for name in env if name.startswith("INTEGRATION_") and name not in known)
    if unknown:
        settings = [key.upper() for key in DEFAULTS]  # compared without the prefix they all share
        named = "; ".join(
            name + _nearest(name.removeprefix("INTEGRATION_"), settings).replace("mean ", "mean INTEGRATION_")
            for name in unknown
        )
        raise ConfigurationError(f"unknown environment variable(s) {named}: unset them or correct the name")


def _read_file(path: Path) -> dict[str, Any]:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"cannot read the config file {path}: {exc}") from None
    others = sorted(set(document) - {FILE_TABLE})
    if others:
        suggest = {name: _nearest(name, [FILE_TABLE]).replace(FILE_TABLE, f"[{FILE_TABLE}]") for name in others}
        named = "; ".join(f"[{name}]{hint}" for name, hint in suggest.items())
        raise ConfigurationError(f"{path}: unknown table(s) {named}: the settings go in [{FILE_TABLE}]")
    table = document.get(FILE_TABLE)
    if not isinstance(table, dict):
        raise ConfigurationError(f"{path}: no [{FILE_TABLE}] table (its settings would all be defaults)")
    unknown = sorted(set(table) - set(DEFAULTS))
    if unknown:
        named = "; ".join(name + _nearest(name, DEFAULTS) for name in unknown)
        raise ConfigurationError(f"{path}: unknown settings {named}")
    for key, value in table.items():
        _check_file_type(path, key, value)
    return dict(table)


def _toml_type(value: Any) -> str:
    """The TOML name of a value's type, for an error line (never the value: it may be a secret's path)."""
    names = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array", dict: "table"}
    return next((name for kind, name in names.items() if isinstance(value, kind)), "date or time")


def _check_file_type(path: Path, key: str, value: Any) -> None:
    """A setting in the file has its TOML type, never coerced: `prefetch = 2.5` is not 2, `prefetch = true`
    is not 1, `prefetch = "20"` is not 20 (a quoted number is a string). Whole numbers are TOML integers;
    every other setting is a string, and broker_url may be an array of strings too."""
    if key in WHOLE_NUMBERS:
        wanted, ok = "a whole number (a TOML integer, unquoted)", type(value) is int
    elif key in BOOLEANS:
        wanted, ok = "true or false (a TOML boolean)", isinstance(value, bool) or isinstance(value, str)
    elif key in ("broker_url", "mllp_allowed_senders"):
        ok = isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        wanted = "a string or an array of strings"
    else:
        wanted, ok = "a string", isinstance(value, str)
    if not ok:
        raise ConfigurationError(f"{path}: {key} must be {wanted}, not a TOML {_toml_type(value)}")


def _url_list(value: Any) -> str:
    """One URL, several comma-separated, or (in the file) a list of them: kept as one comma-separated string."""
    urls = value if isinstance(value, list) else str(value).split(",")
    cleaned = [str(u).strip() for u in urls if str(u).strip()]
    if not cleaned:
        raise ConfigurationError("broker_url: no broker URL given")
    return ",".join(cleaned)


def _whole_number(values: Mapping[str, Any], key: str) -> int:
    """A whole number from 1 to the setting's `MOST`: an integer (the defaults, the file: `_check_file_type`),
    or from the environment the digits 0-9 alone (no sign, point, exponent, underscore or blank: `2.5`, `1e3`,
    `true` and ` 20` are refused, not read as something near them). ConfigurationError names the setting, its
    environment variable and its range."""
    value = values[key]
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        number = int(value)
    elif type(value) is int:
        number = value
    else:
        source = f" (INTEGRATION_{key.upper()}: the digits 0-9 alone)" if isinstance(value, str) else ""
        raise ConfigurationError(f"{key} must be a whole number{source}")
    most, unit, why = MOST[key]
    span = f"INTEGRATION_{key.upper()} takes 1 to {most}"
    if number <= 0:
        raise ConfigurationError(f"{key} must be positive ({span})")
    if number > most:
        raise ConfigurationError(f"{key} must be at most {most}{unit} ({why}; {span})")
    return number
