"""The board (integration.web) through Starlette's TestClient, over a SQLite store the demo's real flows filled:
login and its rate limit, CSRF on every POST, the roles (operations sees no CPR number on any page; clinical
does, and each view is in the audit chain), replay and resend audited, bad input one line, unknown → 404."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from argon2 import PasswordHasher, Type
from starlette.testclient import TestClient

from integration.adapters.rabbitmq import Received
from integration.adapters.sql.store import AuditStore, StoreMissing
from integration.adapters.sql.stores import open_audit_store
from integration.cli.demo import OVERDUE_PATIENT
from integration.config import PROJECT_ROOT, Settings
from integration.domain.course import Course, OutboundState, Responsible, Stage, StateChanges
from integration.errors import ConfigurationError
from integration.log import CPR_LIKE
from integration.mappings import load_mappings
from integration.service.audit_chain import AuditEntry, AuditRecord, verify
from integration.service.audit_events import EventCodes, audit_event
from integration.service.pathway_watch import Deadline, deadlines
from integration.topology import DEAD_LETTER_EXCHANGE, FLOWS_BY_NAME, REPLAY_EXCHANGE
from integration.web import pages
from integration.web.app import TEMPLATES, Board, create_app
from integration.web.auth import LoginLimiter, Role, Sessions, hash_password, load_secret, load_users
from tests.web.conftest import SECRET, FakeBroker, csrf_of, log_in, patients

PAGES = ["/", "/messages", "/dead-letters", "/outbound", "/throughput", "/?status=overdue", "/?municipality=851"]


def records(dsn: str) -> list[AuditRecord]:
    store = open_audit_store(dsn, create=False)
    try:
        return list(store.records())
    finally:
        store.close()


def cpr_forms(patient: str) -> list[str]:
    return [patient, f"{patient[:6]}-{patient[6:]}", f"{patient[:6]} {patient[6:]}"] if patient.isdigit() else [patient]


def leaks(html: str, known: list[str]) -> list[str]:
    found = [p for p in known for form in cpr_forms(p) if form in html]
    return found + CPR_LIKE.findall(html)


def dead_letter(tag: int = 1) -> Received:
    body = b'{"eventId": "demo-poison-unknown-municipality"}'
    return Received(
        tag,
        body,
        "demo-poison-unknown-municipality",
        {},
        "application/json",
        False,
        "guest",
        "discharge",
        DEAD_LETTER_EXCHANGE,
        None,
        {"x-rehab-reason": "unknown municipality 999", "x-rehab-source": "hospital"},
    )


# -- login -----------------------------------------------------------------------------------------------
def test_login_with_the_right_password_opens_the_board_and_a_wrong_one_does_not(client: TestClient) -> None:
    assert client.get("/").headers["location"] == "/login"
    wrong = log_in(client, "olga", "not-it")
    assert wrong.status_code == 401 and "Wrong name or password" in wrong.text
    unknown = log_in(client, "nobody", "not-it")
    assert unknown.status_code == 401 and unknown.text.count("Wrong name or password") == 1
    ok = log_in(client, "olga")
    assert ok.status_code == 303 and ok.headers["location"] == "/"
    assert client.get("/").status_code == 200


def test_five_failures_of_one_name_from_one_client_are_rate_limited_and_logged_without_the_password(
    client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    for _ in range(5):
        assert log_in(client, "carl", "guess-1234").status_code == 401
    limited = log_in(client, "carl")  # even the right password: the pair is blocked for the window
    assert limited.status_code == 429 and "Too many failed logins" in limited.text
    assert log_in(client, "olga").status_code == 303  # another name is not blocked
    said = capsys.readouterr()
    assert "guess-1234" not in said.out + said.err


def test_the_limiter_forgets_failures_after_the_window() -> None:
    now = [0.0]
    limiter = LoginLimiter(max_failures=2, window=10.0, clock=lambda: now[0])
    limiter.failed("a", "c")
    limiter.failed("a", "c")
    assert limiter.blocked("a", "c") and not limiter.blocked("a", "d")
    now[0] = 10.0
    assert not limiter.blocked("a", "c")


def test_one_client_trying_many_names_is_limited_and_old_failures_are_forgotten() -> None:
    """Spraying one password over many names from one client is limited too; the tables do not grow for ever."""
    now = [0.0]
    limiter = LoginLimiter(max_failures=5, window=10.0, clock=lambda: now[0], max_client_failures=3)
    for name in ("a", "b", "c"):
        limiter.failed(name, "spray")
    assert limiter.blocked("d", "spray") and not limiter.blocked("d", "elsewhere")
    for number in range(1200):
        limiter.failed(f"n{number}", f"client{number}")
    now[0] = 20.0
    limiter.failed("late", "x")
    assert len(limiter._failures) < 1200 and not limiter.blocked("d", "spray")


def test_a_cookie_copied_before_logout_opens_nothing_after_it(client: TestClient, board: Board) -> None:
    log_in(client, "olga")
    copied = dict(client.cookies)
    assert client.get("/", follow_redirects=False).status_code == 200
    client.post("/logout", data={"csrf": csrf_of(client)})
    client.cookies.clear()
    for name, value in copied.items():
        client.cookies.set(name, value)
    assert client.get("/", follow_redirects=False).status_code == 303  # to the login


def test_a_session_of_before_the_boards_restart_is_over(client: TestClient, board: Board) -> None:
    log_in(client, "olga")
    board.sessions = Sessions()  # what a new process starts with
    assert client.get("/", follow_redirects=False).status_code == 303


def test_every_post_without_the_csrf_token_is_refused_403(client: TestClient) -> None:
    refused = client.post("/login", data={"name": "olga", "password": "operations-password-1"})
    assert refused.status_code == 403
    log_in(client, "olga")
    for path, data in (
        ("/logout", {}),
        ("/dead-letters/replay", {"flow": "discharge", "handle": "dl-bcdfghjkmn"}),
        ("/outbound/resend", {"header_id": "x"}),
        ("/messages", {"patient": "2512489996"}),
    ):
        assert client.post(path, data=data).status_code == 403, path
        assert client.post(path, data={**data, "csrf": "forged"}).status_code == 403, path
    assert client.get("/").status_code == 200  # still logged in: the logout without a token did nothing


def test_the_session_cookie_is_httponly_samesite_strict_and_secure(board: object) -> None:
    with TestClient(create_app(board, SECRET), base_url="https://testserver", follow_redirects=False) as c:  # type: ignore[arg-type]
        response = log_in(c, "olga")
        cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" in cookie


def test_every_page_has_a_csp_without_inline_script(client: TestClient) -> None:
    log_in(client, "olga")
    for path in PAGES:
        response = client.get(path)
        policy = response.headers["content-security-policy"]
        assert "script-src" not in policy and "default-src 'none'" in policy and "unsafe-inline" not in policy
        assert "<script" not in response.text, path


# -- roles -----------------------------------------------------------------------------------------------
def test_operations_sees_no_cpr_number_on_any_page(client: TestClient, store_dsn: str, broker: FakeBroker) -> None:
    broker.queues[FLOWS_BY_NAME["discharge"].dead_letter_queue] = [dead_letter()]
    known = patients(store_dsn)
    assert len(known) >= 5
    log_in(client, "olga")
    board = client.get("/")
    assert board.status_code == 200 and board.text.count("<tr") > 5
    found_pages = list(PAGES)
    ids = {r.message_id for r in records(store_dsn) if r.message_id != "-"}
    found_pages += [f"/messages/{i}" for i in sorted(ids)[:40]] + [f"/messages?q={i}" for i in sorted(ids)[:10]]
    for path in found_pages:
        response = client.get(path)
        assert response.status_code == 200, path
        assert not leaks(response.text, known), path


def test_clinical_sees_the_cpr_and_the_view_is_in_the_audit_chain(client: TestClient, store_dsn: str) -> None:
    known = patients(store_dsn)
    log_in(client, "carl")
    before = len(records(store_dsn))
    page = client.get("/")
    shown = [p for p in known if p in page.text]
    assert shown
    after = records(store_dsn)
    views = [r for r in after[before:] if r.step == "board-viewed"]
    assert {r.patient for r in views} == set(shown)
    assert all(r.detail["boardUser"] == "carl" and r.detail["boardRole"] == "clinical" for r in views)
    assert all(r.detail["by"] for r in views)  # the OS user of the process too
    assert verify(after) is None


def test_a_board_view_exports_as_an_audit_event_whose_requestor_is_the_board_user(
    client: TestClient, store_dsn: str
) -> None:
    """`integration audit export` names who really read it: the board's user (its OS user as altId)."""
    log_in(client, "carl")
    before = len(records(store_dsn))
    client.get("/")
    view = next(r for r in records(store_dsn)[before:] if r.step == "board-viewed")
    table = yaml.safe_load((PROJECT_ROOT / "mappings" / "audit-events.yaml").read_text(encoding="utf-8"))
    event = audit_event(view, EventCodes.from_mapping(table).codes(view.step))
    requestor = next(agent for agent in event["agent"] if agent["requestor"])
    assert requestor["name"] == "carl" and "clinical" in requestor["who"]["display"]
    assert requestor["altId"] == f"os:{view.detail['by']}"


