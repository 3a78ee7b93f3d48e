"""Two `intercom-sync serve` processes on one store racing to change one team (issue 19.2):
each addition is a read-modify-write of Intercom's whole member list, so without the per-team
lock across replicas one replica's PUT would drop the member the other just added."""

from __future__ import annotations

import threading

import httpx
import pytest

from app.simulator import SimulatorServer
from harness.service import READ_TOKEN, ReplicaFactory, snapshot
from harness.waiting import wait_for
from tests.provisioning.test_provisioning import PROVISIONING_TOKEN

# Two service processes on one store: left out of `make test-fast`.
pytestmark = pytest.mark.slow


def test_two_replicas_adding_different_members_to_one_team_both_end_up_in_it(
    sim: SimulatorServer, start_replicas: ReplicaFactory
) -> None:
    with sim.workspace.lock:
        team_id, team = next(iter(sim.workspace.teams.items()))
        before = set(team.admin_ids)
        humans = [
            a.id
            for a in sim.workspace.admins.values()
            if a.id not in before and not a.email.startswith("operator+")
        ]
    me = next(iter(sim.workspace.admins))
    newcomers = [h for h in humans if h != me][:6]
    assert len(newcomers) == 6
    replicas = start_replicas(
        2, provisioning_api_tokens=PROVISIONING_TOKEN, removal_reassign_admin_id=me
    )
    # Every read of the team answers late: unserialized, the replicas would all read the same
    # old member list and each PUT would drop the others' additions.
    sim.add_fault(f"/teams/{team_id}", None, delay_seconds=0.3, times=len(newcomers))
    answers: dict[str, httpx.Response] = {}
    start = threading.Barrier(len(newcomers))

    def add(index: int, user_id: str) -> None:
        replica = replicas[index % 2]
        with replica.client(PROVISIONING_TOKEN) as client:
            start.wait()
            answers[user_id] = client.put(f"/api/v1/teams/{team_id}/members/{user_id}")

    threads = [threading.Thread(target=add, args=(i, uid)) for i, uid in enumerate(newcomers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    for user_id, response in answers.items():
        assert response.status_code == 200, (user_id, response.text)
        assert response.json()["result"] == "added"
    assert set(sim.workspace.teams[team_id].admin_ids) == before | set(newcomers)
    puts = [r for r in sim.requests(f"/teams/{team_id}") if r.method == "PUT"]
    assert len(puts) == len(newcomers)
    wanted = {f"team:{team_id}:member:user:{uid}" for uid in before | set(newcomers)}
    bodies = []
    for replica in replicas:
        with replica.client(READ_TOKEN) as reader:

            def complete(reader: httpx.Client = reader) -> dict[str, object] | None:
                body = snapshot(reader)
                return body if wanted <= {g["id"] for g in body["grants"]} else None

            bodies.append(wait_for(complete, what="every addition in the snapshot"))
    assert bodies[0]["version"] == bodies[1]["version"]
    teams = bodies[0]["teams"]
    assert isinstance(teams, list)
    team_view = next(t for t in teams if t["id"] == team_id)
    assert set(team_view["member_ids"]) == before | set(newcomers)
