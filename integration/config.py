"""Settings, read once from the environment, with defaults that run on a laptop from a checkout."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from integration.errors import ConfigurationError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class Settings:
    mappings_dir: Path
    schemas_dir: Path
    max_payload_bytes: int

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        try:
            max_bytes = int(env.get("INTEGRATION_MAX_PAYLOAD_BYTES", 1024 * 1024))
        except ValueError:
            raise ConfigurationError("INTEGRATION_MAX_PAYLOAD_BYTES must be a whole number of bytes") from None
        return cls(
            mappings_dir=Path(env.get("INTEGRATION_MAPPINGS_DIR", PROJECT_ROOT / "mappings")),
            schemas_dir=Path(env.get("INTEGRATION_SCHEMAS_DIR", PROJECT_ROOT / "schemas")),
            max_payload_bytes=max_bytes,
        )