def test_the_overdue_patient_is_marked_first_on_the_board_for_both_roles(client: TestClient) -> None:
    log_in(client, "carl")
    clinical = client.get("/")
    first = clinical.text.split("<tbody>")[1].split("</tr>")[0]
    assert 'class="overdue"' in first and OVERDUE_PATIENT in first and "visitation OVERDUE" in first
    only = client.get("/?status=overdue")
    assert only.text.count("<tr") >= 2 and OVERDUE_PATIENT in only.text
    log_in(client, "olga")
    operations = client.get("/")
    assert "visitation OVERDUE" in operations.text and OVERDUE_PATIENT not in operations.text


def test_a_patients_trail_is_linked_without_the_cpr_in_the_url_and_audited(client: TestClient, store_dsn: str) -> None:
    log_in(client, "carl")
    links = re.findall(r'href="(/patients/[^"]+)"', client.get("/").text)
    assert links and not any(CPR_LIKE.search(link) for link in links)
    trail = client.get(links[0])
    assert trail.status_code == 200 and "record(s), this look-up included" in trail.text
    assert records(store_dsn)[-1].step == "board-trail-viewed" and records(store_dsn)[-1].patient
    log_in(client, "olga")
    assert client.get(links[0]).status_code == 403


def test_message_trail_shows_the_chain_and_the_content_as_text(client: TestClient, store_dsn: str) -> None:
    referral = next(r for r in records(store_dsn) if r.step == "fact:referral-built")
    log_in(client, "carl")
    page = client.get(f"/messages/{referral.detail['messageHeaderId']}")
    assert page.status_code == 200
    for step in ("received", "validated", "published", "acked"):
        assert f'class="step">{step}<' in page.text
    assert "<details><summary>Raw JSON" in page.text and 'class="narrative"' in page.text
    assert "&lt;div" not in page.text.split("Raw JSON")[0]  # the narrative is text, not its markup escaped
    assert "<div xmlns" not in page.text  # never the stored XHTML as markup
    last = records(store_dsn)[-1]
    assert last.step == "board-message-viewed" and last.patient == referral.patient


