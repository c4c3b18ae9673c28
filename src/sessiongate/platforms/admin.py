"""`GET /admin`: the operator page; `POST /admin/redrive`: send dead jobs back to pending.

The page is off until `platforms.admin.token_env` names a variable holding a
token; then every request must present it, as `Authorization: Bearer …`, or as
`?token=…` once (the answer sets an HttpOnly cookie and redirects to the bare
URL, so the token does not stay in the address bar or the history).

The admin token is not the chat token (`server.token`): whoever may chat must
not be an operator by default. Its cookie has a name of its own for the same
reason (the chat page's `sessiongate_token` cookie is left alone), and is
scoped to `/admin`, `SameSite=Strict`.

CSRF: a redrive authenticated by the cookie (what a browser sends by itself)
must also carry the page's nonce, an HMAC of the admin token over a random
salt and the time the page was rendered, which another site cannot compute; a
cross-site `Origin` or `Sec-Fetch-Site` is refused outright. A request with the
bearer header needs no nonce: a browser never attaches it on its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from collections.abc import Callable, Sequence
from functools import partial
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from sessiongate.clock import Clock
from sessiongate.config import AdminSettings
from sessiongate.models import SessionState
from sessiongate.platforms import admin_page
from sessiongate.platforms.admin_page import AdminView, SessionRow
from sessiongate.store.base import Store

ADMIN_COOKIE = "sessiongate_admin_token"
NONCE_SECONDS = 3600.0
"""How long a rendered page's Redrive buttons stay valid."""

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_FORM_BYTES = 64 * 1024


def make_nonce(token: str, issued: int, salt: str | None = None) -> str:
    """A page's nonce: `issued.salt.signature`, signed with the admin token."""
    salt = salt or secrets.token_urlsafe(12)
    return f"{issued}.{salt}.{_sign(token, issued, salt)}"


def nonce_valid(token: str, nonce: str, now: float) -> bool:
    """Whether `nonce` was made with `token` within the last `NONCE_SECONDS`."""
    parts = nonce.split(".")
    if len(parts) != 3 or not parts[0].isdigit():
        return False
    issued, salt, signature = int(parts[0]), parts[1], parts[2]
    if not 0 <= now - issued <= NONCE_SECONDS:
        return False
    return hmac.compare_digest(signature, _sign(token, issued, salt))


def _sign(token: str, issued: int, salt: str) -> str:
    message = f"sessiongate-admin-redrive:{issued}:{salt}".encode()
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    return header[7:].strip() or None if header.lower().startswith("bearer ") else None


def _same(presented: str | None, token: str) -> bool:
    return presented is not None and hmac.compare_digest(presented.encode(), token.encode())


