"""The pathway board and message browser (issue #14): a Starlette application over the audit store and the broker.

Pages: the pathway board (`/`: one row per course, filtered by municipality, department and status), a
patient's trail (`/patients/<key>`, clinical only), the messages (`/messages`: search by message-id,
correlation id, MessageHeader id, or patient for the clinical role; `/messages/<id>`: its trail and what it
sent, readable), the dead-letter queues with a Replay button (`/dead-letters`), our messages awaiting an ack
with a Resend button (`/outbound`) and the throughput (`/throughput`, a server-side SVG chart).

Security: a signed session cookie (HttpOnly, SameSite=Strict, Secure unless `board_secure_cookies` is false,
8 hours); a CSRF token in the session checked on every POST, the login's too (403 without it); the login
rate limit (`auth.LoginLimiter`, 429); Jinja2 autoescaping everywhere; a Content-Security-Policy without
inline script (the chart's style carries the response's nonce); no CPR number in a log line or an error page.

Every view of patient data (the clinical role's board rows, a trail, a message's content) and every replay
or resend is recorded in the audit chain (who: the board user, its role and the OS user of the process;
what; when) before the response is sent; the operations role's views, without patient identity, are
recorded without a patient.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import pygal
import structlog
from jinja2 import Environment, PackageLoader, StrictUndefined
from lxml import etree
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from integration.adapters.dead_letters import DeadLetter, audit_read, first_death, read_letters, replay
from integration.adapters.os_user import reader
from integration.adapters.rabbitmq import RabbitConnection, drain
from integration.adapters.sql.store import AuditStore, StoreMissing
from integration.config import Settings
from integration.domain.course import OutboundState, Stage
from integration.domain.identifiers import typed_patient_key
from integration.errors import ConfigurationError, ConnectionLost, StoreDamaged, Transient
from integration.log import cpr_numbers_in, one_line
from integration.mappings import load_mappings
from integration.service.audit_chain import AuditEntry
from integration.service.outbound import resend
from integration.topology import FLOWS, FLOWS_BY_NAME, REFUSED_QUEUE
from integration.web import pages
from integration.web.auth import BoardUser, LoginLimiter, Sessions, check_password, new_token, same_token
from integration.web.pages import BoardFilter, Viewer

log = structlog.get_logger("integration.board")
SESSION_COOKIE = "board_session"
SESSION_SECONDS = 8 * 3600
STATIC = Path(__file__).resolve().parent / "static"
HANDLE = re.compile(r"dl-[bcdfghjkmnpqrstvwxz]{10}")
TOKEN = re.compile(r"[0-9a-f]{32}")
HEADER_ID = re.compile(r"[A-Za-z0-9\-.:]{1,128}")
RESEND_PAUSE = 120  # seconds after a resend before the board resends the message again
FLOW = "board"
Deadlines = Callable[[AuditStore, Settings, datetime], Sequence[Any]]


@dataclass(slots=True)
class Board:
    """What the application reads and drives: the settings, the users, how to open the store and the broker
    (each request opens its own and closes it), and the pathway's deadlines (`pathway_watch.deadlines`)."""

    settings: Settings
    users: Mapping[str, BoardUser]
    open_store: Callable[[], AbstractContextManager[AuditStore]]
    broker: Callable[[], AbstractContextManager[RabbitConnection]]
    deadlines: Deadlines | None = None
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    sessions: Sessions = field(default_factory=Sessions)
    resending: threading.Lock = field(default_factory=threading.Lock)  # one resend at a time: the guard holds


class TooSoon(Exception):
    """A resend asked for right after the message was sent: a 409 in one line."""


class Unavailable(Exception):
    """The store or the broker cannot be used now: one line, a 503."""


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("integration.web", "templates"),
        autoescape=True,  # every template, whatever its name
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


TEMPLATES = _environment()


