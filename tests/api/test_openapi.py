"""`/openapi.json` stays accurate: the real JSON of every route, errors included, is
valid against the schema the document gives for that route and status, and every JSON route
of the document is exercised here — so a drift between app/api/schemas.py and what the
handlers send fails."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import jsonschema_rs

from app.main import create_app
from app.simulator import SimulatorServer
from app.simulator.webhooks import admin_webhook_item, build_notification, encode_notification
from harness.service import OPERATOR_TOKEN, ServiceServer, make_settings, signed_headers
from harness.waiting import wait_for

PROVISIONING_TOKEN = "test-provisioning-token-0123456789"

# Routes that answer no JSON at all.
NOT_JSON = {("head", "/webhooks/intercom"), ("get", "/metrics")}


class OpenApiChecker:
    """Validates real responses against the document the running app serves."""

    def __init__(self, service: ServiceServer) -> None:
        self.service = service
        response = httpx.get(f"{service.url}/openapi.json", timeout=10)
        assert response.status_code == 200
        self.doc: dict[str, Any] = response.json()
        assert self.doc["openapi"].startswith("3.1")
        self.exercised: set[tuple[str, str]] = set()
        self.statuses: set[tuple[str, str, int]] = set()

    def check(self, method: str, route: str, response: httpx.Response) -> Any:
        """`route` is the path template as the document names it."""
        operation = self.doc["paths"][route][method]
        status = str(response.status_code)
        documented = operation["responses"]
        assert status in documented, (
            f"{method.upper()} {route} answered {status}, which the document does not list "
            f"({sorted(documented)}): {response.text[:300]}"
        )
        self.exercised.add((method, route))
        self.statuses.add((method, route, response.status_code))
        content = documented[status].get("content", {})
        if response.status_code == 304:
            assert response.content == b""
            return None
        assert response.headers["content-type"].startswith("application/json")
        assert "application/json" in content, f"{method} {route} {status} has no JSON schema"
        body = response.json()
        schema = {**content["application/json"]["schema"], "components": self.doc["components"]}
        validator = jsonschema_rs.Draft202012Validator(schema)
        errors = [str(e) for e in validator.iter_errors(body)]
        assert not errors, f"{method.upper()} {route} {status}:\n" + "\n".join(errors[:5])
        return body

    def json_operations(self) -> set[tuple[str, str]]:
        return {
            (method, route)
            for route, operations in self.doc["paths"].items()
            for method in operations
            if (method, route) not in NOT_JSON
        }


def notification(sim: SimulatorServer, topic: str, admin_id: str, **kwargs: Any) -> bytes:
    admin = sim.workspace.get_admin(admin_id)
    assert admin is not None
    item = admin_webhook_item(admin)
    if topic == "admin.removed_from_workspace":
        item["team_ids"] = []
    envelope = build_notification(topic, item, app_id=sim.workspace.id_code, **kwargs)
    return encode_notification(envelope)


def test_every_json_route_answers_what_the_document_says(
    start_service: Callable[..., ServiceServer], sim: SimulatorServer
) -> None:
    # Roles on, so the optional parts of the shapes (roles, role_ids) are exercised too.
    service = start_service(
        intercom_api_version="2.16",
        provisioning_api_tokens=PROVISIONING_TOKEN,
        removal_reassign_admin_id=sorted(sim.workspace.admins)[0],
    )
    checker = OpenApiChecker(service)
    check = checker.check
    admins = sorted(sim.workspace.admins)
    team_id = sorted(sim.workspace.teams)[0]
    reader = service.client()
    operator = service.client(OPERATOR_TOKEN)
    anonymous = service.client(token=None)
    hook_url = "/webhooks/intercom"

    try:
        # Webhooks: accepted, duplicate, ignored, bad signature, not JSON, too large.
        body = notification(sim, "admin.removed_from_workspace", admins[2], notification_id="n-1")
        ack = check(
            "post", hook_url, anonymous.post(hook_url, content=body, headers=signed_headers(body))
        )
        assert ack == {"status": "accepted"}
        ack = check(
            "post", hook_url, anonymous.post(hook_url, content=body, headers=signed_headers(body))
        )
        assert ack == {"status": "duplicate"}
        other = notification(sim, "admin.logged_in", admins[3])
        other = other.replace(sim.workspace.id_code.encode(), b"zzzother")
        ack = check(
            "post", hook_url, anonymous.post(hook_url, content=other, headers=signed_headers(other))
        )
        assert ack == {"status": "ignored"}
        check(
            "post",
            hook_url,
            anonymous.post(hook_url, content=body, headers=signed_headers(body, "wrong-secret")),
        )
        junk = b"this is not json"
        check(
            "post", hook_url, anonymous.post(hook_url, content=junk, headers=signed_headers(junk))
        )
        huge = b"{" + b" " * (1024 * 1024 + 10) + b"}"
        check(
            "post", hook_url, anonymous.post(hook_url, content=huge, headers=signed_headers(huge))
        )
        wait_for(
            lambda: reader.get(f"/api/v1/users/{admins[2]}").json()["status"] == "deleted",
            timeout=20,
            what="the removal to be applied",
        )

        # Health.
        check("get", "/healthz", anonymous.get("/healthz"))
        ready = check("get", "/readyz", anonymous.get("/readyz"))
        assert ready["status"] == "ok"

        # Snapshot: plain, with removed teammates, 304, and errors.
        full = check("get", "/api/v1/snapshot", reader.get("/api/v1/snapshot"))
        assert full["roles"]
        with_removed = check(
            "get",
            "/api/v1/snapshot",
            reader.get("/api/v1/snapshot", params={"include_removed": "true"}),
        )
        assert any(u["status"] == "deleted" for u in with_removed["users"])
        etag = reader.get("/api/v1/snapshot").headers["etag"]
        check(
            "get",
            "/api/v1/snapshot",
            reader.get("/api/v1/snapshot", headers={"If-None-Match": etag}),
        )
        check("get", "/api/v1/snapshot", anonymous.get("/api/v1/snapshot"))
        check(
            "get",
            "/api/v1/snapshot",
            reader.get("/api/v1/snapshot", params={"include_removed": "maybe"}),
        )

        # Pages, single resources, their errors.
        for route in ("/api/v1/users", "/api/v1/teams", "/api/v1/roles", "/api/v1/grants"):
            page = check("get", route, reader.get(route, params={"limit": 2}))
            assert page["items"]
            check(
                "get", route, reader.get(route, params={"limit": 2, "cursor": page["next_cursor"]})
            )
            check("get", route, reader.get(route, params={"limit": 0}))
            check("get", route, reader.get(route, params={"cursor": "garbage"}))
            check("get", route, anonymous.get(route))
        check(
            "get", "/api/v1/users", reader.get("/api/v1/users", params={"include_removed": "true"})
        )
        members = "/api/v1/teams/{team_id}/members"
        check("get", members, reader.get(f"/api/v1/teams/{team_id}/members", params={"limit": 1}))
        check("get", members, reader.get("/api/v1/teams/nope/members"))
        check("get", members, reader.get(f"/api/v1/teams/{team_id}/members", params={"limit": "x"}))
        check("get", "/api/v1/users/{user_id}", reader.get(f"/api/v1/users/{admins[0]}"))
        deleted = check("get", "/api/v1/users/{user_id}", reader.get(f"/api/v1/users/{admins[2]}"))
        assert deleted["status"] == "deleted"
        check("get", "/api/v1/users/{user_id}", reader.get("/api/v1/users/nope"))
        check("get", "/api/v1/teams/{team_id}", reader.get(f"/api/v1/teams/{team_id}"))
        check("get", "/api/v1/teams/{team_id}", reader.get("/api/v1/teams/nope"))
        check(
            "get", "/api/v1/roles/{role_id}", reader.get(f"/api/v1/roles/{full['roles'][0]['id']}")
        )
        check("get", "/api/v1/roles/{role_id}", reader.get("/api/v1/roles/nope"))
        holders = "/api/v1/roles/{role_id}/members"
        role_id = full["roles"][0]["id"]
        check("get", holders, reader.get(f"/api/v1/roles/{role_id}/members", params={"limit": 1}))
        check("get", holders, reader.get("/api/v1/roles/nope/members"))
        workspace_id = full["workspaces"][0]["id"]
        check("get", "/api/v1/workspaces", reader.get("/api/v1/workspaces"))
        check("get", "/api/v1/workspaces", reader.get("/api/v1/workspaces", params={"limit": 0}))
        one = "/api/v1/workspaces/{workspace_id}"
        check("get", one, reader.get(f"/api/v1/workspaces/{workspace_id}"))
        check("get", one, reader.get("/api/v1/workspaces/nope"))
        its_members = "/api/v1/workspaces/{workspace_id}/members"
        page = check(
            "get",
            its_members,
            reader.get(f"/api/v1/workspaces/{workspace_id}/members", params={"limit": 2}),
        )
        assert page["next_cursor"]
        check("get", its_members, reader.get("/api/v1/workspaces/nope/members"))
        check(
            "get",
            its_members,
            reader.get(f"/api/v1/workspaces/{workspace_id}/members", params={"cursor": "x"}),
        )

        # Change feed.
        feed = check("get", "/api/v1/changes", reader.get("/api/v1/changes", params={"since": 0}))
        assert feed["changes"]
        check("get", "/api/v1/changes", reader.get("/api/v1/changes", params={"since": -1}))
        check("get", "/api/v1/changes", reader.get("/api/v1/changes", params={"since": 10**9}))

        # Usage evidence, once the activity log has been read.
        wait_for(
            lambda: anonymous.get("/readyz").json()["activity_log_read_to"],
            timeout=20,
            what="the activity log to be read",
        )
        events = "/api/v1/access-events"
        check("get", events, reader.get(events, params={"limit": 2}))
        check("get", events, reader.get(events, params={"type": "seat_change", "since": "0"}))
        check("get", events, reader.get(events, params={"type": "app_name_change"}))
        check("get", events, reader.get(events, params={"cursor": "garbage"}))
        check("get", events, anonymous.get(events))
        dormant = "/api/v1/reports/dormant"
        report = check("get", dormant, reader.get(dormant, params={"days": 30}))
        assert report["items"]
        check("get", dormant, reader.get(dormant, params={"days": 0}))

        # Operators: a run that succeeds, one that fails with an error, their listings.
        sim.add_fault(path="/admins", status=401, error_code="unauthorized")
        failing = check("post", "/resync", operator.post("/resync"))
        failed = wait_for(
            lambda: (
                (r := operator.get(f"/sync-runs/{failing['id']}").json())["status"]
                not in ("queued", "running")
                and r
            ),
            timeout=30,
            what="the failing run to finish",
        )
        assert failed["status"] == "failed"
        run = check("get", "/sync-runs/{run_id}", operator.get(f"/sync-runs/{failing['id']}"))
        assert run["error"]["code"] == "intercom_auth_failed"
        check("get", "/sync-runs/{run_id}", operator.get("/sync-runs/999999"))
        check("get", "/sync-runs/{run_id}", operator.get("/sync-runs/abc"))
        runs = check("get", "/sync-runs", operator.get("/sync-runs"))
        assert len(runs["items"]) >= 2
        check("get", "/sync-runs", operator.get("/sync-runs", params={"limit": "abc"}))
        check("get", "/sync-runs", reader.get("/sync-runs"))
        check("post", "/resync", operator.post("/resync", params={"force": "perhaps"}))
        check("post", "/resync", reader.post("/resync"))
        events = check("get", "/webhook-events", operator.get("/webhook-events"))
        assert {e["outcome"] for e in events["items"]} >= {"applied", "ignored", "rejected"}
        check("get", "/webhook-events", operator.get("/webhook-events", params={"status": "bogus"}))
        check("get", "/webhook-events", anonymous.get("/webhook-events"))

        # Provisioning: done, dry run, refusals before and after the record.
        with service.client(PROVISIONING_TOKEN) as writer:
            user = "/api/v1/users/{user_id}"
            removed = check("delete", user, writer.delete(f"/api/v1/users/{admins[5]}"))
            assert removed["result"] == "removed"
            dry = writer.delete(f"/api/v1/users/{admins[6]}", params={"dry_run": "true"})
            assert check("delete", user, dry)["result"] == "would_remove"
            check("delete", user, writer.delete("/api/v1/users/abc"))
            check("delete", user, writer.delete("/api/v1/users/4242"))
            check("delete", user, writer.delete(f"/api/v1/users/{admins[0]}"))
            check("delete", user, reader.delete(f"/api/v1/users/{admins[6]}"))
            big = b"{" + b" " * 20_000 + b"}"
            check(
                "delete", user, writer.request("DELETE", f"/api/v1/users/{admins[6]}", content=big)
            )
            key = {"Idempotency-Key": "openapi-1"}
            check("delete", user, writer.delete(f"/api/v1/users/{admins[6]}", headers=key))
            check("delete", user, writer.delete(f"/api/v1/users/{admins[7]}", headers=key))
            sim.add_fault(path="/admins/remove", status=429, reset_in_seconds=120)
            check("delete", user, writer.delete(f"/api/v1/users/{admins[8]}"))
            member = "/api/v1/teams/{team_id}/members/{user_id}"
            outsider = next(
                a for a in admins[9:] if a not in sim.workspace.teams[team_id].admin_ids
            )
            path = f"/api/v1/teams/{team_id}/members/{outsider}"
            assert check("put", member, writer.put(path))["result"] == "added"
            assert check("delete", member, writer.delete(path))["result"] == "removed"
            check("put", member, writer.put(f"/api/v1/teams/4242/members/{outsider}"))
            check("delete", member, writer.delete(f"/api/v1/teams/x/members/{outsider}"))
            httpx.put(f"{sim.url}/_sim/provisioning", json={"team_writes": "forbidden"})
            check("put", member, writer.put(path))
            check("delete", member, anonymous.delete(path))
        audit = check("get", "/provisioning-requests", operator.get("/provisioning-requests"))
        assert audit["items"]
        check("get", "/provisioning-requests", operator.get("/provisioning-requests?limit=0"))
        check("get", "/provisioning-requests", reader.get("/provisioning-requests"))
    finally:
        for client in (reader, operator, anonymous):
            client.close()

    assert checker.exercised == checker.json_operations(), (
        "JSON routes in the document that this test does not exercise: "
        f"{sorted(checker.json_operations() - checker.exercised)}"
    )


def test_before_the_first_baseline_the_503_answers_match_the_document(
    start_service: Callable[..., ServiceServer],
) -> None:
    service = start_service(sync_on_startup=False, wait_ready=False)
    checker = OpenApiChecker(service)
    with service.client() as reader:
        ready = checker.check("get", "/readyz", reader.get("/readyz"))
        assert "never_synced" in ready["problems"]
        for route in ("/api/v1/snapshot", "/api/v1/users", "/api/v1/teams", "/api/v1/grants"):
            body = checker.check("get", route, reader.get(route))
            assert body["error"]["code"] == "not_synced"
        body = checker.check("get", "/api/v1/changes", reader.get("/api/v1/changes?since=0"))
        assert body["error"]["code"] == "not_synced"
        checker.check("get", "/api/v1/users/{user_id}", reader.get("/api/v1/users/1"))


def test_the_document_promises_400_with_the_error_shape_not_fastapis_422(
    database_url: str,
) -> None:
    # The document needs no running service: the app builds it from its routes.
    doc = create_app(make_settings(database_url, None)).openapi()
    assert not {"HTTPValidationError", "ValidationError"} & set(doc["components"]["schemas"])
    for route, operations in doc["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "422" not in responses, (method, route)
            if operation.get("parameters"):
                schema = responses["400"]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, route)