def _cross_site(request: Request) -> bool:
    """A request that a page of another origin made the browser send."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return True
    origin = request.headers.get("origin")
    if origin is None:
        return False  # not a browser, or an old one: the nonce still has to match
    return origin != f"{request.url.scheme}://{request.headers.get('host', '')}"


class Admin:
    """The admin platform (routes only): the page and its redrive form."""

    name = "admin"

    def __init__(
        self,
        store: Store,
        settings: AdminSettings,
        *,
        providers: Sequence[str],
        clock: Clock,
    ) -> None:
        self._store = store
        self._settings = settings
        self._providers = tuple(providers)
        self._clock = clock

    def routes(self) -> Sequence[BaseRoute]:
        """`GET /admin` and `POST /admin/redrive`."""
        return [
            Route("/admin", self.page, methods=["GET"]),
            Route("/admin/redrive", self.redrive, methods=["POST"]),
        ]

    async def run(self, stop: asyncio.Event) -> None:
        """Nothing to receive: the routes do the work."""
        return

    def _off(self) -> Response:
        return _html(partial(admin_page.off_page, self._settings.token_env), status=404)

    async def page(self, request: Request) -> Response:
        """The page, a refusal (401), or the off notice (404)."""
        token = self._settings.access_token()
        if token is None:
            return self._off()
        query = request.query_params.get("token")
        if query is not None:
            if not _same(query, token):
                return _html(admin_page.refused_page, status=401)
            # Trade the token in the URL for the cookie, and drop it from the address bar.
            response = RedirectResponse("/admin", status_code=303)
            response.set_cookie(
                ADMIN_COOKIE,
                token,
                path="/admin",
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
            return response
        if not (_same(_bearer(request), token) or _same(request.cookies.get(ADMIN_COOKIE), token)):
            return _html(admin_page.refused_page, status=401)
        view = await self._view(request)
        nonce = make_nonce(token, int(self._clock.now().timestamp()))
        return _html(partial(admin_page.render, view, nonce))

    async def redrive(self, request: Request) -> Response:
        """Send the posted dead jobs (or all of them) back to pending; 303 to the page."""
        token = self._settings.access_token()
        if token is None:
            return self._off()
        by_bearer = _same(_bearer(request), token)
        if not (by_bearer or _same(request.cookies.get(ADMIN_COOKIE), token)):
            return _html(admin_page.refused_page, status=401)
        form = await _read_form(request)
        if form is None:
            message = "Send the form as application/x-www-form-urlencoded, under 64 KiB."
            return _html(partial(admin_page.problem_page, message), status=400)
        if not by_bearer:
            now = self._clock.now().timestamp()
            fresh = nonce_valid(token, (form.get("nonce") or [""])[0], now)
            if _cross_site(request) or not fresh:
                message = "This form is stale or came from another site: reload /admin and retry."
                return _html(partial(admin_page.problem_page, message), status=403)
        ids = _job_ids(form)
        if ids == []:
            message = "Name a dead job to redrive."
            return _html(partial(admin_page.problem_page, message), status=400)
        count = await self._store.redrive(ids, at=self._clock.now())
        return RedirectResponse(f"/admin?redriven={count}", status_code=303)

    async def _view(self, request: Request) -> AdminView:
        limit = _limit(request.query_params.get("limit"))
        at = self._clock.now()
        sessions = await self._store.list_sessions(limit=limit)
        cursors = await asyncio.gather(*(self._store.cursors(s.id) for s in sessions))
        live = [s for s in sessions if s.state is SessionState.ACTIVE]
        timers = await asyncio.gather(*(self._store.timers(s.id) for s in live))
        flash = request.query_params.get("redriven")
        return AdminView(
            at=at,
            providers=self._providers,
            sessions=[SessionRow(s, tuple(c)) for s, c in zip(sessions, cursors, strict=True)],
            outbox=await self._store.outbox_stats(),
            dead_letters=await self._store.dead_letters(limit=MAX_LIMIT),
            timers=[timer for group in timers for timer in group],
            next_timer_due=await self._store.next_timer_due(),
            stats=await self._store.stats(ended_since=at, limit=0),
            redriven=int(flash) if flash is not None and flash.isdigit() else None,
        )


def _limit(raw: str | None) -> int:
    if raw is None or not raw.isdigit():
        return DEFAULT_LIMIT
    return max(1, min(MAX_LIMIT, int(raw)))


async def _read_form(request: Request) -> dict[str, list[str]] | None:
    """The urlencoded form of a POST (no multipart parser needed), or None if unusable."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    try:
        return parse_qs(body.decode("ascii"), max_num_fields=1000)
    except (UnicodeDecodeError, ValueError):
        return None


def _job_ids(form: dict[str, list[str]]) -> list[int] | None:
    """The posted job ids; None for "all"; [] when nothing usable was posted."""
    if form.get("all") == ["1"]:
        return None
    return [int(value) for value in form.get("job_id", []) if value.isdigit()]


def _html(make: Callable[[str], str], *, status: int = 200) -> HTMLResponse:
    """The page `make(style_nonce)` builds, with headers that keep it to itself."""
    # No scripts at all; styles only with this answer's nonce; no framing; no caching.
    nonce = secrets.token_urlsafe(12)
    headers = {
        "Content-Security-Policy": (
            f"default-src 'none'; style-src 'nonce-{nonce}'; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'"
        ),
        "Cache-Control": "no-store",
        # Not no-referrer: under it browsers send `Origin: null` with the page's own forms.
        "Referrer-Policy": "same-origin",
        "X-Content-Type-Options": "nosniff",
    }
    return HTMLResponse(make(nonce), status_code=status, headers=headers)
