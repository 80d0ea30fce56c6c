"""MLLP framing and HL7 ACKs without a network: the frame reader's bounds and the ACK's fields."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from integration.adapters.mllp import Frame, FrameReader, Oversized
from integration.formats.er7 import ErrorCode
from integration.formats.hl7_ack import (
    HEADER_BYTES,
    AckCode,
    AckError,
    ErrorLocation,
    build_ack,
    read_header,
)
from tests.fuzz.fuzz_mllp_framing import check

START, END = b"\x0b", b"\x1c\x0d"
MSH = b"MSH|^~\\&|EPJ|RH|REHAB|KOM|20261130101500||ADT^A03^ADT_A03|C9|P|2.5\rPID|1\r"
CORPUS = Path(__file__).parent / "fuzz" / "corpus" / "mllp_framing"


def test_a_10_mb_frame_is_never_held_only_its_head() -> None:
    reader = FrameReader(1024 * 1024)
    chunk = b"x" * 65536
    out = reader.feed(START + MSH)
    for _ in range(160):  # 10 MiB
        out += reader.feed(chunk)
    out += reader.feed(END + START + MSH + END)
    assert reader.peak <= 1024 * 1024 + 65536
    big, small = out
    assert isinstance(big, Oversized) and big.size == len(MSH) + 160 * 65536 and len(big.head) == HEADER_BYTES
    assert read_header(big.head) is not None and small == Frame(MSH)


def test_an_end_block_split_across_reads_and_bytes_between_frames() -> None:
    reader = FrameReader(4096)
    assert reader.feed(b"\r\n" + START + MSH + b"\x1c") == [] and reader.in_frame
    assert reader.feed(b"\x0d\n") == [Frame(MSH)] and not reader.in_frame and reader.skipped == 3


def test_the_ack_escapes_its_user_message_and_swaps_sender_and_receiver() -> None:
    header = read_header(MSH)
    assert header is not None
    error = AckError(ErrorCode.REQUIRED_FIELD_MISSING, "PID-3 | ^ & ~ \\ missing\r", ErrorLocation("PID", 1, 3))
    ack = build_ack(header, AckCode.AE, "ACK1", datetime.fromisoformat("2027-01-12T10:20:00+01:00"), (error,))
    msh, msa, err, tail = ack.split(b"\r")
    assert msh == b"MSH|^~\\&|REHAB|KOM|EPJ|RH|20270112102000+0100||ACK^A03^ACK|ACK1|P|2.5" and tail == b""
    assert msa == b"MSA|AE|C9"
    assert err == b"ERR||PID^1^3|101^Required field missing^HL70357|E||||PID-3 \\F\\ \\S\\ \\T\\ \\R\\ \\E\\ missing "


@pytest.mark.parametrize("version", ["2.3", "2.3.1", "2.4"])
def test_to_a_v2_3_or_v2_4_message_the_error_is_in_err_1_and_its_text_in_msa_3(version: str) -> None:
    """Those versions' ERR has ERR-1 only (segment ^ sequence ^ field ^ code as a CE in sub-components)."""
    header = read_header(MSH.replace(b"|P|2.5", f"|P|{version}".encode()))
    assert header is not None
    error = AckError(ErrorCode.DATA_TYPE, "PID-3.1: not a CPR number " + "x" * 80, ErrorLocation("PID", 1, 3, 1, 1))
    ack = build_ack(header, AckCode.AE, "ACK1", datetime.fromisoformat("2027-01-12T10:20:00+01:00"), (error,))
    _, msa, err, _ = ack.split(b"\r")
    assert msa == b"MSA|AE|C9|PID-3.1: not a CPR number..."  # 80 characters at most, cut at a word boundary
    assert err == b"ERR|PID^1^3^102&Data type error&HL70357"


def test_an_err_without_a_location_in_the_v2_3_form() -> None:
    header = read_header(MSH.replace(b"|P|2.5", b"|P|2.4"))
    assert header is not None
    error = AckError(ErrorCode.APPLICATION_INTERNAL_ERROR, "not accepted now: send the message again later")
    ack = build_ack(header, AckCode.AR, "ACK1", datetime.fromisoformat("2027-01-12T10:20:00+01:00"), (error,))
    assert ack.split(b"\r")[2] == b"ERR|^^^207&Application internal error&HL70357"


@pytest.mark.parametrize("seed", sorted(p.name for p in CORPUS.iterdir()))
def test_the_fuzz_invariants_hold_on_the_corpus(seed: str) -> None:
    check((CORPUS / seed).read_bytes())


def test_fuzz_target_short_seeded_run(tmp_path: Path) -> None:
    pytest.importorskip("atheris", reason="the fuzz extra is not installed (make install installs it)")
    command = [
        sys.executable,
        "-m",
        "tests.fuzz.fuzz_mllp_framing",
        str(tmp_path),
        str(CORPUS),
        "-runs=20000",
        "-seed=1",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_start_block_before_the_end_block_begins_a_new_frame() -> None:
    reader = FrameReader(1024)
    out = reader.feed(START + MSH[:20])
    out += reader.feed(b"more" + START + MSH + END)
    assert out == [Frame(MSH)] and reader.restarted == 1
    # an end block split over two reads still ends its frame before the next start block
    reader = FrameReader(1024)
    out = reader.feed(START + MSH + b"\x1c")
    out += reader.feed(b"\x0d" + START + MSH + END)
    assert out == [Frame(MSH), Frame(MSH)] and reader.restarted == 0


def test_an_msh_segment_shorter_than_its_encoding_characters_is_no_header() -> None:
    assert read_header(b"MSH\rPID|1|||||\r") is None  # was an IndexError (the fuzz target found it)


def header_of(version: str) -> object:
    header = read_header(MSH.replace(b"|P|2.5\r", f"|P|{version}\r".encode()))
    assert header is not None and header.version_id == version
    return header


@pytest.mark.parametrize(("version", "msh_9"), [("2.3", "ACK^A03"), ("2.3.1", "ACK^A03^ACK"), ("2.5", "ACK^A03^ACK")])
def test_the_acks_msh_9_has_the_components_its_version_defines(version: str, msh_9: str) -> None:
    ack = build_ack(header_of(version), AckCode.AA, "X", datetime(2026, 12, 1, 12, 0))  # type: ignore[arg-type]
    assert ack.split(b"\r")[0].split(b"|")[8].decode() == msh_9


def test_msa_3_of_a_v2_3_ack_is_cut_at_a_word_boundary_with_an_ellipsis() -> None:
    text = "PID-7 (date of birth) is not the birth date the CPR number in PID-3 gives; correct one of the two"
    error = AckError(ErrorCode.DATA_TYPE, text, ErrorLocation("PID", 1, 7))
    ack = build_ack(header_of("2.3"), AckCode.AE, "X", datetime(2026, 12, 1, 12, 0), (error,))  # type: ignore[arg-type]
    msa_3 = ack.split(b"\r")[1].split(b"|")[3].decode()
    assert len(msa_3) <= 80 and msa_3.endswith("...") and text.startswith(msa_3.removesuffix("..."))
    assert text[len(msa_3) - 3] in " ;"  # the cut is at a word boundary
    short = AckError(ErrorCode.DATA_TYPE, "PID-7 is wrong", ErrorLocation("PID", 1, 7))
    ack = build_ack(header_of("2.4"), AckCode.AE, "X", datetime(2026, 12, 1, 12, 0), (short,))  # type: ignore[arg-type]
    assert ack.split(b"\r")[1].split(b"|")[3] == b"PID-7 is wrong"
