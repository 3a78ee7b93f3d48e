"""The service starts, syncs the simulator's workspace and serves it."""

from app.simulator import SimulatorServer
from harness.service import ServiceServer, served_truth, simulator_truth, snapshot


def test_startup_baseline_serves_the_workspace(
    service: ServiceServer, sim: SimulatorServer
) -> None:
    with service.client() as client:
        body = snapshot(client)
    assert served_truth(body) == simulator_truth(sim)
    assert body["version"] == 1
