"""Fuzz target: MLLP framing and the ACK's header reader (`python -m tests.fuzz.fuzz_mllp_framing [options]
[corpus]`; corpus in tests/fuzz/corpus/mllp_framing/). Invariants, for any bytes cut into any pieces:

- the frames are the same however the bytes are cut (the first input byte chooses the cuts);
- the reader never holds more than its limit and one piece; an oversized frame keeps at most HEADER_BYTES;
- a frame's header is read or refused (None), never an exception; an ACK built on it has one MSH, one MSA
  and one ERR line, whatever the message's delimiters, and the user message cannot break out of ERR-8.
"""

from __future__ import annotations

import sys
from datetime import datetime

LIMIT = 2048
NOW = datetime.fromisoformat("2027-01-12T10:20:00+01:00")


def frames_of(data: bytes, step: int) -> tuple[list[object], int]:
    from integration.adapters.mllp import FrameReader

    reader = FrameReader(LIMIT)
    out: list[object] = []
    for start in range(0, len(data), step):
        out += reader.feed(data[start : start + step])
        assert reader.peak <= LIMIT + step, (reader.peak, step)
    return out, reader.skipped


def check(raw: bytes) -> None:
    from integration.adapters.mllp import Oversized
    from integration.formats.er7 import ErrorCode
    from integration.formats.hl7_ack import (
        HEADER_BYTES,
        AckCode,
        AckError,
        ErrorLocation,
        build_ack,
        read_header,
    )

    if not raw:
        return
    step, data = raw[0] % 64 + 1, raw[1:]
    whole, _ = frames_of(data, max(len(data), 1))
    cut, _ = frames_of(data, step)
    assert whole == cut, "the frames depend on how the bytes were cut"
    for frame in cut:
        head = frame.head if isinstance(frame, Oversized) else frame.raw  # type: ignore[attr-defined]
        if isinstance(frame, Oversized):
            assert len(frame.head) <= HEADER_BYTES and frame.size > LIMIT
        header = read_header(head)
        if header is None:
            continue
        error = AckError(ErrorCode.DATA_TYPE, "PID-3.1 \r| ^~\\& problem\n", ErrorLocation("PID", 1, 3, 0, 1))
        ack = build_ack(header, AckCode.AE, "X", NOW, (error,))
        lines = ack.split(b"\r")
        assert lines[-1] == b"" and [line[:3] for line in lines[:-1]] == [b"MSH", b"MSA", b"ERR"], ack


def main() -> None:
    import atheris

    with atheris.instrument_imports(include=["integration"]):
        import integration.adapters.mllp  # noqa: F401
        import integration.formats.hl7_ack  # noqa: F401
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
