"""Sample discharge events in any number, for the runtime tests and the benchmarks."""

from __future__ import annotations

import copy
import itertools
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path

import orjson

GOLDEN_DISCHARGE = Path(__file__).resolve().parent.parent / "golden" / "discharge"
TEST_CPRS = ("2512489996", "1502779995", "0107729995", "2911829996", "3103979995", "0104909995", "0201919990")
NOTE_WORDS = ("dyspnø", "ødemer", "angina", "træthed", "svimmelhed", "hjertebanken", "brystsmerter")
NORDJYLLAND = ("773", "787", "810", "813", "820", "825", "840", "846", "849", "851", "860")


X_ECPR_SYSTEM = "urn:oid:1.2.208.176.1.6.1.1"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


_PATIENTS = itertools.count()  # every generated patient of this process is a new one


def _name_patient(patient: dict[str, object]) -> None:
    """A patient of their own, named by a replacement number (X-eCPR) never given before in this process: a
    second discharge of one patient would change that patient's referral (the pathway, decision 18) rather than
    make a referral of its own. Never a real person's number (MedCom's test CPR numbers are too few)."""
    n = next(_PATIENTS)
    born = date(1940, 1, 1) + timedelta(days=n % 30_000)
    letters = LETTERS[n // 10 % 26] + LETTERS[n // 260 % 26]
    patient.pop("cpr", None)
    patient["replacementCpr"] = {"system": X_ECPR_SYSTEM, "value": f"{born:%d%m%y}1{letters}{n % 10}"}


def distinct_referral_events(count: int) -> list[tuple[str, bytes]]:
    """`count` distinct discharge events, each producing one referral: (event id, body).

    Like real ones, each has its own event id, patient, municipality, free-text note and time; the
    pathways rotate over the golden samples. Patients are named by replacement numbers (`_name_patient`).
    """
    templates = [orjson.loads(p.read_bytes()) for p in sorted(GOLDEN_DISCHARGE.glob("*.event.json"))]
    templates = [t for t in templates if t["referral"]["decision"] != "none"]
    events = []
    for i in range(count):
        event = copy.deepcopy(templates[i % len(templates)])
        event["eventId"] = str(uuid.uuid4())
        event["eventType"] = "discharge"  # a discharge refers whatever came before; a visitation needs its discharge
        _name_patient(event["patient"])
        event["patient"]["municipalityCode"] = NORDJYLLAND[i % len(NORDJYLLAND)]
        event["referral"]["note"] = f"Klinisk note {i}: {NOTE_WORDS[i % 7]} {NOTE_WORDS[i % 5]} {i * 7919 % 10007}."
        # a time of its own, within the hour after the discharge (a discharge event), so never ahead of a receipt
        # at the tests' fixed clock (no event may report what had not happened when it arrived); an exercise test
        # the template dated at its later visitation talk is dated at the discharge
        discharged = datetime.fromisoformat(event["admission"]["dischargedAt"])
        occurred = discharged + timedelta(minutes=5 + i % 50, seconds=i // 50 % 60)
        event["occurredAt"] = occurred.isoformat()
        if event["exerciseTest"].get("date", "") > occurred.date().isoformat():
            event["exerciseTest"]["date"] = occurred.date().isoformat()
        events.append((event["eventId"], orjson.dumps(event)))
    return events