def test_patient_search_is_for_clinical_and_posted(client: TestClient, store_dsn: str) -> None:
    patient = next(r.patient for r in records(store_dsn) if r.patient)
    assert patient is not None
    log_in(client, "olga")
    assert client.post("/messages", data={"patient": patient, "csrf": csrf_of(client, "/messages")}).status_code == 403
    log_in(client, "carl")
    found = client.post("/messages", data={"patient": patient, "csrf": csrf_of(client, "/messages")})
    assert found.status_code == 200 and "Nothing found" not in found.text
    assert records(store_dsn)[-1].step == "board-messages-searched" and records(store_dsn)[-1].patient == patient


# -- replay and resend -----------------------------------------------------------------------------------
def test_replay_republishes_the_dead_letter_and_is_audited(
    client: TestClient, store_dsn: str, broker: FakeBroker
) -> None:
    queue = FLOWS_BY_NAME["discharge"].dead_letter_queue
    broker.queues[queue] = [dead_letter(1), Received(2, b"{}", "other", {}, None, False, "guest", "", "", None, {})]
    log_in(client, "olga")
    page = client.get("/dead-letters")
    assert "unknown municipality 999" in page.text
    handle = re.search(r'name="handle" value="(dl-[a-z]+)"', page.text)
    assert handle
    done = client.post(
        "/dead-letters/replay", data={"flow": "discharge", "handle": handle.group(1), "csrf": csrf_of(client, "/")}
    )
    assert done.status_code == 303
    assert [p[0] for p in broker.published] == [REPLAY_EXCHANGE]
    assert [m.message_id for m in broker.queues[queue]] == ["other"]  # the other one is back in its queue
    replayed = [r for r in records(store_dsn) if r.step == "replayed"]
    assert replayed and replayed[-1].detail["boardUser"] == "olga" and replayed[-1].detail["handle"] == handle.group(1)
    missing = client.post(
        "/dead-letters/replay", data={"flow": "discharge", "handle": handle.group(1), "csrf": csrf_of(client, "/")}
    )
    assert missing.status_code == 404


