"""`/admin` as an operator uses it: the token, the page, escaping, Redrive, and a real browser.

The httpx tests talk to the gateway's application in process (no worker runs, so a
redriven job stays pending for the test to see). The browser test serves the whole
gateway on a free port and uses the page in Debian's Chromium through Playwright;
without a browser it is skipped on a developer machine and FAILS in CI (CI=true).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import async_playwright, expect

from gateway.conftest import settings_for
from platforms.browser import launch
from sessiongate.gateway.process import GatewayProcess
from sessiongate.models import JobState
from sessiongate.platforms.access import TOKEN_COOKIE
from sessiongate.platforms.admin import ADMIN_COOKIE, make_nonce
from sessiongate.store.base import Store
from sessiongate.testing import new_job
from sessiongate.testing.serving import serving

TOKEN = "adm1n-T0ken-for-tests"
TOKEN_ENV = "SG_TEST_ADMIN_TOKEN"
EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)>&\''
NONCE = re.compile(r'name="nonce" value="([^"]+)"')


def _settings(tmp_path: Path, **admin: Any) -> Any:
    return settings_for(
        f"sqlite:///{tmp_path}/sg.db",
        tmp_path,
        platforms={"web": {"enabled": False}, "admin": admin},
    )


async def _client(process: GatewayProcess) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=process.app())
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")


@pytest.fixture
async def process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[GatewayProcess]:
    """A gateway (not serving, no worker) whose admin page is on."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    opened = await GatewayProcess.open(_settings(tmp_path, token_env=TOKEN_ENV))
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def client(process: GatewayProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with await _client(process) as opened:
        yield opened


async def _signed_in(client: httpx.AsyncClient) -> None:
    response = await client.get("/admin", params={"token": TOKEN})
    assert response.status_code == 303
    assert response.headers["location"] == "/admin"


async def _dead_job(store: Store, key: str, **payload: Any) -> int:
    """A job buried by a worker of the test's own: due later, so nobody else claims it."""
    later = datetime.now(UTC) + timedelta(hours=1)
    job = new_job(key, kind="test.orphan", payload=payload, run_after=later)
    [job_id] = await store.enqueue([job], at=datetime.now(UTC))
    claimed = await store.claim_jobs("admin-test", at=later, lease_seconds=30, limit=50)
    [mine] = [j for j in claimed if j.id == job_id]
    error = str(payload.get("error", "no handler"))
    assert await store.bury_job(job_id, mine.fencing_token, error=error, at=later)
    return job_id


async def _say(client: httpx.AsyncClient, text: str, **source: str) -> dict[str, Any]:
    body = {"chat_id": "c-alice", "user_id": "alice", "text": text, **source}
    response = await client.post("/api/v1/messages", json=body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


# -- off, refused, accepted ---------------------------------------------------------------


async def test_without_a_token_configured_the_page_says_it_is_off(tmp_path: Path) -> None:
    process = await GatewayProcess.open(_settings(tmp_path))
    try:
        async with await _client(process) as client:
            page = await client.get("/admin")
            assert page.status_code == 404
            assert "The admin page is off" in page.text
            assert "platforms.admin.token_env" in page.text
            # Not even a correct-looking token opens it, and nothing can be redriven.
            assert (await client.get("/admin", params={"token": "x"})).status_code == 404
            assert (await client.post("/admin/redrive", data={"all": "1"})).status_code == 404
    finally:
        await process.close()


async def test_a_token_variable_that_is_unset_keeps_it_off_and_says_which(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    process = await GatewayProcess.open(_settings(tmp_path, token_env=TOKEN_ENV))
    try:
        async with await _client(process) as client:
            page = await client.get("/admin")
        assert page.status_code == 404
        assert TOKEN_ENV in page.text
    finally:
        await process.close()


@pytest.mark.parametrize(
    "credentials",
    [
        {},
        {"headers": {"authorization": "Bearer wrong"}},
        {"params": {"token": "wrong"}},
        {"cookies": {ADMIN_COOKIE: "wrong"}},
        # The chat token's cookie is not the admin's.
        {"cookies": {TOKEN_COOKIE: TOKEN}},
    ],
    ids=["none", "bearer", "query", "cookie", "chat-cookie"],
)
async def test_a_missing_or_wrong_token_is_refused(
    process: GatewayProcess, credentials: dict[str, Any]
) -> None:
    await _dead_job(process.store, "secret-job", error="secret-error")
    async with await _client(process) as client:
        cookies = credentials.pop("cookies", None)
        if cookies:
            client.cookies.update(cookies)
        page = await client.get("/admin", **credentials)
        assert page.status_code == 401
        assert "Admin token required" in page.text
        assert "secret-error" not in page.text
        redrive = await client.post("/admin/redrive", data={"all": "1"}, **credentials)
        assert redrive.status_code == 401
    assert len(await process.store.dead_letters()) == 1


async def test_the_bearer_token_opens_the_page(
    process: GatewayProcess, client: httpx.AsyncClient
) -> None:
    reply = await _say(client, "hello", user_name="Ada")
    page = await client.get("/admin", headers={"authorization": f"Bearer {TOKEN}"})
    assert page.status_code == 200
    assert reply["session_id"] in page.text
    for heading in ("Sessions", "Memory sync", "Outbox by kind", "Dead letters", "Timers"):
        assert f"<h2>{heading}" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "script-src" not in page.headers["content-security-policy"]
    assert "default-src 'none'" in page.headers["content-security-policy"]


async def test_the_query_token_becomes_a_scoped_httponly_cookie(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/admin", params={"token": TOKEN})
    assert response.status_code == 303
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{ADMIN_COOKIE}=")
    for attribute in ("HttpOnly", "Path=/admin", "SameSite=strict"):
        assert attribute.lower() in cookie.lower()
    assert TOKEN_COOKIE + "=" not in cookie
    page = await client.get("/admin")
    assert page.status_code == 200
    assert "Sessions" in page.text


# -- what the page shows ------------------------------------------------------------------


async def test_every_value_is_escaped(process: GatewayProcess, client: httpx.AsyncClient) -> None:
    first = await _say(client, "hello", user_name=EVIL)
    await process.store.set_title(first["session_id"], EVIL)
    await _say(client, "/new")
    await process.lifecycle.drain()
    await _dead_job(process.store, "evil-job", error=EVIL, note=EVIL)
    await _signed_in(client)
    page = await client.get("/admin")
    assert page.status_code == 200
    text = page.text
    assert "<script" not in text.lower()
    assert "<img" not in text.lower()
    assert "onerror=alert(1)>" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text
    # Title, user name, last error and payload (JSON-quoted) each appear escaped.
    assert text.count("&lt;img src=x onerror=alert(1)&gt;&amp;&#x27;") >= 3


async def test_the_page_shows_sync_state_and_lineage(
    process: GatewayProcess, client: httpx.AsyncClient
) -> None:
    first = await _say(client, "hello")
    await _say(client, "my name is Ada")
    second = await _say(client, "/branch side quest")
    await process.lifecycle.drain()
    await _signed_in(client)
    text = (await client.get("/admin")).text
    sync = text.split('<section id="sync">')[1].split("</section>")[0]
    row = sync.split(f"<code>{first['session_id']}</code>")[1].split("</tr>")[0]
    # The ended session: four turns delivered to and committed at the local provider.
    assert re.findall(r'<td class="num">(\d+)', row)[:3] == ["4", "4", "4"]
    sessions = text.split('<section id="sessions">')[1].split("</section>")[0]
    assert f"{first['session_id']} (branch)" in sessions
    assert second["session_id"] in sessions
    assert "side quest" in sessions


# -- redrive ------------------------------------------------------------------------------


async def test_redrive_sends_a_dead_job_back_to_pending(
    process: GatewayProcess, client: httpx.AsyncClient
) -> None:
    job_id = await _dead_job(process.store, "orphan-1")
    other = await _dead_job(process.store, "orphan-2")
    await _signed_in(client)
    page = await client.get("/admin")
    assert "Redrive" in page.text
    [nonce, *_] = NONCE.findall(page.text)
    posted = await client.post(
        "/admin/redrive",
        data={"job_id": str(job_id), "nonce": nonce},
        headers={"origin": "http://127.0.0.1"},
    )
    assert posted.status_code == 303
    assert posted.headers["location"] == "/admin?redriven=1"
    job = await process.store.get_job(job_id)
    assert job is not None
    assert (job.state, job.attempts) == (JobState.PENDING, 0)
    assert [letter.job_id for letter in await process.store.dead_letters()] == [other]
    after = await client.get(posted.headers["location"])
    assert "Sent 1 dead job back to pending." in after.text


async def test_redrive_all_with_the_bearer_token_needs_no_nonce(
    process: GatewayProcess, client: httpx.AsyncClient
) -> None:
    for n in range(3):
        await _dead_job(process.store, f"orphan-{n}")
    posted = await client.post(
        "/admin/redrive", data={"all": "1"}, headers={"authorization": f"Bearer {TOKEN}"}
    )
    assert posted.status_code == 303
    assert posted.headers["location"] == "/admin?redriven=3"
    assert await process.store.dead_letters() == []


@pytest.mark.parametrize(
    ("form", "headers"),
    [
        ({}, {}),
        ({"nonce": "garbage"}, {}),
        ({"nonce": make_nonce("another-token", int(datetime.now(UTC).timestamp()))}, {}),
        ({"nonce": make_nonce(TOKEN, int(datetime.now(UTC).timestamp()) - 7200)}, {}),
        ({"nonce": "fresh"}, {"origin": "http://evil.example"}),
        ({"nonce": "fresh"}, {"sec-fetch-site": "cross-site"}),
    ],
    ids=["no-nonce", "garbage", "foreign-signature", "stale", "foreign-origin", "cross-site"],
)
async def test_a_cookie_redrive_without_a_valid_same_site_nonce_is_refused(
    process: GatewayProcess,
    client: httpx.AsyncClient,
    form: dict[str, str],
    headers: dict[str, str],
) -> None:
    job_id = await _dead_job(process.store, "orphan-1")
    await _signed_in(client)
    if form.get("nonce") == "fresh":
        [form["nonce"], *_] = NONCE.findall((await client.get("/admin")).text)
    posted = await client.post(
        "/admin/redrive", data={**form, "job_id": str(job_id)}, headers=headers
    )
    assert posted.status_code == 403
    assert "reload /admin" in posted.text
    job = await process.store.get_job(job_id)
    assert job is not None
    assert job.state is JobState.DEAD


# -- in a real browser --------------------------------------------------------------------


@pytest.fixture
async def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[GatewayProcess]:
    """The whole gateway on a free loopback port, admin page on."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    async with serving(_settings(tmp_path, token_env=TOKEN_ENV)) as process:
        yield process


async def test_an_operator_opens_the_page_and_redrives_in_chromium(
    served: GatewayProcess,
) -> None:
    base = f"http://127.0.0.1:{served.port}"
    async with httpx.AsyncClient(base_url=base) as api:
        reply = await _say(api, "hello from the browser test", user_name="Ada")
        await _say(api, "/title " + EVIL)
    await _dead_job(served.store, "browser-orphan", error="no handler for test.orphan")
    async with async_playwright() as playwright:
        browser = await launch(playwright)
        try:
            stranger = await browser.new_page()
            refused = await stranger.goto(f"{base}/admin")
            assert refused is not None
            assert refused.status == 401
            await expect(stranger.get_by_text("Admin token required")).to_be_visible()

            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            dialogs: list[str] = []
            page.on("dialog", lambda dialog: dialogs.append(dialog.message))
            opened = await page.goto(f"{base}/admin?token={TOKEN}")
            assert opened is not None
            assert opened.status == 200
            assert page.url == f"{base}/admin"  # the token left the address bar
            sessions = page.locator("#sessions table")
            await expect(sessions).to_contain_text(reply["session_id"])
            await expect(sessions).to_contain_text(EVIL)  # shown as text, never run
            await expect(page.locator("#dead table")).to_contain_text("test.orphan")
            await page.screenshot(path="/tmp/admin.png", full_page=True)
            await page.get_by_role("button", name=re.compile(r"^Redrive job \d+$")).click()
            await expect(page.get_by_role("status")).to_have_text(
                "Sent 1 dead job back to pending."
            )
            assert page.url == f"{base}/admin?redriven=1"
            assert dialogs == []
        finally:
            await browser.close()
