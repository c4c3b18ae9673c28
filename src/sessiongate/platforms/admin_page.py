"""The HTML of the admin page, rendered on the server, with no scripts or external assets.

Every value that comes from the store (titles, ids, errors, payloads, user
names) goes through `_e`, which escapes it for text and attribute positions
alike; markup is only ever built from the constants here.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sessiongate.models import (
    Cursor,
    DeadLetter,
    JobState,
    OutboxStats,
    Session,
    StoreStats,
    Timer,
)

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0; color: #1d2430; background: #f4f6f9; }
header { background: #1d2430; color: #fff; padding: 12px 24px; display: flex; gap: 24px;
         align-items: baseline; }
header h1 { font-size: 18px; margin: 0; }
header span { color: #b9c2d0; }
main { padding: 8px 24px 40px; }
section { background: #fff; border: 1px solid #dde2ea; border-radius: 6px; margin: 16px 0;
          padding: 4px 16px 12px; overflow-x: auto; }
h2 { font-size: 15px; margin: 12px 0 8px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #eef1f5;
         vertical-align: top; }
th { font-weight: 600; color: #4a5566; background: #f8f9fb; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font: 12px ui-monospace, monospace; }
.state { border-radius: 10px; padding: 1px 8px; font-size: 12px; }
.active { background: #dcf5e3; color: #166534; } .ending { background: #fff1d6; color: #8a5a00; }
.finalized { background: #e8ebf0; color: #4a5566; } .dead { background: #fde2e2; color: #991b1b; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; margin: 16px 0 0; }
.card { background: #fff; border: 1px solid #dde2ea; border-radius: 6px; padding: 8px 16px; }
.card b { display: block; font-size: 20px; }
.flash { background: #dcf5e3; border: 1px solid #9bd8ae; padding: 8px 16px; border-radius: 6px;
         margin-top: 16px; }
.error { color: #991b1b; }
.muted { color: #7a8597; }
button { font: inherit; padding: 2px 10px; border-radius: 4px; border: 1px solid #9aa5b5;
         background: #fff; cursor: pointer; }
button:hover { background: #eef1f5; }
"""


@dataclass(frozen=True, slots=True)
class SessionRow:
    """A session with its cursors (one per provider that has seen it)."""

    session: Session
    cursors: tuple[Cursor, ...]


@dataclass(frozen=True, slots=True)
class AdminView:
    """Everything one rendering of the page shows, read from the store."""

    at: datetime
    providers: tuple[str, ...]
    sessions: Sequence[SessionRow]
    outbox: OutboxStats
    dead_letters: Sequence[DeadLetter]
    timers: Sequence[Timer]
    next_timer_due: datetime | None
    stats: StoreStats
    redriven: int | None = None


def _e(value: object) -> str:
    """`value` as HTML text, safe in element content and in quoted attributes."""
    if value is None:
        return '<span class="muted">—</span>'
    return html.escape(str(value), quote=True)