def test_resend_publishes_again_and_is_audited(client: TestClient, store_dsn: str, broker: FakeBroker) -> None:
    store = open_audit_store(store_dsn, create=False)
    try:
        waiting = store.outbound_messages([OutboundState.AWAITING])
    finally:
        store.close()
    assert waiting
    log_in(client, "olga")
    page = client.get("/outbound")
    assert waiting[0].header_id in page.text
    done = client.post("/outbound/resend", data={"header_id": waiting[0].header_id, "csrf": csrf_of(client, "/")})
    assert done.status_code == 303 and len(broker.published) == 1
    last = records(store_dsn)[-1]
    assert last.step == "outbound-resent" and last.message_id == waiting[0].header_id
    assert last.detail["boardUser"] == "olga" and last.detail["resend"] == 1
    unknown = client.post("/outbound/resend", data={"header_id": "no-such-header", "csrf": csrf_of(client, "/")})
    assert unknown.status_code == 404


# -- bad input -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        "/?municipality=85",
        "/?department=abc",
        "/?status=done",
        "/?colour=red",
        "/messages?q=%3Cscript%3E",
        "/throughput?x=1",
    ],
)
def test_bad_query_parameters_are_400_in_one_line(client: TestClient, path: str) -> None:
    log_in(client, "olga")
    response = client.get(path)
    assert response.status_code == 400
    problem = re.search(r'<p class="problem">([^<]*)</p>', response.text)
    assert problem and "\n" not in problem.group(1) and "<script" not in response.text


def test_an_unknown_message_or_page_is_404(client: TestClient) -> None:
    log_in(client, "olga")
    assert client.get("/messages/no-such-message").status_code == 404
    assert client.get("/nowhere").status_code == 404


def test_operations_sees_a_messages_trail_but_not_its_content(client: TestClient, store_dsn: str) -> None:
    referral = next(r for r in records(store_dsn) if r.step == "fact:referral-built")
    log_in(client, "olga")
    page = client.get(f"/messages/{referral.detail['messageHeaderId']}")
    assert page.status_code == 200 and 'class="step">published<' in page.text
    assert 'class="narrative"' not in page.text and "Raw JSON" not in page.text
    last = records(store_dsn)[-1]
    assert last.step == "board-message-viewed" and last.patient is None and last.detail["content"] is False


