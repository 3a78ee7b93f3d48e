"""The simulator's ASGI app: Intercom's REST shapes plus a ``/_sim/`` control plane.

API routes (``/me``, ``/admins``, ``/teams`` …) need ``Authorization: Bearer <token>``, carry the
``X-RateLimit-*`` headers and are recorded in the workspace's request log; queued faults are applied
before normal handling (all of that is ``gateway``). ``/_sim/*`` routes need no auth and are never
recorded or faulted (``control_routes``). This module is the route table: the order of its routes
is the order Starlette tries them in.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from app.simulator.activity_routes import activity_log_control_routes, activity_log_routes
from app.simulator.admin_routes import AdminAndTeamReads
from app.simulator.control_routes import ControlPlane
from app.simulator.gateway import ApiGateway
from app.simulator.provisioning import ProvisioningControl, ProvisioningEndpoints
from app.simulator.responses import Answer, not_found
from app.simulator.state import SimWorkspace


def _unknown_route(request: Request, request_id: str) -> Answer:
    return not_found(request_id)


def create_simulator_app(
    workspace: SimWorkspace, *, access_token: str, client_secret: str
) -> Starlette:
    """An ASGI app that serves ``workspace`` the way Intercom's REST API would."""
    gateway = ApiGateway(workspace, access_token)
    api = gateway.api
    reads = AdminAndTeamReads(workspace)
    provisioning = ProvisioningEndpoints(
        workspace, ProvisioningControl(), client_secret=client_secret
    )
    any_method = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
    routes = [
        *ControlPlane(workspace, client_secret).routes(),
        Route("/_sim/provisioning", provisioning.control_plane, methods=["GET", "PUT"]),
        # The write endpoints (app/simulator/provisioning.py), before the read routes.
        Route("/admins/remove", api(provisioning.remove_admin), methods=["DELETE"]),
        Route("/teams/{team_id}", api(provisioning.put_team), methods=["PUT"]),
        *activity_log_control_routes(workspace),
        Route("/me", api(reads.me), methods=["GET"]),
        Route("/admins", api(reads.list_admins), methods=["GET"]),
        # Before /admins/{admin_id}, which would otherwise take them for a teammate's id.
        *activity_log_routes(gateway),
        Route("/admins/{admin_id}", api(reads.get_admin), methods=["GET"]),
        Route("/teams", api(reads.list_teams), methods=["GET"]),
        Route("/teams/{team_id}", api(reads.get_team), methods=["GET"]),
        # Anything else still behaves like Intercom (auth, faults, log) and answers 404.
        Route("/{path:path}", api(_unknown_route), methods=any_method),
    ]
    app = Starlette(routes=routes)
    app.state.provisioning = provisioning.control
    return app
