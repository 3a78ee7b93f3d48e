"""A baseline pauses the garbage collector while it fetches and while it applies (the parsed
workspace and the diff are large and acyclic), and always hands it back: after success, after a
failure, and, for a fetch, after a capped time even if the fetch is still running."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any, cast

import pytest

from app.intercom.client import IntercomClient
from app.intercom.models import IntercomAdmin, IntercomTeam, IntercomWorkspace
from app.sync import baseline
from app.sync.baseline import fetch_workspace


@pytest.fixture(autouse=True)
def collector_enabled() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


class FakeClient:
    """Answers like IntercomClient, recording whether the collector ran during each call."""

    def __init__(self, *, admins_delay: float = 0.0, fail_on_teams: bool = False) -> None:
        self.admins_delay = admins_delay
        self.fail_on_teams = fail_on_teams
        self.collector_enabled: list[bool] = []

    async def get_workspace(self) -> IntercomWorkspace:
        self.collector_enabled.append(gc.isenabled())
        return IntercomWorkspace(id_code="ws1", name="Acme", region="US")

    async def list_admins(self) -> list[IntercomAdmin]:
        await asyncio.sleep(self.admins_delay)
        self.collector_enabled.append(gc.isenabled())
        return [IntercomAdmin(id="1", name="A", email="a@acme.example")]

    async def list_teams(self) -> list[IntercomTeam]:
        self.collector_enabled.append(gc.isenabled())
        if self.fail_on_teams:
            raise RuntimeError("teams failed")
        return [IntercomTeam(id="7", name="Support", admin_ids=["1"])]


def fetch(client: FakeClient) -> Any:
    return asyncio.run(fetch_workspace(cast(IntercomClient, client), roles_supported=False))


def test_the_collector_is_paused_during_a_fetch_and_back_after_it() -> None:
    client = FakeClient()
    fetched = fetch(client)
    assert [admin.id for admin in fetched.admins] == ["1"]
    assert client.collector_enabled == [False, False, False]
    assert gc.isenabled()


def test_a_failed_fetch_gives_the_collector_back() -> None:
    client = FakeClient(fail_on_teams=True)
    with pytest.raises(RuntimeError):
        fetch(client)
    assert client.collector_enabled == [False, False, False]
    assert gc.isenabled()


def test_a_long_fetch_gets_the_collector_back_after_the_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(baseline, "FETCH_GC_PAUSE_SECONDS", 0.01)
    client = FakeClient(admins_delay=0.2)
    fetch(client)
    assert client.collector_enabled == [False, True, True]
    assert gc.isenabled()


def test_a_pause_already_in_place_is_left_to_its_owner() -> None:
    gc.disable()
    client = FakeClient()
    fetch(client)
    assert client.collector_enabled == [False, False, False]
    assert not gc.isenabled()