def test_a_store_that_is_not_there_is_503_in_one_line(board: Board) -> None:
    @contextmanager
    def missing() -> Iterator[AuditStore]:
        raise StoreMissing("no file")
        yield  # pragma: no cover

    board.open_store = missing
    with TestClient(create_app(board, SECRET, secure_cookies=False), follow_redirects=False) as c:
        log_in(c, "olga")
        response = c.get("/")
    assert response.status_code == 503 and "no audit store" in response.text


def test_a_cpr_shaped_id_is_masked_on_the_error_page(client: TestClient) -> None:
    log_in(client, "carl")
    response = client.get("/messages/2512489996")
    assert response.status_code == 404 and "2512489996" not in response.text


def test_the_throughput_chart_is_inline_svg_without_script(client: TestClient) -> None:
    log_in(client, "olga")
    page = client.get("/throughput")
    assert page.status_code == 200 and "<svg" in page.text and "<script" not in page.text
    nonce = re.search(r"'nonce-([^']+)'", page.headers["content-security-policy"])
    assert nonce and f'nonce="{nonce.group(1)}"' in page.text


# -- settings --------------------------------------------------------------------------------------------
def test_users_and_secret_files_are_checked_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="board_users_file is not set"):
        load_users(None)
    bad = tmp_path / "users.toml"
    bad.write_text('[[user]]\nname = "x"\nrole = "admin"\npassword_hash = "$argon2id$v=19$..."\n')
    bad.chmod(0o600)
    with pytest.raises(ConfigurationError, match="board_users_file: .*role must be one of"):
        load_users(bad)
    bad.write_text('[[user]]\nname = "x"\nrole = "clinical"\npassword_hash = "plain"\n')
    with pytest.raises(ConfigurationError, match="password_hash must be an argon2id hash"):
        load_users(bad)
    short = tmp_path / "secret"
    short.write_text("short")
    short.chmod(0o600)
    with pytest.raises(ConfigurationError, match="board_session_secret_file: .*at least 32 random bytes"):
        load_secret(short)
    with pytest.raises(ConfigurationError, match="board_session_secret_file is not set"):
        load_secret(None)


def test_board_settings_default_and_are_validated() -> None:
    settings = Settings.from_env({})
    assert settings.board_listen == "127.0.0.1:8080" and settings.board_secure_cookies is True
    assert Settings.from_env({"INTEGRATION_BOARD_SECURE_COOKIES": "false"}).board_secure_cookies is False
    with pytest.raises(ConfigurationError, match="board_secure_cookies must be true or false"):
        Settings.from_env({"INTEGRATION_BOARD_SECURE_COOKIES": "maybe"})


def test_a_search_by_an_outputs_header_id_finds_the_whole_trail_of_the_message_that_sent_it(store_dsn: str) -> None:
    """The MessageHeader id of what we sent is named only by the `published` record: the search still lists the
    message with every record, from its `received` on, and every time in Danish time."""
    published = next(r for r in records(store_dsn) if r.step == "published" and r.detail.get("outputId"))
    store = open_audit_store(store_dsn, create=False)
    try:
        found = pages.search(store, published.detail["outputId"], None)
    finally:
        store.close()
    whole = [r for r in records(store_dsn) if r.message_id == published.message_id]
    assert [(key, count) for key, _, _, count in found] == [(published.message_id, len(whole))]
    assert whole[0].step == "received" and found[0][2].endswith(("+01:00", "+02:00"))


def test_a_passed_gop_deadline_is_marked_passed_not_overdue(store_dsn: str) -> None:
    """The GOP's contact and start are shown; once due they read "passed, unconfirmed", never OVERDUE: no event
    tells us they were met (decision 23)."""
    store = open_audit_store(store_dsn, create=False)
    try:
        later = datetime.now(UTC) + timedelta(days=60)
        settings = Settings.from_env({"INTEGRATION_AUDIT_DSN": store_dsn})
        found = deadlines(store, settings, later)
        rows, _ = pages.board_rows(store, pages.Viewer("olga", Role.OPERATIONS), pages.BoardFilter(), found)
    finally:
        store.close()
    gop = [m for row in rows for m in row.markers if m.rule.startswith("gop-")]
    assert gop and all(m.passed and not m.overdue for m in gop)
    html = TEMPLATES.get_template("board.html.j2").render(
        viewer=None, csrf="x", nonce="n", rows=rows, wanted=pages.BoardFilter(), stages=[], markers_missing=None
    )
    assert "passed, unconfirmed" in html and "gop-contact OVERDUE" not in html


