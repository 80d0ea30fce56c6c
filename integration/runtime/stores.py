"""Opening the audit store named by a DSN: `sqlite:///path` (default) or `postgresql://…`."""

from __future__ import annotations

import re

from integration.errors import ConfigurationError
from integration.runtime.audit_store import AuditStore


def masked_dsn(dsn: str) -> str:
    """The DSN without its password (in the URL's authority or as a password= parameter), for printing."""
    text = re.sub(r"(?i)(password=)[^&\s]*", r"\1***", dsn)
    return re.sub(r"^([a-z]+://[^:/@]*):[^@/]*@", r"\1:***@", text)


def open_audit_store(dsn: str) -> AuditStore:
    if dsn.startswith("sqlite:///"):
        from integration.runtime.sqlite_store import SqliteAuditStore

        return SqliteAuditStore(dsn.removeprefix("sqlite:///"))
    if dsn.startswith(("postgresql://", "postgres://")):
        from integration.runtime.postgres_store import PostgresAuditStore

        return PostgresAuditStore(dsn)
    raise ConfigurationError("audit DSN must start with sqlite:/// or postgresql://")
