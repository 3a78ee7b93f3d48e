"""`POST /webhooks/intercom` and `HEAD /webhooks/intercom` over HTTP against the real service:
signature over the raw bytes (R1), size limit, envelope validation with the raw body kept,
`ping`, unknown topics and other workspaces acknowledged, never a 410 (R4), and the durable,
deduplicated inbox that answers while Intercom hangs (R2, R3)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import orjson
from sqlalchemy import select

from app.simulator import SimAdmin, SimulatorServer, admin_webhook_item, build_notification
from app.simulator.webhooks import encode_notification
from app.store.engine import create_database
from app.store.models import WebhookEvent
from harness.service import OPERATOR_TOKEN, ServiceServer, signed_headers, snapshot
from harness.waiting import wait_for

WEBHOOK_PATH = "/webhooks/intercom"
ONE_MIB = 1024 * 1024


# ----- helpers -----------------------------------------------------------------------------------


def post(
    service: ServiceServer,
    body: bytes,
    headers: dict[str, str] | None = None,
    *,
    timeout: float = 10,
) -> httpx.Response:
    """POST `body` as-is; signed with the simulator's secret unless `headers` are given."""
    return httpx.post(
        service.url + WEBHOOK_PATH,
        content=body,
        headers=signed_headers(body) if headers is None else headers,
        timeout=timeout,
    )


def added_envelope(sim: SimulatorServer, admin: SimAdmin, **kwargs: Any) -> dict[str, Any]:
    return build_notification(
        "admin.added_to_workspace",
        admin_webhook_item(admin),
        app_id=kwargs.pop("app_id", sim.workspace.id_code),
        **kwargs,
    )


def new_teammate(sim: SimulatorServer, admin_id: str, *, teams: int = 1) -> SimAdmin:
    """A teammate that exists in the simulator but not (yet) in the store."""
    team_ids = list(sim.workspace.teams)[:teams]
    return sim.workspace.upsert_admin(
        SimAdmin(
            id=admin_id,
            name=f"New {admin_id}",
            email=f"new{admin_id}@acme.example",
            job_title="Support",
            team_ids=team_ids,
        )
    )


def webhook_events(service: ServiceServer, **params: Any) -> list[dict[str, Any]]:
    with service.client(OPERATOR_TOKEN) as client:
        response = client.get("/webhook-events", params={"limit": 1000, **params})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def stored_rows(database_url: str) -> list[WebhookEvent]:
    """The inbox as the store holds it, read directly rather than through the API."""
    db = create_database(database_url)
    try:
        with db.reading() as session:
            return list(session.execute(select(WebhookEvent).order_by(WebhookEvent.id)).scalars())
    finally:
        db.dispose()


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body


def user_ids(service: ServiceServer) -> set[str]:
    with service.client() as client:
        return {user["id"] for user in snapshot(client)["users"]}


class _Capture(logging.Handler):
    """Every record logged while attached (the service runs in this process)."""

    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


# ----- signature ---------------------------------------------------------------------------------