class SecurityHeaders:
    """Every response: a Content-Security-Policy without inline script (styles from /static, or with the
    response's nonce), no framing, no sniffing, no referrer, and no caching of pages with patient data."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nonce = secrets.token_urlsafe(16)
        scope.setdefault("state", {})["nonce"] = nonce

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                policy = (
                    f"default-src 'none'; style-src 'self' 'nonce-{nonce}'; img-src 'self' data:; "
                    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
                )
                for name, value in (
                    ("content-security-policy", policy),
                    ("x-content-type-options", "nosniff"),
                    ("x-frame-options", "DENY"),
                    ("referrer-policy", "no-referrer"),
                    ("cache-control", "no-store"),
                ):
                    headers.append((name.encode(), value.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


# -- helpers ---------------------------------------------------------------------------------------------
def _board(request: Request) -> Board:
    board: Board = request.app.state.board
    return board


def _csrf(request: Request) -> str:
    token = request.session.get("csrf")
    if not isinstance(token, str) or not token:
        token = new_token()
        request.session["csrf"] = token
    return token


def _viewer(request: Request) -> Viewer | None:
    """The logged-in user, as the users file still has them (a user removed or given another role since is
    logged out)."""
    name, role = request.session.get("user"), request.session.get("role")
    board = _board(request)
    if not isinstance(name, str) or board.sessions.user(request.session.get("sid")) != name:
        return None  # not logged in, logged out, or a session of before the board's restart
    user = board.users.get(name)
    if user is None or user.role != role:
        return None
    return Viewer(user.name, user.role)


def _who(viewer: Viewer) -> dict[str, Any]:
    return {**reader(), "boardUser": viewer.name, "boardRole": viewer.role.value}


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    viewer = _viewer(request)
    html = TEMPLATES.get_template(template).render(
        viewer=viewer, csrf=_csrf(request), nonce=request.scope.get("state", {}).get("nonce", ""), **context
    )
    return HTMLResponse(html, status_code=status)


def problem(request: Request, status: int, text: str) -> HTMLResponse:
    """An error page: one line, no CPR number (`one_line`), the status."""
    return render(request, "error.html.j2", status=status, status_code=status, text=one_line(text, 300))


def _flash(request: Request, key: str) -> str:
    """What the last post left for the next page to say (once), from the signed session: never from the URL."""
    value = request.session.pop(key, "")
    return value if isinstance(value, str) else ""


async def _form(request: Request) -> Mapping[str, Any]:
    """The posted form, after its CSRF token matched the session's (403 otherwise)."""
    form = await request.form()
    if not same_token(request.session.get("csrf"), form.get("csrf")):
        raise HTTPException(403, "the form's CSRF token is missing or wrong: reload the page and try again")
    return form


Page = Callable[[Request, Viewer], Awaitable[Response]]


def page(handler: Page) -> Callable[[Request], Awaitable[Response]]:
    """A page for logged-in users: without a session, to the login; the store's or broker's outage a 503."""

    async def endpoint(request: Request) -> Response:
        viewer = _viewer(request)
        if viewer is None:
            return RedirectResponse("/login", status_code=303)
        try:
            return await handler(request, viewer)
        except Unavailable as exc:
            return problem(request, 503, str(exc))
        except ValueError as exc:
            return problem(request, 400, str(exc))
        except HTTPException:
            raise  # the CSRF refusal (403): its own handler
        except Exception as exc:  # a bug: one line in the log (no CPR: `one_line`), none of it on the page
            log.error("board: internal error", error=type(exc).__name__, path=one_line(request.url.path, 200))
            return problem(request, 500, "internal error: the board's log says which")

    return endpoint


@contextmanager
def _store(board: Board) -> Iterator[AuditStore]:
    try:
        with board.open_store() as store:
            yield store
    except StoreMissing:
        raise Unavailable("no audit store where the configuration says") from None
    except StoreDamaged:
        raise Unavailable("the audit store is damaged: integration audit verify says where") from None
    except Transient as exc:
        if exc.dependency != "audit-store":
            raise Unavailable(f"the broker is unavailable: {one_line(exc, 160)}") from None
        raise Unavailable("the audit store is unreachable: try again later") from None


@contextmanager
def _broker(board: Board) -> Iterator[RabbitConnection]:
    try:
        with board.broker() as connection:
            yield connection
    except ConnectionLost as exc:
        raise Unavailable(f"the broker is unavailable: {one_line(exc, 200)}") from None


def _record(store: AuditStore, step: str, viewer: Viewer, what: Mapping[str, Any], patients: Sequence[str]) -> None:
    """The view's audit records, before the response: one per patient shown, one without a patient when none is."""
    detail = {**_who(viewer), **what}
    shown: list[str | None] = list(dict.fromkeys(patients)) or [None]
    store.record([AuditEntry(step, FLOW, "-", detail, p) for p in shown], datetime.now(UTC))


# -- login -----------------------------------------------------------------------------------------------
async def login_page(request: Request) -> Response:
    return render(request, "login.html.j2", failed=False)


