"""Who reads, from the process's credentials: the OS user every audit record of a read names (the commands and
the board, which adds its own user)."""

from __future__ import annotations

import os
import pwd
from pathlib import Path
from typing import Any

UNSET_LOGINUID = 0xFFFFFFFF


def reader() -> dict[str, Any]:
    """Who reads, from the process's credentials (LOGNAME and USER are whatever the caller sets): the
    effective user, and the session's login user when the kernel knows a different one (under sudo)."""
    uid = os.geteuid()
    who: dict[str, Any] = {"by": _user_name(uid), "uid": uid}
    try:
        login = int(Path("/proc/self/loginuid").read_text(encoding="ascii"))
    except (OSError, ValueError):
        login = UNSET_LOGINUID
    if login not in (UNSET_LOGINUID, uid):
        who["login"] = _user_name(login)
    return who


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid without a passwd entry (a container): the number is what there is
        return f"uid {uid}"