class TestSignature:
    def test_a_validly_signed_notification_is_accepted(
        self, service: ServiceServer, sim: SimulatorServer
    ) -> None:
        admin = new_teammate(sim, "7100001")
        body = encode_notification(added_envelope(sim, admin))

        response = post(service, body)

        assert response.status_code == 200, response.text
        assert response.json() == {"status": "accepted"}
        wait_for(lambda: "7100001" in user_ids(service), what="the teammate to be applied")

    def test_a_chunked_delivery_gets_the_same_answers_as_one_with_a_length(
        self, service: ServiceServer, sim: SimulatorServer
    ) -> None:
        # Deliveries with a Content-Length take the fast path; chunked ones go through the
        # FastAPI route. Both must verify, store and answer alike.
        admin = new_teammate(sim, "7100002")
        body = encode_notification(added_envelope(sim, admin))

        def chunked(data: bytes) -> Iterator[bytes]:
            yield data[:10]
            yield data[10:]

        first = httpx.post(
            service.url + WEBHOOK_PATH, content=chunked(body), headers=signed_headers(body)
        )
        again = post(service, body)
        unsigned = httpx.post(
            service.url + WEBHOOK_PATH,
            content=chunked(body),
            headers={"Content-Type": "application/json"},
        )

        assert first.request.headers.get("transfer-encoding") == "chunked"
        assert first.status_code == 200, first.text
        assert first.json() == {"status": "accepted"}
        assert again.json() == {"status": "duplicate"}
        assert_error(unsigned, 401, "invalid_signature")
        wait_for(lambda: "7100002" in user_ids(service), what="the teammate to be applied")

    def test_a_reserialised_body_with_the_original_signature_is_refused_and_not_stored(
        self, service: ServiceServer, sim: SimulatorServer, database_url: str
    ) -> None:
        # Same JSON, other whitespace: a receiver that verifies re-serialised JSON would take it.
        admin = new_teammate(sim, "7100002")
        original = encode_notification(added_envelope(sim, admin))
        reserialised = json.dumps(json.loads(original), indent=2).encode()
        assert json.loads(reserialised) == json.loads(original)
        assert reserialised != original

        response = post(service, reserialised, signed_headers(original))

        assert_error(response, 401, "invalid_signature")
        assert webhook_events(service) == []
        assert stored_rows(database_url) == []
        # The original bytes with the same signature are fine.
        assert post(service, original, signed_headers(original)).json() == {"status": "accepted"}

    def test_a_missing_or_wrong_signature_is_refused_and_nothing_is_stored(
        self, service: ServiceServer, sim: SimulatorServer, database_url: str
    ) -> None:
        admin = new_teammate(sim, "7100003")
        body = encode_notification(added_envelope(sim, admin))
        good = signed_headers(body)["X-Hub-Signature"]
        variants = {
            "missing header": {"Content-Type": "application/json"},
            "empty": {**signed_headers(body), "X-Hub-Signature": ""},
            "prefix only": {**signed_headers(body), "X-Hub-Signature": "sha1="},
            "wrong prefix": {**signed_headers(body), "X-Hub-Signature": "sha256=" + good[5:]},
            "no prefix": {**signed_headers(body), "X-Hub-Signature": good[5:]},
            "wrong secret": signed_headers(body, "not-the-secret"),
            "other body": {
                **signed_headers(body),
                "X-Hub-Signature": signed_headers(b"{}")["X-Hub-Signature"],
            },
        }

        for name, headers in variants.items():
            response = post(service, body, headers)
            assert response.status_code == 401, (name, response.text)
            assert_error(response, 401, "invalid_signature")

        assert webhook_events(service) == []
        assert stored_rows(database_url) == []
        assert "7100003" not in user_ids(service)

    def test_a_malformed_signature_header_is_a_401_never_a_500_and_logs_no_error(
        self, service: ServiceServer, sim: SimulatorServer, database_url: str
    ) -> None:
        """Raw header bytes as an attacker would send them: non-ASCII (which the server
        decodes as latin-1 text), non-hex, the wrong length, and the header twice."""
        admin = new_teammate(sim, "7100013")
        body = encode_notification(added_envelope(sim, admin))
        good = signed_headers(body)["X-Hub-Signature"].encode()
        variants: dict[str, list[tuple[bytes, bytes]]] = {
            "non-ascii byte": [(b"X-Hub-Signature", b"sha1=\xe9")],
            "non-ascii in a digest": [(b"X-Hub-Signature", good[:-1] + b"\xe9")],
            "utf-8 text": [(b"X-Hub-Signature", "sha1=é".encode() + good[7:])],
            "non-ascii digits": [(b"X-Hub-Signature", b"sha1=" + "٣".encode() * 40)],
            "non-hex": [(b"X-Hub-Signature", b"sha1=" + b"z" * 40)],
            "too short": [(b"X-Hub-Signature", good[:-2])],
            "too long": [(b"X-Hub-Signature", good + b"00")],
            "sha1 with spaces inside": [(b"X-Hub-Signature", good[:20] + b" " + good[20:])],
            "twice, both valid": [(b"X-Hub-Signature", good), (b"X-Hub-Signature", good)],
            "twice, one valid": [
                (b"X-Hub-Signature", b"sha1=" + b"0" * 40),
                (b"X-Hub-Signature", good),
            ],
        }
        records: list[logging.LogRecord] = []
        capture = _Capture(records)
        logging.getLogger().addHandler(capture)
        try:
            for name, signature in variants.items():
                for chunked in (False, True):
                    content: Any = iter([body]) if chunked else body
                    response = httpx.post(
                        service.url + WEBHOOK_PATH,
                        content=content,
                        headers=[(b"Content-Type", b"application/json"), *signature],
                        timeout=10,
                    )
                    assert response.status_code == 401, (name, chunked, response.text)
                    assert_error(response, 401, "invalid_signature")
        finally:
            logging.getLogger().removeHandler(capture)

        assert webhook_events(service) == []
        assert stored_rows(database_url) == []
        assert "7100013" not in user_ids(service)
        loud = [r for r in records if r.levelno >= logging.ERROR]
        assert loud == [], [r.getMessage() for r in loud]
        assert any("refused a webhook delivery" in r.getMessage() for r in records)

    def test_without_a_client_secret_the_endpoint_answers_503_and_says_why(
        self, start_service: Callable[..., ServiceServer], sim: SimulatorServer
    ) -> None:
        service = start_service(intercom_client_secret="")
        body = encode_notification(added_envelope(sim, new_teammate(sim, "7100004")))

        response = post(service, body)

        assert_error(response, 503, "webhook_secret_not_configured")
        assert "INTERCOM_CLIENT_SECRET" in response.json()["error"]["message"]
        # Intercom's URL check still succeeds, and nothing was stored.
        assert httpx.head(service.url + WEBHOOK_PATH, timeout=10).status_code == 200
        assert webhook_events(service) == []