async def login(request: Request) -> Response:
    form = await _form(request)
    board = _board(request)
    name = str(form.get("name", ""))[:200]
    password = str(form.get("password", ""))
    client = request.client.host if request.client else "-"
    if not board.limiter.attempt(name, client):  # counted before the check: parallel attempts cannot pass it
        log.warning("board login refused: too many failures", user=one_line(name, 64), client=client)
        return render(request, "login.html.j2", status=429, failed=True, limited=True)
    user = await run_in_threadpool(check_password, board.users, name, password)
    if user is None:
        log.warning("board login failed", user=one_line(name, 64), client=client)
        return render(request, "login.html.j2", status=401, failed=True, limited=False)
    board.limiter.succeeded(name, client)
    request.session.clear()
    sid = board.sessions.open(user.name, SESSION_SECONDS)
    request.session.update({"user": user.name, "role": user.role.value, "csrf": new_token(), "sid": sid})
    log.info("board login", user=one_line(user.name, 64), role=user.role.value, client=client)
    return RedirectResponse("/", status_code=303)


async def logout(request: Request) -> Response:
    await _form(request)
    _board(request).sessions.end(request.session.get("sid"))
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


# -- the board -------------------------------------------------------------------------------------------
async def board_page(request: Request, viewer: Viewer) -> Response:
    wanted = BoardFilter.parse(dict(request.query_params))
    board = _board(request)

    def work() -> tuple[list[pages.Row], str | None]:
        with _store(board) as store:
            at = datetime.now(UTC)
            deadlines, why = [], None
            if board.deadlines is not None:
                deadlines = list(board.deadlines(store, board.settings, at))
            else:
                why = "deadline markers need integration.service.pathway_watch"
            names = _unit_names(board.settings.mappings_dir)
            link = partial(patient_token, request)
            rows, shown = pages.board_rows(store, viewer, wanted, deadlines, link=link, names=names)
            patients = shown if viewer.clinical else []
            what = {"view": "board", "rows": len(rows), "filter": _filter_text(wanted)}
            _record(store, "board-viewed", viewer, what, patients)
            return rows, why

    rows, why = await run_in_threadpool(work)
    return render(request, "board.html.j2", rows=rows, wanted=wanted, stages=list(Stage), markers_missing=why)


@lru_cache(maxsize=4)
def _unit_names(mappings_dir: Path) -> Mapping[str, str]:
    """The departments' names by SOR (mappings/departments.yaml), read once per process as the consumers read
    their mappings (a change needs a restart); {} with a warning when they cannot be read, so that the board
    still shows the SOR codes rather than failing."""
    try:
        return pages.unit_names(load_mappings(mappings_dir))
    except ConfigurationError as exc:
        log.warning("the board shows units by SOR only: the mappings did not load", reason=one_line(exc))
        return {}


def _filter_text(wanted: BoardFilter) -> str:
    return ",".join(
        f"{k}={v}"
        for k, v in (
            ("municipality", wanted.municipality),
            ("department", wanted.department),
            ("status", wanted.status),
        )
        if v
    )


