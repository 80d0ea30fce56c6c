"""Opening the audit store named by a DSN: `sqlite:///path` (default) or `postgresql://…`.

`create=False` is for the commands that read or verify: they never create (nor migrate) a store,
and a missing one is `StoreMissing`. `open_store` opens the configured store with the configured
HMAC key, as every process that writes to the log must (an unsigned record in a signed log reads
as a forgery).
"""

from __future__ import annotations

import re
import stat

from integration.adapters.sql.store import AuditStore, Signer
from integration.config import Settings
from integration.errors import ConfigurationError
from integration.service.audit_evidence import MacKeys


def masked_dsn(dsn: str) -> str:
    """The DSN without its password (in the URL's authority or as a password= parameter), for printing."""
    text = re.sub(r"(?i)(password=)[^&\s]*", r"\1***", dsn)
    return re.sub(r"^([a-z]+://[^:/@]*):[^@/]*@", r"\1:***@", text)


def open_audit_store(dsn: str, *, create: bool = True, sign: Signer | None = None) -> AuditStore:
    if dsn.startswith("sqlite:///"):
        from integration.adapters.sql.sqlite import SqliteAuditStore

        return SqliteAuditStore(dsn.removeprefix("sqlite:///"), create, sign)
    if dsn.startswith(("postgresql://", "postgres://")):
        from integration.adapters.sql.postgres import PostgresAuditStore

        return PostgresAuditStore(dsn, create, sign)
    raise ConfigurationError("audit DSN must start with sqlite:/// or postgresql://")


def mac_keys(settings: Settings) -> MacKeys | None:
    """The configured HMAC keys, or None. The file must not be readable by others than owner and group."""
    path = settings.audit_hmac_key_file
    if path is None:
        return None
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"audit_hmac_key_file: cannot read {path}: {type(exc).__name__}") from None
    if mode & 0o007:
        raise ConfigurationError(f"audit_hmac_key_file: {path} is readable by others (mode {oct(mode)}): chmod o-rwx")
    try:
        return MacKeys.parse(text, settings.audit_hmac_key_id)
    except ValueError as exc:
        raise ConfigurationError(f"audit_hmac_key_file {path}: {exc}") from None


def open_store(settings: Settings, *, create: bool = True, keys: MacKeys | None = None) -> AuditStore:
    """The configured store, signing new records with the configured key (`keys`, when already loaded)."""
    keys = keys or mac_keys(settings)
    return open_audit_store(settings.audit_dsn, create=create, sign=keys.sign if keys else None)