# ----- size and shape ----------------------------------------------------------------------------


class TestBodyChecks:
    def test_a_body_over_one_mib_is_413_with_content_length_or_chunked(
        self, service: ServiceServer, database_url: str
    ) -> None:
        body = b'{"pad":"' + b"x" * ONE_MIB + b'"}'

        def chunks() -> Iterator[bytes]:
            for start in range(0, len(body), 64 * 1024):
                yield body[start : start + 64 * 1024]

        declared = post(service, body)
        # Without a Content-Length the limit must hold while the body streams in.
        streamed = httpx.post(
            service.url + WEBHOOK_PATH, content=chunks(), headers=signed_headers(body), timeout=10
        )

        assert declared.request.headers["content-length"] == str(len(body))
        assert_error(declared, 413, "payload_too_large")
        assert streamed.request.headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in streamed.request.headers
        assert_error(streamed, 413, "payload_too_large")
        assert stored_rows(database_url) == []

    def test_a_body_of_exactly_one_mib_is_not_refused_for_its_size(
        self, service: ServiceServer
    ) -> None:
        body = b"[" + b" " * (ONE_MIB - 2) + b"]"
        assert len(body) == ONE_MIB
        # Not a notification, so 400: the point is that the size limit let it through.
        assert_error(post(service, body), 400, "invalid_notification")

    def test_a_signed_body_that_is_no_notification_is_400_and_kept_as_rejected(
        self, service: ServiceServer, database_url: str
    ) -> None:
        workspace = "sim0ws01"
        cases = {
            "not json": (b"this is not json", "JSON"),
            "json array": (b'[{"topic": "admin.added_to_workspace"}]', "object"),
            "missing topic": (
                orjson.dumps(
                    {
                        "type": "notification_event",
                        "id": "notif_nt",
                        "app_id": workspace,
                        "data": {"item": {"type": "admin", "id": "1"}},
                    }
                ),
                "topic",
            ),
            "admin item without id": (
                orjson.dumps(
                    {
                        "type": "notification_event",
                        "id": "notif_noid",
                        "topic": "admin.added_to_workspace",
                        "app_id": workspace,
                        "data": {"item": {"type": "admin", "name": "No Id"}},
                    }
                ),
                "id",
            ),
        }

        for name, (body, reason) in cases.items():
            response = post(service, body)
            assert response.status_code == 400, (name, response.text)
            assert_error(response, 400, "invalid_notification")
            assert reason in response.json()["error"]["message"], name

        events = webhook_events(service)
        assert [e["outcome"] for e in events] == ["rejected"] * len(cases), events
        assert all(e["error"] for e in events), events
        assert webhook_events(service, status="rejected") == events
        # The raw bytes are kept exactly, for an operator to inspect or replay.
        rows = stored_rows(database_url)
        assert [(row.status, row.raw_body) for row in rows] == [
            ("rejected", body) for body, _ in cases.values()
        ]