def test_parallel_attempts_cannot_all_pass_the_limit() -> None:
    """Each attempt is counted before its password is checked: 60 at once get at most five checks."""
    limiter = LoginLimiter()
    with ThreadPoolExecutor(max_workers=20) as pool:
        allowed = list(pool.map(lambda _: limiter.attempt("doc", "10.0.0.1"), range(60)))
    assert sum(allowed) == 5
    limiter.succeeded("doc", "10.0.0.1")
    assert limiter.attempt("doc", "10.0.0.1")


def test_banners_come_from_the_session_not_the_url(client: TestClient, store_dsn: str, broker: FakeBroker) -> None:
    """`?resent=` / `?replayed=` could put any text (a CPR number) on the page as a forged success."""
    log_in(client, "olga")
    for path in ("/outbound?resent=0107729995", "/dead-letters?replayed=dl-bcdfghjkmn"):
        page = client.get(path)
        assert page.status_code == 400 and "0107729995" not in page.text
    store = open_audit_store(store_dsn, create=False)
    try:
        waiting = store.outbound_messages([OutboundState.AWAITING])[0]
    finally:
        store.close()
    done = client.post("/outbound/resend", data={"header_id": waiting.header_id, "csrf": csrf_of(client, "/")})
    assert done.headers["location"] == "/outbound"
    assert f"Resent {waiting.header_id}." in client.get("/outbound").text
    assert "Resent" not in client.get("/outbound").text  # said once
    again = client.post("/outbound/resend", data={"header_id": waiting.header_id, "csrf": csrf_of(client, "/")})
    assert again.status_code == 409 and "wait for its ack" in again.text and len(broker.published) == 1


def test_a_cpr_number_is_refused_in_the_message_search_address(client: TestClient) -> None:
    log_in(client, "olga")
    page = client.get("/messages?q=0107729995")
    assert page.status_code == 400 and "0107729995" not in page.text and "search by patient" in page.text


def test_a_message_id_holding_a_cpr_number_is_not_linked_for_operations(client: TestClient, store_dsn: str) -> None:
    """A sender's message-id is theirs to choose: the operations role sees it masked, in the text and the link."""
    store = open_audit_store(store_dsn, create=False)
    try:
        entry = AuditEntry("received", "discharge", "course-0101701234", {"eventId": "event-of-a-sender-42"})
        store.record([entry], datetime.now(UTC))
    finally:
        store.close()
    log_in(client, "olga")
    page = client.get("/messages?q=event-of-a-sender-42")
    assert page.status_code == 200 and "0101701234" not in page.text and "Nothing found" not in page.text
    client.post("/logout", data={"csrf": csrf_of(client)})
    log_in(client, "carl")
    assert "/messages/course-0101701234" in client.get("/messages?q=event-of-a-sender-42").text


def test_secrets_readable_by_every_user_and_weak_ones_are_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text(secrets.token_urlsafe(48))
    secret.chmod(0o644)
    with pytest.raises(ConfigurationError, match="board_session_secret_file: .* readable by every user"):
        load_secret(secret)
    secret.chmod(0o640)
    assert load_secret(secret)
    secret.write_text("a" * 48)
    with pytest.raises(ConfigurationError, match="at least 32 random bytes"):
        load_secret(secret)
    users = tmp_path / "users.toml"
    argon2i = PasswordHasher(type=Type.I).hash("a-good-long-password")
    users.write_text(f'[[user]]\nname = "x"\nrole = "clinical"\npassword_hash = "{argon2i}"\n')
    users.chmod(0o600)
    with pytest.raises(ConfigurationError, match="argon2id"):
        load_users(users)
    short_tag = PasswordHasher(hash_len=4, salt_len=8).hash("a-good-long-password")
    users.write_text(f'[[user]]\nname = "x"\nrole = "clinical"\npassword_hash = "{short_tag}"\n')
    with pytest.raises(ConfigurationError, match="salt and tag"):
        load_users(users)
    users.chmod(0o604)
    with pytest.raises(ConfigurationError, match="board_users_file: .* readable by every user"):
        load_users(users)


