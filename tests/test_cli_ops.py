"""`sessiongate doctor` and `sessiongate providers status|backfill` as an operator runs them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from typer.testing import CliRunner

from sessiongate.cli import app
from sessiongate.config import load_settings
from sessiongate.gateway.message import Inbound
from sessiongate.gateway.process import GatewayProcess
from sessiongate.models import ChatType, Source

runner = CliRunner()
ANN = Source(platform="api", chat_id="ann", chat_type=ChatType.DM, user_id="ann")


def config(tmp_path: Path, providers: str = "{local: {}}", hooks: str = "hooks") -> Path:
    (tmp_path / hooks).mkdir(exist_ok=True)
    path = tmp_path / "config.yaml"
    path.write_text(
        f"store: sqlite:///{tmp_path}/sg.db\nhooks_dir: {tmp_path / hooks}\n"
        f"memory: {{providers: {providers}}}\nplatforms: {{web: {{enabled: false}}}}\n"
    )
    return path


async def converse(path: Path, *texts: str, drain: bool = True) -> None:
    process = await GatewayProcess.open(load_settings(path, environ={}))
    try:
        for text in texts:
            await process.gateway.handle(Inbound(ANN, text))
        if drain:
            await process.lifecycle.drain()
    finally:
        await process.close()


def test_doctor_passes_on_a_healthy_store(tmp_path: Path) -> None:
    path = config(tmp_path)
    asyncio.run(converse(path, "hello"))
    result = runner.invoke(app, ["doctor", "--config", str(path)])
    assert result.exit_code == 0, result.output
    for name in ("store", "provider local", "hooks", "timers", "dead letters", "disk"):
        assert f"ok   {name}:" in result.output


def test_doctor_names_what_is_wrong(tmp_path: Path) -> None:
    path = config(tmp_path)
    broken = tmp_path / "hooks" / "broken"
    broken.mkdir(parents=True)
    (broken / "HOOK.yaml").write_text("name: broken\nevents: [session:start\n")
    result = runner.invoke(app, ["doctor", "--config", str(path), "--json"])
    assert result.exit_code == 1
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    # A store never migrated, and a hook whose manifest is not YAML.
    assert checks["store"]["ok"] is False
    assert "sessiongate migrate" in checks["store"]["detail"]
    assert checks["hooks"]["ok"] is False
    assert "broken" in checks["hooks"]["detail"]


def test_providers_status_shows_the_delivery_lag(tmp_path: Path) -> None:
    path = config(tmp_path)
    asyncio.run(converse(path, "one", "/new", "two"))
    result = runner.invoke(app, ["providers", "status", "--config", str(path), "--json"])
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)
    assert row["provider"] == "local"
    # The ended session is committed; the live one's two turns wait for a checkpoint or end.
    assert row["lag_turns"] == 2
    assert row["sessions_behind"] == 1
    assert row["dead_jobs"] == 0
    table = runner.invoke(app, ["providers", "status", "--config", str(path)])
    assert "memory providers" in table.output
    assert "local" in table.output


def test_backfill_replays_ended_sessions_into_a_new_provider_once(tmp_path: Path) -> None:
    path = config(tmp_path)
    asyncio.run(converse(path, "the boat is green", "/new"))
    grown = config(tmp_path, providers="{local: {}, second: {kind: local}}")
    first = runner.invoke(app, ["providers", "backfill", "second", "--config", str(grown)])
    again = runner.invoke(app, ["providers", "backfill", "second", "--config", str(grown)])
    assert first.exit_code == 0, first.output
    assert "enqueued commits of 1 ended sessions" in first.output
    assert "enqueued commits of 0 ended sessions" in again.output

    async def check() -> None:
        process = await GatewayProcess.open(load_settings(grown, environ={}))
        try:
            await process.lifecycle.drain()
            [ended] = [s for s in await process.store.list_sessions() if s.end_reason]
            cursors = {c.provider: c for c in await process.store.cursors(ended.id)}
            assert cursors["second"].committed_seq == ended.turn_count == 2
        finally:
            await process.close()

    asyncio.run(check())
    unknown = runner.invoke(app, ["providers", "backfill", "nope", "--config", str(grown)])
    assert unknown.exit_code == 1
    assert "not configured" in unknown.output