# ----- acknowledged without applying -------------------------------------------------------------


class TestAcknowledged:
    def test_ping_is_acknowledged_and_not_stored(
        self, service: ServiceServer, sim: SimulatorServer, database_url: str
    ) -> None:
        envelope = build_notification("ping", {}, app_id=sim.workspace.id_code)
        assert envelope["id"] is None

        response = post(service, encode_notification(envelope))

        assert response.status_code == 200, response.text
        assert response.json()["status"] in ("accepted", "ignored")
        assert webhook_events(service) == []
        assert stored_rows(database_url) == []

    def test_an_unknown_topic_is_ignored(
        self, service: ServiceServer, sim: SimulatorServer
    ) -> None:
        envelope = build_notification(
            "conversation.admin.replied",
            {"type": "conversation", "id": "42"},
            app_id=sim.workspace.id_code,
        )

        response = post(service, encode_notification(envelope))

        assert response.status_code == 200, response.text
        assert response.json() == {"status": "ignored"}
        [event] = webhook_events(service)
        assert (event["id"], event["outcome"]) == (envelope["id"], "ignored")

    def test_another_workspaces_notification_is_ignored_and_never_applied(
        self, service: ServiceServer, sim: SimulatorServer
    ) -> None:
        assert sim.workspace.id_code == "sim0ws01"
        stranger = SimAdmin(id="7100005", name="Stranger", email="stranger@elsewhere.example")
        foreign = build_notification(
            "admin.added_to_workspace", admin_webhook_item(stranger), app_id="other0ws"
        )

        response = post(service, encode_notification(foreign))

        assert response.status_code == 200, response.text
        assert response.json() == {"status": "ignored"}
        # A notification of our own workspace sent afterwards is applied; the foreign one not.
        ours = new_teammate(sim, "7100006")
        assert post(service, encode_notification(added_envelope(sim, ours))).status_code == 200
        wait_for(lambda: "7100006" in user_ids(service), what="our own notification")
        assert "7100005" not in user_ids(service)
        outcomes = {event["id"]: event["outcome"] for event in webhook_events(service)}
        assert outcomes[foreign["id"]] == "ignored"

    def test_another_workspaces_notification_is_not_applied_before_the_first_baseline(
        self, start_service: Callable[..., ServiceServer], sim: SimulatorServer
    ) -> None:
        # Until `GET /me` has answered the service does not know its workspace; a notification
        # that arrives meanwhile must not be applied on trust.
        sim.add_fault(path="/me", delay_seconds=2)
        service = start_service(wait_ready=False)
        wait_for(lambda: sim.requests("/me"), what="the first baseline to start")
        stranger = SimAdmin(id="7100007", name="Stranger", email="stranger@elsewhere.example")
        foreign = build_notification(
            "admin.added_to_workspace", admin_webhook_item(stranger), app_id="other0ws"
        )

        response = post(service, encode_notification(foreign))

        assert response.status_code == 200, response.text
        assert response.json()["status"] in ("accepted", "ignored")
        service.wait_ready()
        wait_for(
            lambda: all(e["outcome"] != "pending" for e in webhook_events(service)),
            timeout=30,
            what="the notification to be settled",
        )
        with service.client() as client:
            body = snapshot(client, include_removed="true")
        assert "7100007" not in {user["id"] for user in body["users"]}
        [event] = webhook_events(service)
        assert event["outcome"] == "ignored"