def patient_token(request: Request, patient: str) -> str:
    """The opaque name of a patient in a URL (an HMAC under the session secret: no CPR number in a URL, a
    browser's history or a proxy's log)."""
    key: bytes = request.app.state.token_key
    return hmac.new(key, patient.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


async def patient_page(request: Request, viewer: Viewer) -> Response:
    if not viewer.clinical:
        return problem(request, 403, "a patient's trail is shown to the clinical role only")
    token = request.path_params["token"]
    if not TOKEN.fullmatch(token):
        raise ValueError("not a patient's link")
    board = _board(request)

    def work() -> tuple[str, list[pages.TrailLine], list[pages.CriteriaSeen]] | None:
        with _store(board) as store:
            patients = [c.patient for c in store.courses_at(list(Stage))]
            key = next((p for p in patients if hmac.compare_digest(patient_token(request, p), token)), None)
            if key is None:
                return None
            _record(store, "board-trail-viewed", viewer, {"view": "patient trail"}, [key])
            trail = store.trail(key)
            return key, pages.trail_lines(trail, viewer), pages.criteria_seen(trail, viewer)

    found = await run_in_threadpool(work)
    if found is None:
        return problem(request, 404, "no course for that link")
    key, lines, criteria = found
    return render(request, "patient.html.j2", patient=viewer.patient(key), lines=lines, criteria=criteria)


# -- messages --------------------------------------------------------------------------------------------
async def messages_page(request: Request, viewer: Viewer) -> Response:
    query = dict(request.query_params)
    if set(query) - {"q"}:
        raise ValueError("unknown query parameter(s): search with q (an id)")
    text = query.get("q", "").strip() or None
    if text is not None and cpr_numbers_in(text):
        raise ValueError(
            "a CPR number does not belong in the address line: search by patient (the clinical role's form) instead"
        )
    typed = None
    if request.method == "POST":  # a patient search: posted, so that no CPR number is in a URL
        form = await _form(request)
        typed = str(form.get("patient", "")).strip() or None
    if typed is not None and not viewer.clinical:
        return problem(request, 403, "searching by patient is for the clinical role")
    patient = typed_patient_key(typed) if typed else None
    board = _board(request)

    def work() -> list[tuple[str, str, str, int]]:
        if text is None and patient is None:
            return []
        with _store(board) as store:
            found = pages.search(store, text, patient)
            _record(
                store,
                "board-messages-searched",
                viewer,
                {"view": "message search", "found": len(found), "byPatient": patient is not None},
                [patient] if patient else [],
            )
            return found

    found = await run_in_threadpool(work)
    rows = [(_message_link(viewer, key), viewer.text(key, 120), flow, at, n) for key, flow, at, n in found]
    return render(request, "messages.html.j2", rows=rows, q=text or "", searched=bool(text or patient))


def _message_link(viewer: Viewer, key: str) -> str | None:
    """The id to link a message by, or None: an id the operations role sees masked (a sender put something
    CPR-shaped in it) is not put in a link's address either."""
    return key if viewer.clinical or viewer.text(key, 1000) == key else None


async def message_page(request: Request, viewer: Viewer) -> Response:
    wanted = request.path_params["message_id"]
    if not pages.SEARCHABLE.fullmatch(wanted):
        raise ValueError("not a message id")
    board = _board(request)

    def work() -> tuple[list[pages.TrailLine], list[pages.Shown]] | None:
        with _store(board) as store:
            records = pages.message_records(store, wanted)
            if not records:
                return None
            patients = [r.patient for r in records if r.patient]
            content = pages.outputs(store, records) if viewer.clinical else []
            what = {"view": "message", "messageId": wanted, "content": viewer.clinical}
            _record(store, "board-message-viewed", viewer, what, patients if viewer.clinical else [])
            return pages.trail_lines(records, viewer), [pages.shown(o) for o in content]

    result = await run_in_threadpool(work)
    if result is None:
        return problem(request, 404, "no message with that id in the audit log")
    lines, shown = result
    return render(request, "message.html.j2", message_id=viewer.text(wanted, 120), lines=lines, shown=shown)


# -- dead letters ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LetterRow:
    flow: str
    handle: str
    message_id: str
    at: str
    source: str
    reason: str


async def dead_letters_page(request: Request, viewer: Viewer) -> Response:
    if request.query_params.keys():
        raise ValueError("unknown query parameter(s)")
    replayed = _flash(request, "replayed")
    board = _board(request)

    def work() -> tuple[list[LetterRow], list[tuple[str, str, str, str]]]:
        rows: list[LetterRow] = []
        refused: list[tuple[str, str, str, str]] = []
        with _store(board) as store, _broker(board) as connection:
            who = _who(viewer)
            for flow in FLOWS:
                messages, letters = read_letters(connection, flow.dead_letter_queue)
                audit_read(
                    store, connection, "board dead-letters", flow.name, flow.dead_letter_queue, len(letters), who
                )
                rows += [_letter_row(flow.name, letter) for letter in letters]
                for message in messages:
                    connection.requeue(message.delivery_tag)
            messages = drain(connection, REFUSED_QUEUE, 100_000)
            audit_read(store, connection, "board refused", "refused", REFUSED_QUEUE, len(messages), who)
            for message in messages:
                death = first_death(message.raw_headers)
                refused.append(
                    (
                        one_line(message.message_id or "-", 120),
                        one_line(death.get("time", "-"), 40),
                        one_line(message.source or "no valid user-id", 80),
                        one_line(message.routing_key, 80),
                    )
                )
                connection.requeue(message.delivery_tag)
        return rows, refused

    rows, refused = await run_in_threadpool(work)
    return render(
        request,
        "dead_letters.html.j2",
        rows=rows,
        refused=refused,
        refused_queue=REFUSED_QUEUE,
        replayed=replayed,
    )


def _letter_row(flow: str, letter: DeadLetter) -> LetterRow:
    return LetterRow(
        flow, letter.handle, one_line(letter.message.message_id or "-", 120), letter.at, letter.source, letter.reason
    )


async def replay_letter(request: Request) -> Response:
    form = await _form(request)
    viewer = _viewer(request)
    if viewer is None:
        return RedirectResponse("/login", status_code=303)
    flow_name, handle = str(form.get("flow", "")), str(form.get("handle", ""))
    if flow_name not in FLOWS_BY_NAME or not HANDLE.fullmatch(handle):
        return problem(request, 400, "replay needs a flow and a dead letter's handle (dl-…)")
    flow = FLOWS_BY_NAME[flow_name]
    board = _board(request)

    def work() -> bool:
        with _store(board) as store, _broker(board) as connection:
            messages, letters = read_letters(connection, flow.dead_letter_queue)
            chosen = [letter for letter in letters if letter.handle == handle][:1]
            who = _who(viewer)
            audit_read(
                store,
                connection,
                "board replay",
                flow.name,
                flow.dead_letter_queue,
                len(letters),
                who,
                replaying=len(chosen),
            )
            for letter in chosen:
                replay(store, connection, flow, letter, who)
            taken = {letter.message.delivery_tag for letter in chosen}
            for message in messages:
                if message.delivery_tag not in taken:
                    connection.requeue(message.delivery_tag)
            return bool(chosen)

    try:
        done = await run_in_threadpool(work)
    except Unavailable as exc:
        return problem(request, 503, str(exc))
    if not done:
        return problem(request, 404, f"no dead letter {handle} in {flow.dead_letter_queue}")
    log.info("board replay", handle=handle, flow=flow.name, user=one_line(viewer.name, 64))
    request.session["replayed"] = handle  # shown once by the next page: a banner no link can forge
    return RedirectResponse("/dead-letters", status_code=303)


# -- outbound --------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class OutboundRow:
    header_id: str
    flow: str
    state: str
    resends: int
    first_sent: str
    last_sent: str
    routing_key: str
    patient: str
    resendable: bool


async def outbound_page(request: Request, viewer: Viewer) -> Response:
    if request.query_params.keys():
        raise ValueError("unknown query parameter(s)")
    resent = _flash(request, "resent")
    board = _board(request)

    def work() -> list[OutboundRow]:
        with _store(board) as store:
            messages = store.outbound_messages(list(OutboundState), bodies=False)
            waiting = [m for m in messages if m.state != OutboundState.ACKNOWLEDGED]
            patients = [m.patient for m in waiting if m.patient] if viewer.clinical else []
            _record(store, "board-outbound-viewed", viewer, {"view": "outbound", "messages": len(waiting)}, patients)
            return [
                OutboundRow(
                    viewer.text(m.header_id, 128),
                    m.flow,
                    m.state.value,
                    m.resends,
                    pages.stamp(m.first_sent_at),
                    pages.stamp(m.last_sent_at),
                    viewer.text(m.output.routing_key, 80),
                    viewer.patient(m.patient),
                    True,
                )
                for m in sorted(waiting, key=lambda m: m.first_sent_at)
            ]

    rows = await run_in_threadpool(work)
    return render(request, "outbound.html.j2", rows=rows, resent=viewer.text(resent, 128) if resent else "")


async def resend_message(request: Request) -> Response:
    form = await _form(request)
    viewer = _viewer(request)
    if viewer is None:
        return RedirectResponse("/login", status_code=303)
    header_id = str(form.get("header_id", ""))
    if not HEADER_ID.fullmatch(header_id):
        return problem(request, 400, "resend needs a MessageHeader id")
    board = _board(request)

    def work() -> bool:
        with _store(board) as store:
            message = store.outbound_sent([header_id]).get(header_id)
            if message is None or message.state is OutboundState.ACKNOWLEDGED:
                return False
            now = datetime.now(UTC)
            since = (now - message.last_sent_at).total_seconds()
            if message.resends and since < RESEND_PAUSE:  # a double click, or two people at once: one is enough
                raise TooSoon(f"sent {max(since, 0):.0f} s ago: wait for its ack, or resend in {RESEND_PAUSE} s")
            with _broker(board) as connection:
                resend(store, connection, message, now, **_who(viewer))
            return True

    def one_at_a_time() -> bool:
        with board.resending:  # the check and the resend together: simultaneous clicks cannot both pass
            return work()

    try:
        done = await run_in_threadpool(one_at_a_time)
    except TooSoon as exc:
        return problem(request, 409, str(exc))
    except Unavailable as exc:
        return problem(request, 503, str(exc))
    if not done:
        return problem(request, 404, "no message of ours awaiting an ack under that MessageHeader id")
    request.session["resent"] = header_id  # shown once by the next page: a banner no link can forge
    return RedirectResponse("/outbound", status_code=303)


# -- throughput ------------------------------------------------------------------------------------------
async def throughput_page(request: Request, viewer: Viewer) -> Response:
    if request.query_params:
        raise ValueError("the throughput page takes no query parameters")
    board = _board(request)
    at = datetime.now(UTC)

    def work() -> dict[str, dict[str, int]]:
        with _store(board) as store:
            counts = pages.throughput(store.records(), at)
            _record(store, "board-throughput-viewed", viewer, {"view": "throughput"}, [])
            return counts

    counts = await run_in_threadpool(work)
    nonce = request.scope.get("state", {}).get("nonce", "")
    return render(request, "throughput.html.j2", counts=counts, chart=chart(counts, nonce), at=pages.stamp(at))


def chart(counts: Mapping[str, Mapping[str, int]], nonce: str) -> str:
    """The throughput as a pygal bar chart, SVG to put inline: its script removed, its style given the page's
    CSP nonce, no style attribute (the CSP allows none). The labels are flow names (never patient data)."""
    flows = sorted({flow for per in counts.values() for flow in per}) or ["-"]
    bars = pygal.Bar(js=[], disable_xml_declaration=True, width=720, height=320, legend_at_bottom=True)
    bars.title = "messages per flow"
    bars.x_labels = flows
    for key, title in (
        ("received-hour", "received, last hour"),
        ("received-day", "received, last day"),
        ("sent-hour", "sent, last hour"),
        ("sent-day", "sent, last day"),
    ):
        bars.add(title, [counts.get(key, {}).get(flow, 0) for flow in flows])
    svg = etree.fromstring(bars.render(is_unicode=True).encode("utf-8"), etree.XMLParser(resolve_entities=False))
    for element in list(svg.iter("{http://www.w3.org/2000/svg}script")):
        element.getparent().remove(element)
    for element in svg.iter("{http://www.w3.org/2000/svg}style"):
        element.set("nonce", nonce)
    for element in svg.iter():
        if isinstance(element.tag, str):
            element.attrib.pop("style", None)
    return str(etree.tostring(svg, encoding="unicode"))


# -- the application ---------------------------------------------------------------------------------------
async def not_found(request: Request, exc: Exception) -> Response:
    return problem(request, 404, "no such page")


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return problem(request, exc.status_code, str(exc.detail))


async def internal_error(request: Request, exc: Exception) -> Response:
    log.error("board: internal error", error=type(exc).__name__, path=one_line(request.url.path, 200))
    return HTMLResponse("internal error: the board's log says which (no details here)", status_code=500)


def create_app(board: Board, secret: bytes, secure_cookies: bool = True) -> Starlette:
    """The board as an ASGI application."""
    routes = [
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/", page(board_page), methods=["GET"]),
        Route("/patients/{token}", page(patient_page), methods=["GET"]),
        Route("/messages", page(messages_page), methods=["GET", "POST"]),
        Route("/messages/{message_id:path}", page(message_page), methods=["GET"]),
        Route("/dead-letters", page(dead_letters_page), methods=["GET"]),
        Route("/dead-letters/replay", replay_letter, methods=["POST"]),
        Route("/outbound", page(outbound_page), methods=["GET"]),
        Route("/outbound/resend", resend_message, methods=["POST"]),
        Route("/throughput", page(throughput_page), methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [
        Middleware(SecurityHeaders),
        Middleware(
            SessionMiddleware,
            secret_key=secret.hex(),  # every byte of the secret, whatever it is (raw random bytes too)
            session_cookie=SESSION_COOKIE,
            max_age=SESSION_SECONDS,
            same_site="strict",
            https_only=secure_cookies,
        ),
    ]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={404: not_found, HTTPException: http_error, Exception: internal_error},
    )
    app.state.board = board
    app.state.token_key = hashlib.sha256(b"patient-links\0" + secret).digest()
    return app
