"""The provider conformance suite against the real OpenViking server.

Commits with memory extraction take ≈10 s each on OpenViking, and the suite
commits a few dozen times, so it runs against a second server of the same
install whose extraction is disabled (a commit then archives in about a
second). Extraction and recall of extracted memories are covered by
`test_openviking.py`; here recall can only show isolation (it finds nothing of
the transcripts), so the isolation check does not require own hits.

The probe reads what OpenViking holds from its own files: each completed
commit is an archive under the session's `history/`, each holding that
epoch's messages; the live messages are the session's `messages.jsonl`.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import httpx
import pytest

from integration.openviking.conftest import KEY_ENV, provider_settings
from integration.openviking.fake_model import DIMENSION, ModelServer
from integration.openviking.server import ROOT_KEY, OpenVikingServer, ensure_installed
from sessiongate.memory.openviking import OpenVikingProvider
from sessiongate.memory.provider import ProviderSession
from sessiongate.testing.conformance import (
    ProviderConformance,
    ProviderFactory,
    ProviderUnderTest,
    seq_of,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def archiving_openviking(
    model_server: ModelServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OpenVikingServer]:
    """An OpenViking server that archives commits without extracting memories."""
    root = tmp_path_factory.mktemp("openviking-archiving")
    server: OpenVikingServer | None = None
    try:
        server = OpenVikingServer(
            ensure_installed(), root, model_url=model_server.base_url, dimension=DIMENSION
        )
        conf = json.loads(server.config.read_text())
        conf["memory"]["extraction_enabled"] = False
        server.config.write_text(json.dumps(conf, indent=2))
        server.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        message = f"the OpenViking server could not be installed or started: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true: OpenViking tests must run)")
        pytest.skip(message)
    try:
        yield server
    finally:
        server.stop()


class OpenVikingProbe:
    """Reads a session's archives and live messages from the server's file system."""

    def __init__(self, server: OpenVikingServer, provider: OpenVikingProvider) -> None:
        self._server = server
        self._provider = provider

    async def _get(self, client: httpx.AsyncClient, path: str, **params: Any) -> Any:
        """The result of a GET, or None when the server answers NOT_FOUND."""
        response = await client.get(path, params=params)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()["result"]

    async def _epochs(self, session: ProviderSession) -> tuple[list[list[int]], list[int]]:
        """The seqs of each completed archive, oldest first, and of the live messages."""
        identity = self._provider.identity(session)
        headers = {
            "X-API-Key": ROOT_KEY,
            "X-OpenViking-Account": identity.account,
            "X-OpenViking-User": identity.user,
        }
        async with httpx.AsyncClient(
            base_url=self._server.url, headers=headers, timeout=30
        ) as client:
            info = await self._get(client, f"/api/v1/sessions/{session.session_id}")
            if info is None:
                return [], []
            uri = info["uri"]
            archives = await self._get(client, "/api/v1/fs/ls", uri=f"{uri}/history", simple=True)
            epochs: list[list[int]] = []
            for archive in sorted(archives or []):
                files = await self._get(
                    client, "/api/v1/fs/ls", uri=archive, simple=True, show_all_hidden=True
                )
                if any(str(name).endswith("/.failed.json") for name in files or []):
                    continue  # a failed extraction lost this archive's messages
                epochs.append(await self._seqs(client, f"{archive}/messages.jsonl"))
            return epochs, await self._seqs(client, f"{uri}/messages.jsonl")

    async def _seqs(self, client: httpx.AsyncClient, uri: str) -> list[int]:
        text = await self._get(client, "/api/v1/content/read", uri=uri, raw=True) or ""
        seqs: list[int] = []
        for line in str(text).splitlines():
            if not line.strip():
                continue
            message = json.loads(line)
            parts = message.get("parts") or [{"type": "text", "text": message.get("content")}]
            said = " ".join(str(p.get("text") or "") for p in parts if p.get("type") == "text")
            seq = seq_of(said)
            assert seq is not None, f"a message of {uri} carries no seq: {line}"
            seqs.append(seq)
        return seqs

    async def held_seqs(self, session: ProviderSession) -> Sequence[int]:
        epochs, live = await self._epochs(session)
        return [seq for epoch in epochs for seq in epoch] + live

    async def committed_ranges(self, session: ProviderSession) -> Sequence[tuple[int, int]]:
        epochs, _ = await self._epochs(session)
        return [(min(epoch), max(epoch)) for epoch in epochs if epoch]


class TestOpenVikingConformance(ProviderConformance):
    @pytest.fixture
    async def make_provider(
        self, archiving_openviking: OpenVikingServer
    ) -> AsyncIterator[ProviderFactory]:
        opened: list[OpenVikingProvider] = []

        async def make() -> ProviderUnderTest:
            account = f"conf-{uuid.uuid4().hex[:12]}"
            settings = provider_settings(
                archiving_openviking, account, max_batch=3, task_poll_interval=0.1
            )
            provider = OpenVikingProvider(settings, environ={KEY_ENV: ROOT_KEY})
            opened.append(provider)
            probe = OpenVikingProbe(archiving_openviking, provider)
            return ProviderUnderTest(provider, probe, recalls_transcripts=False)

        yield make
        for provider in opened:
            await provider.aclose()
