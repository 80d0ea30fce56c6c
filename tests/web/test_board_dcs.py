"""The board shows the DCS criteria suggested from codes beside the clinician's own, marked as suggestions, on a
patient's trail (clinical role); operations sees which criteria were suggested, never the codes."""

from __future__ import annotations

import re

from starlette.testclient import TestClient

from integration.adapters.sql.stores import open_audit_store
from integration.service.audit_chain import AuditRecord
from tests.web.conftest import log_in


def _records(dsn: str) -> list[AuditRecord]:
    store = open_audit_store(dsn)
    try:
        return list(store.records())
    finally:
        store.close()


def _trail_pages(client: TestClient) -> list[str]:
    return [client.get(link).text for link in re.findall(r'href="(/patients/[^"]+)"', client.get("/").text)]


def test_a_patients_trail_shows_suggestions_beside_the_clinicians_criteria(client: TestClient, store_dsn: str) -> None:
    facts = [r for r in _records(store_dsn) if r.step == "fact:dcs-suggested"]
    assert facts, "the demo's samples carry codes the table suggests criteria for"
    log_in(client, "carl")
    shown = [page for page in _trail_pages(client) if "<h2>DCS criteria</h2>" in page]
    assert shown
    checked = 0
    for fact in facts:
        page = next((p for p in shown if str(fact.detail["eventId"]) in p.split("<h2>DCS criteria</h2>")[1]), None)
        if page is None:
            continue  # a patient whose course the board no longer lists
        section = page.split("<h2>DCS criteria</h2>")[1].split("</table>")[0]
        for suggestion in fact.detail["suggested"]:
            assert f"suggestion: {suggestion['criterion']} (from {', '.join(suggestion['codes'])})" in section
        for criterion in fact.detail["clinicianCriteria"]:
            assert f'<span class="ticked">{criterion}</span>' in section
        assert section.count("not ticked by the clinician") >= len(fact.detail["notTicked"])
        checked += 1
    assert checked


def test_a_trail_without_suggestions_has_no_criteria_section(client: TestClient) -> None:
    log_in(client, "carl")
    pages = _trail_pages(client)
    assert any("<h2>DCS criteria</h2>" not in page for page in pages)


def test_operations_sees_the_suggested_criteria_without_their_codes(client: TestClient, store_dsn: str) -> None:
    fact = next(r for r in _records(store_dsn) if r.step == "fact:dcs-suggested")
    codes = [code for s in fact.detail["suggested"] for code in s["codes"]]
    log_in(client, "olga")
    page = client.get(f"/messages/{fact.message_id}").text
    assert 'class="step">fact:dcs-suggested<' in page
    assert all(
        f"&#34;{s['criterion']}&#34;" in page or f"&quot;{s['criterion']}&quot;" in page
        for s in fact.detail["suggested"]
    )
    assert not any(f"&#34;{code}&#34;" in page or f"&quot;{code}&quot;" in page for code in codes)
    log_in(client, "carl")
    clinical = client.get(f"/messages/{fact.message_id}").text
    assert any(f"&#34;{code}&#34;" in clinical or f"&quot;{code}&quot;" in clinical for code in codes)