def _when(value: datetime | None) -> str:
    return _e(None if value is None else value.strftime("%Y-%m-%d %H:%M:%S"))


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, empty: str) -> str:
    """A table; `headers` are constants (a leading '#' marks a number column), cells HTML."""
    body = "".join("<tr>" + "".join(cell for cell in row) + "</tr>" for row in rows)
    if not body:
        return f'<p class="muted">{_e(empty)}</p>'
    head = "".join(
        f'<th class="num">{h[1:]}</th>' if h.startswith("#") else f"<th>{h}</th>" for h in headers
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _td(value: object, *, num: bool = False, code: bool = False) -> str:
    inner = f"<code>{_e(value)}</code>" if code and value is not None else _e(value)
    return f'<td class="num">{inner}</td>' if num else f"<td>{inner}</td>"


def _state(state: str) -> str:
    # The class is one of the constants in _STYLE; the text is escaped like any value.
    css = state if state in ("active", "ending", "finalized", "dead") else ""
    return f'<td><span class="state {css}">{_e(state)}</span></td>'


def _document(title: str, body: str, style_nonce: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="referrer" content="same-origin"><title>{_e(title)}</title>'
        f'<style nonce="{_e(style_nonce)}">{_STYLE}</style></head><body>{body}</body></html>'
    )


def _notice(title: str, paragraphs: Sequence[str], style_nonce: str) -> str:
    body = "".join(paragraphs)
    return _document(
        title,
        f"<header><h1>sessiongate admin</h1></header><main><section><h2>{_e(title)}</h2>"
        f"{body}</section></main>",
        style_nonce,
    )


def off_page(token_env: str | None, style_nonce: str) -> str:
    """The answer when no admin token is configured: off, and how to turn it on."""
    if token_env:
        why = (
            f"<p><code>platforms.admin.token_env</code> names <code>{_e(token_env)}</code>, "
            "but that environment variable is unset or empty in this process.</p>"
        )
    else:
        why = (
            "<p>No admin token is configured: <code>platforms.admin.token_env</code> "
            "is not set.</p>"
        )
    how = (
        "<p>To turn it on, name an environment variable in the configuration and put a "
        "long random token in it, then restart the gateway:</p>"
        "<pre><code>platforms:\n  admin: {token_env: SESSIONGATE_ADMIN_TOKEN}</code></pre>"
        "<pre><code>export SESSIONGATE_ADMIN_TOKEN=$(python3 -c 'import secrets; "
        "print(secrets.token_urlsafe(32))')</code></pre>"
        "<p>Then open <code>/admin?token=…</code> once, or send "
        "<code>Authorization: Bearer …</code>. See docs/operations.md.</p>"
    )
    return _notice("The admin page is off", [why, how], style_nonce)


def refused_page(style_nonce: str) -> str:
    """The answer to a missing or wrong admin token, with a form to give one."""
    form = (
        '<form method="get" action="/admin"><label>Admin token '
        '<input type="password" name="token" autocomplete="current-password" required>'
        '</label> <button type="submit">Open</button></form>'
    )
    text = "<p>A valid admin token is required (<code>Authorization: Bearer …</code>).</p>"
    return _notice("Admin token required", [text, form], style_nonce)


def problem_page(message: str, style_nonce: str) -> str:
    """A refused admin action, with the way back."""
    text = f'<p class="error">{_e(message)}</p><p><a href="/admin">Back to /admin</a></p>'
    return _notice("Not done", [text], style_nonce)


def render(view: AdminView, nonce: str, style_nonce: str) -> str:
    """The admin page."""
    parts = [
        f"<header><h1>sessiongate admin</h1><span>{_when(view.at)} UTC</span>"
        f"<span>providers: {_e(', '.join(view.providers) or 'none')}</span></header><main>",
        _flash(view.redriven),
        _cards(view),
        _section("Sessions", _sessions(view.sessions), anchor="sessions"),
        _section("Memory sync", _sync(view.sessions, view.providers), anchor="sync"),
        _section("Outbox by kind", _outbox(view.outbox.by_kind), anchor="outbox"),
        _section("Dead letters", _dead_letters(view.dead_letters, nonce), anchor="dead"),
        _section("Timers of the sessions above", _timers(view.timers, view.at), anchor="timers"),
        "</main>",
    ]
    return _document("sessiongate admin", "".join(parts), style_nonce)


def _section(title: str, body: str, *, anchor: str) -> str:
    return f'<section id="{anchor}"><h2>{_e(title)}</h2>{body}</section>'


def _flash(redriven: int | None) -> str:
    if redriven is None:
        return ""
    jobs = "job" if redriven == 1 else "jobs"
    return (
        f'<div class="flash" role="status">Sent {_e(redriven)} dead {jobs} back to pending.</div>'
    )


def _cards(view: AdminView) -> str:
    stats, outbox = view.stats, view.outbox
    overdue = 0.0
    if view.next_timer_due is not None:
        overdue = max(0.0, (view.at - view.next_timer_due).total_seconds())
    figures = [
        ("active sessions", stats.sessions.get("active", 0)),
        ("ending", stats.sessions.get("ending", 0)),
        ("finalized", stats.sessions.get("finalized", 0)),
        ("ledger entries", stats.turns),
        ("jobs pending", outbox.pending),
        ("jobs running", outbox.running),
        ("dead letters", outbox.dead),
        ("timer lag (s)", f"{overdue:.0f}"),
    ]
    cards = "".join(f'<div class="card"><b>{_e(v)}</b>{_e(k)}</div>' for k, v in figures)
    return f'<div class="cards">{cards}</div>'


def _sessions(rows: Sequence[SessionRow]) -> str:
    headers = [
        "Session",
        "Title",
        "State",
        "End",
        "Parent",
        "Where",
        "User",
        "#Turns",
        "Created",
        "Last activity",
    ]
    cells = []
    for row in rows:
        s = row.session
        end = None if s.end_reason is None else str(s.end_reason)
        if end is not None and s.end_detail:
            end = f"{end} ({s.end_detail})"
        parent = None if s.parent_id is None else f"{s.parent_id} ({s.lineage or 'parent'})"
        cells.append(
            [
                _td(s.id, code=True),
                _td(s.title),
                _state(str(s.state)),
                _td(end),
                _td(parent, code=True),
                _td(f"{s.platform} {s.chat_type} {s.chat_id}"),
                _td(s.user_name or s.user_id),
                _td(s.turn_count, num=True),
                f"<td>{_when(s.created_at)}</td>",
                f"<td>{_when(s.ended_at or s.last_activity_at)}</td>",
            ]
        )
    return _table(headers, cells, empty="No sessions yet.")


def _sync(rows: Sequence[SessionRow], providers: Sequence[str]) -> str:
    headers = [
        "Session",
        "Provider",
        "#Turns",
        "#Delivered",
        "#Committed",
        "#Epoch",
        "Last commit",
        "Last error",
    ]
    cells = []
    for row in rows:
        by_provider = {c.provider: c for c in row.cursors}
        for name in sorted(set(providers) | set(by_provider)):
            cursor = by_provider.get(name, Cursor(name, row.session.id))
            behind = cursor.delivered_seq < row.session.turn_count
            delivered = f"{cursor.delivered_seq}" + (" (behind)" if behind else "")
            cells.append(
                [
                    _td(row.session.id, code=True),
                    _td(name),
                    _td(row.session.turn_count, num=True),
                    _td(delivered, num=True),
                    _td(cursor.committed_seq, num=True),
                    _td(cursor.commit_epoch, num=True),
                    f"<td>{_when(cursor.last_commit_at)}</td>",
                    f'<td class="error">{_e(cursor.last_error)}</td>'
                    if cursor.last_error
                    else _td(None),
                ]
            )
    return _table(headers, cells, empty="No sessions, so nothing to sync.")


def _outbox(by_kind: Mapping[str, Mapping[str, int]]) -> str:
    states = [state.value for state in JobState]
    headers = ["Kind", *(f"#{state}" for state in states)]
    cells = [
        [_td(kind, code=True), *(_td(counts.get(state, 0), num=True) for state in states)]
        for kind, counts in sorted(by_kind.items())
    ]
    return _table(headers, cells, empty="The outbox is empty.")


def _dead_letters(letters: Sequence[DeadLetter], nonce: str) -> str:
    headers = ["Job", "Kind", "Session", "#Attempts", "Died", "Last error", "Payload", ""]
    cells = []
    for letter in letters:
        payload = json.dumps(letter.payload, sort_keys=True, default=str)
        if len(payload) > 300:
            payload = payload[:300] + "…"
        button = (
            '<td><form method="post" action="/admin/redrive">'
            f'<input type="hidden" name="nonce" value="{_e(nonce)}">'
            f'<input type="hidden" name="job_id" value="{_e(letter.job_id)}">'
            f'<button type="submit" aria-label="Redrive job {_e(letter.job_id)}">Redrive</button>'
            "</form></td>"
        )
        cells.append(
            [
                _td(letter.job_id, num=True),
                _td(letter.kind, code=True),
                _td(letter.session_id, code=True),
                _td(letter.attempts, num=True),
                f"<td>{_when(letter.died_at)}</td>",
                f'<td class="error">{_e(letter.last_error)}</td>',
                _td(payload, code=True),
                button,
            ]
        )
    table = _table(headers, cells, empty="No dead letters: every job either ran or will retry.")
    if not letters:
        return table
    everything = (
        '<form method="post" action="/admin/redrive">'
        f'<input type="hidden" name="nonce" value="{_e(nonce)}">'
        '<input type="hidden" name="all" value="1">'
        '<p><button type="submit">Redrive all dead jobs</button></p></form>'
    )
    return table + everything


def _timers(timers: Sequence[Timer], at: datetime) -> str:
    headers = ["Session", "Kind", "Due", "#Overdue (s)", "Leased by"]
    cells = [
        [
            _td(t.session_id, code=True),
            _td(t.kind, code=True),
            f"<td>{_when(t.due_at)}</td>",
            _td(f"{max(0.0, (at - t.due_at).total_seconds()):.0f}", num=True),
            _td(t.lease_owner, code=True),
        ]
        for t in sorted(timers, key=lambda t: (t.due_at, t.session_id, t.kind))
    ]
    return _table(headers, cells, empty="No timers on the active sessions shown.")
