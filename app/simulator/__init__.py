"""A bundled Intercom simulator: a real HTTP server speaking Intercom's REST and webhook shapes.

Typical use::

    with SimulatorServer(generate_workspace(40, 8)) as sim:
        sim.add_fault(path="/teams", status=429, reset_in_seconds=2)
        httpx.get(sim.url + "/teams", headers=sim.auth_headers)
"""

from app.simulator.faults import Fault
from app.simulator.records import Role, SimAdmin, SimTeam
from app.simulator.runner import SimulatorServer, UvicornThread
from app.simulator.server import create_simulator_app
from app.simulator.state import RecordedRequest, SimWorkspace
from app.simulator.webhooks import (
    activity_log_item,
    admin_webhook_item,
    build_notification,
    encode_notification,
    send_webhook,
)
from app.simulator.workspace import generate_workspace

__all__ = [
    "Fault",
    "RecordedRequest",
    "Role",
    "SimAdmin",
    "SimTeam",
    "SimWorkspace",
    "SimulatorServer",
    "UvicornThread",
    "activity_log_item",
    "admin_webhook_item",
    "build_notification",
    "create_simulator_app",
    "encode_notification",
    "generate_workspace",
    "send_webhook",
]