def test_no_answer_from_the_webhook_route_is_410(
    service: ServiceServer, sim: SimulatorServer
) -> None:
    """Intercom disables a subscription on a 410 (R4): walk every kind of request."""
    admin = new_teammate(sim, "7100008")
    valid = encode_notification(added_envelope(sim, admin))
    big = b'{"pad":"' + b"x" * ONE_MIB + b'"}'
    workspace = sim.workspace.id_code
    cases: list[tuple[str, str, bytes, dict[str, str] | None, set[int]]] = [
        ("valid", "POST", valid, None, {200}),
        ("duplicate", "POST", valid, None, {200}),
        (
            "reserialised",
            "POST",
            json.dumps(json.loads(valid)).encode(),
            signed_headers(valid),
            {401},
        ),
        ("no signature", "POST", valid, {"Content-Type": "application/json"}, {401}),
        ("wrong secret", "POST", valid, signed_headers(valid, "nope"), {401}),
        ("too large", "POST", big, None, {413}),
        ("not json", "POST", b"<xml/>", None, {400}),
        ("array", "POST", b"[]", None, {400}),
        ("no topic", "POST", b'{"id": "n1"}', None, {400}),
        (
            "ping",
            "POST",
            encode_notification(build_notification("ping", {}, app_id=workspace)),
            None,
            {200},
        ),
        (
            "unknown topic",
            "POST",
            encode_notification(
                build_notification("contact.created", {"id": "1"}, app_id=workspace)
            ),
            None,
            {200},
        ),
        (
            "foreign",
            "POST",
            encode_notification(added_envelope(sim, admin, app_id="x")),
            None,
            {200},
        ),
        ("head", "HEAD", b"", {}, {200}),
        ("get", "GET", b"", {}, {405}),
        ("put", "PUT", valid, None, {405}),
        ("delete", "DELETE", b"", {}, {405}),
    ]
    seen: dict[str, int] = {}
    with httpx.Client(base_url=service.url, timeout=10) as client:
        for name, method, body, headers, expected in cases:
            response = client.request(
                method,
                WEBHOOK_PATH,
                content=body or None,
                headers=signed_headers(body) if headers is None else headers,
            )
            seen[name] = response.status_code
            assert response.status_code in expected, (name, response.status_code, response.text)
    assert 410 not in seen.values(), seen


# ----- the durable inbox -------------------------------------------------------------------------


def current_version(service: ServiceServer) -> int:
    with service.client() as client:
        version: int = snapshot(client)["version"]
    return version