@pytest.mark.parametrize("password", [" " * 12, "a" * 12, "ab" * 8, "short-pw"])
def test_blank_repeated_or_short_passwords_are_refused(password: str) -> None:
    with pytest.raises(ValueError, match="at least 12 characters"):
        hash_password(password)


def test_a_cpr_number_is_refused_in_the_department_filter(client: TestClient) -> None:
    log_in(client, "olga")
    page = client.get("/?department=0107729995")
    assert page.status_code == 400 and "0107729995" not in page.text


def test_simultaneous_resends_of_one_message_send_it_once_more(
    client: TestClient, store_dsn: str, broker: FakeBroker
) -> None:
    store = open_audit_store(store_dsn, create=False)
    try:
        waiting = store.outbound_messages([OutboundState.AWAITING])[0]
    finally:
        store.close()
    log_in(client, "olga")
    token = csrf_of(client, "/")
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(
            pool.map(
                lambda _: client.post("/outbound/resend", data={"header_id": waiting.header_id, "csrf": token}),
                range(8),
            )
        )
    codes = [a.status_code for a in answers]
    assert codes.count(303) == 1 and codes.count(409) == 7 and len(broker.published) == 1


def test_a_cancelled_course_is_listed_as_withdrawn_and_filtered_by_its_stage(tmp_path: Path) -> None:
    """A course closed because the hospital withdrew its discharge (HL7 v2 ADT^A13/A11) is shown at its own stage,
    saying what happened (nothing was handed over: the GP is responsible), and the board's stage filter takes
    `cancelled`."""
    store = open_audit_store(f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    try:
        course = Course(
            "2512489996", "715541000016001", "851", False, Responsible.GP, Stage.CANCELLED, episode="V-2026-0042"
        )
        entry = AuditEntry("transformed", "discharge", "m-1", patient=course.patient)
        store.record([entry], datetime.now(UTC), changes=StateChanges(courses=(course,)))
        wanted = pages.BoardFilter.parse({"status": "cancelled"})
        rows, shown = pages.board_rows(store, pages.Viewer("olga", Role.OPERATIONS), wanted)
    finally:
        store.close()
    (row,) = rows
    assert shown == [course.patient] and row.stage == "cancelled"
    assert row.closing == "discharge withdrawn by the hospital"
    assert row.handover == "discharge withdrawn by the hospital; GP responsible"  # not "handed over"


def test_a_possible_missed_referral_has_a_row_though_the_patient_has_no_course(tmp_path: Path) -> None:
    """A discharge home the hospital notified from a watched unit, with no discharge event (`missed-referral`),
    is about a patient without a course: the board still shows a row for them, overdue first, masked for
    operations, and only where no municipality, department or stage filter asks for what it cannot know."""
    store = open_audit_store(f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    missed = pages_deadline("missed-referral", "0101504995", overdue=True)
    try:
        operations = pages.Viewer("olga", Role.OPERATIONS)
        rows, shown = pages.board_rows(store, operations, pages.BoardFilter(), [missed])
        overdue_rows, _ = pages.board_rows(store, operations, pages.BoardFilter.parse({"status": "overdue"}), [missed])
        by_stage, _ = pages.board_rows(store, operations, pages.BoardFilter.parse({"status": "municipal"}), [missed])
        clinical, _ = pages.board_rows(store, pages.Viewer("doc", Role.CLINICAL), pages.BoardFilter(), [missed])
    finally:
        store.close()
    (row,) = rows
    assert shown == ["0101504995"] and row.overdue and row.stage.startswith("no course")
    assert "0101504995" not in row.patient and clinical[0].patient == "0101504995"
    assert [m.rule for m in row.markers] == ["missed-referral"]
    assert len(overdue_rows) == 1 and by_stage == []
    assert row.department == "715541000016001"  # the unit it was discharged from, not "-"


def test_the_department_filter_finds_a_possible_missed_referral_by_its_unit(tmp_path: Path) -> None:
    """The second attack: a missed-referral row showed Department "-", so filtering by the unit hid it."""
    store = open_audit_store(f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    missed = pages_deadline("missed-referral", "0101504995", overdue=True)
    elsewhere = Course("2512489996", "716141000016004", "851", True, Responsible.HOSPITAL, Stage.MUNICIPAL)
    other = pages_deadline("missed-referral", elsewhere.patient, overdue=True)  # has a course, in another unit
    entry = AuditEntry("transformed", "discharge", "m-1", patient=elsewhere.patient)
    operations = pages.Viewer("olga", Role.OPERATIONS)

    def board(query: dict[str, str]) -> list[pages.Row]:
        return pages.board_rows(store, operations, pages.BoardFilter.parse(query), [missed, other])[0]

    try:
        store.record([entry], datetime.now(UTC), changes=StateChanges(courses=(elsewhere,)))
        by_unit = board({"department": "715541000016001"})
        overdue_at_unit = board({"department": "715541000016001", "status": "overdue"})
        by_other_unit = board({"department": "716141000016004"})
        by_municipality = board({"municipality": "851"})
    finally:
        store.close()
    (row,) = by_unit  # the patient with a course in another unit is not taken for one without
    assert row.stage.startswith("no course") and row.department == "715541000016001"
    assert len(overdue_at_unit) == 1
    assert [r.stage for r in by_other_unit] == ["municipal"]  # the course's row only
    assert [r.stage for r in by_municipality] == ["municipal"]


def test_a_paused_course_names_the_admitting_unit_where_departments_yaml_knows_it(tmp_path: Path) -> None:
    store = open_audit_store(f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    since = datetime.fromisoformat("2026-11-27T08:00:00+01:00")
    known = Course(
        "2512489996",
        "715541000016001",
        "851",
        True,
        Responsible.HOSPITAL,
        Stage.MUNICIPAL,
        admitted_to="716141000016004",
    )
    known = replace(known, admitted_since=since, admission_episode="stay-2")
    unknown = replace(known, patient="0101504995", admitted_to="265161000016000")
    names = pages.unit_names(load_mappings(Path("mappings")))
    try:
        entries = [AuditEntry("transformed", "discharge", "m-1", patient=c.patient) for c in (known, unknown)]
        store.record(entries, datetime.now(UTC), changes=StateChanges(courses=(known, unknown)))
        rows, _ = pages.board_rows(store, pages.Viewer("olga", Role.OPERATIONS), pages.BoardFilter(), names=names)
    finally:
        store.close()
    stages = sorted(r.stage for r in rows)
    assert stages[0].startswith("municipal: paused, admitted to 265161000016000 since ")  # unknown: the SOR
    assert stages[1].startswith(
        "municipal: paused, admitted to Regionshospital Nordjylland Hjørring, Medicinsk Afdeling, Kardiologi "
        "(716141000016004) since "
    )


def pages_deadline(rule: str, patient: str, overdue: bool) -> Deadline:
    due = datetime.now(UTC) - timedelta(hours=1)
    detail = "discharged home from unit 715541000016001"
    return Deadline(rule, patient, due, overdue, "episode-1", detail, True, unit="715541000016001")


def test_the_board_names_units_from_the_mappings_and_survives_mappings_it_cannot_read(tmp_path: Path) -> None:
    """Read once per process (a change needs a restart, as for the consumers); unreadable mappings leave the SOR
    codes on the board instead of failing every page."""
    from integration.web.app import _unit_names

    names = _unit_names(PROJECT_ROOT / "mappings")
    assert names["715541000016001"] == "Aalborg UH, Kardiologisk Afdeling"
    assert _unit_names(tmp_path) == {}