class TestDurableInbox:
    def test_fifty_concurrent_identical_deliveries_store_and_apply_once(
        self, service: ServiceServer, sim: SimulatorServer, database_url: str
    ) -> None:
        admin = new_teammate(sim, "7100010", teams=2)
        envelope = added_envelope(sim, admin)
        body = encode_notification(envelope)
        version_before = current_version(service)
        start = threading.Barrier(50)

        with (
            httpx.Client(timeout=30, limits=httpx.Limits(max_connections=50)) as client,
            ThreadPoolExecutor(50) as pool,
        ):

            def deliver(_: int) -> httpx.Response:
                start.wait(timeout=30)
                return client.post(
                    service.url + WEBHOOK_PATH, content=body, headers=signed_headers(body)
                )

            responses = list(pool.map(deliver, range(50)))

        assert [r.status_code for r in responses] == [200] * 50
        statuses = sorted(r.json()["status"] for r in responses)
        assert statuses == ["accepted"] + ["duplicate"] * 49
        wait_for(lambda: "7100010" in user_ids(service), what="the teammate to be applied")
        wait_for(
            lambda: webhook_events(service)[0]["outcome"] == "applied", what="the event outcome"
        )
        [event] = webhook_events(service)
        assert (event["id"], event["deliveries"], event["attempts"]) == (envelope["id"], 50, 1)
        assert webhook_events(service, status="duplicate") == [event]
        assert len(stored_rows(database_url)) == 1
        assert current_version(service) == version_before + 1

    def test_deliveries_are_answered_and_applied_while_intercom_hangs(
        self, start_service: Callable[..., ServiceServer], sim: SimulatorServer
    ) -> None:
        # Our client gives up on Intercom after 3 s and tries three times: a hang of ~9 s.
        service = start_service(intercom_timeout_seconds=3)
        sim.add_fault(path="*", delay_seconds=10, times=100)
        requests_before = len(sim.requests("/me"))
        with service.client(OPERATOR_TOKEN) as client:
            run = client.post("/resync").json()
        wait_for(
            lambda: len(sim.requests("/me")) > requests_before,
            what="the sync to be waiting on Intercom",
        )
        admins = [new_teammate(sim, f"71001{n:02d}") for n in range(10)]

        with httpx.Client(timeout=3) as client:
            responses = [
                client.post(service.url + WEBHOOK_PATH, content=body, headers=signed_headers(body))
                for body in (encode_notification(added_envelope(sim, a)) for a in admins)
            ]

        assert [(r.status_code, r.json()) for r in responses] == [
            (200, {"status": "accepted"})
        ] * 10
        # Applying does not wait for Intercom either.
        wanted = {a.id for a in admins}
        wait_for(lambda: wanted <= user_ids(service), what="the deliveries to be applied")
        with service.client(OPERATOR_TOKEN) as client:
            assert client.get(f"/sync-runs/{run['id']}").json()["status"] in ("queued", "running")
        sim.clear_faults()
        with service.client(OPERATOR_TOKEN) as client:
            wait_for(
                lambda: client.get(f"/sync-runs/{run['id']}").json()["finished_at"],
                timeout=30,
                what="the hung sync to finish",
            )

    def test_the_answer_comes_after_the_commit(
        self, service: ServiceServer, sim: SimulatorServer, database_url: str
    ) -> None:
        # An accepted delivery is in the store the moment the 200 arrives.
        admin = new_teammate(sim, "7100030")
        envelope = added_envelope(sim, admin, created_at=int(time.time()))

        response = post(service, encode_notification(envelope))

        assert response.json() == {"status": "accepted"}
        assert [row.notification_id for row in stored_rows(database_url)] == [envelope["id"]]

    def test_a_redelivery_with_other_bytes_but_the_same_id_is_a_duplicate(
        self, service: ServiceServer, sim: SimulatorServer
    ) -> None:
        # Intercom's retries carry the same notification id with a new delivery count, so the
        # bytes (and the signature) differ: the id, not the body, identifies the notification.
        admin = new_teammate(sim, "7100031")
        envelope = added_envelope(sim, admin)
        retry = {**envelope, "delivery_attempts": 2, "delivery_status": "retry"}
        assert encode_notification(retry) != encode_notification(envelope)

        first = post(service, encode_notification(envelope))
        second = post(service, encode_notification(retry))

        assert (first.json(), second.json()) == ({"status": "accepted"}, {"status": "duplicate"})
        wait_for(lambda: webhook_events(service)[0]["outcome"] == "applied", what="the application")
        [event] = webhook_events(service)
        assert (event["deliveries"], event["attempts"]) == (2, 1)
