"""The provisioning audit record on the wire: rendered in the api layer from the documented
model (the store keeps the record, not its JSON), with the exact shape C1 has been reading."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.api.provisioning import ProvisioningRecord, record_json
from app.store.provisioning import RequestRecord

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_record(**changes: Any) -> RequestRecord:
    fields: dict[str, Any] = {
        "id": 7,
        "action": "add_team_member",
        "user_id": "101",
        "team_id": "9",
        "dry_run": False,
        "result": "added",
        "requested_at": datetime(2026, 3, 1, 12, 0, 5, 123456),
        "finished_at": datetime(2026, 3, 1, 12, 0, 6, 7),
        "requested_by": "0123456789ab",
        "request_hash": "f" * 64,
        "intercom_method": "PUT",
        "intercom_path": "/teams/9",
        "intercom_body": {"admin_ids": [101, 102]},
        "intercom_status": 200,
        "http_status": 200,
        "error_code": None,
        "error_message": None,
    }
    fields.update(changes)
    return RequestRecord(**fields)


def test_a_write_renders_its_call_with_the_body_sent() -> None:
    assert orjson.dumps(record_json(make_record())) == orjson.dumps(
        {
            "id": 7,
            "action": "add_team_member",
            "user_id": "101",
            "team_id": "9",
            "dry_run": False,
            "result": "added",
            "requested_at": "2026-03-01T12:00:05.123456Z",
            "finished_at": "2026-03-01T12:00:06.000007Z",
            "requested_by": "0123456789ab",
            "intercom": {
                "method": "PUT",
                "path": "/teams/9",
                "status": 200,
                "body": {"admin_ids": [101, 102]},
            },
            "error": None,
        }
    )


def test_a_call_without_a_body_has_no_body_key_and_a_refusal_shows_its_error() -> None:
    record = make_record(
        action="remove_user",
        team_id=None,
        result="failed",
        finished_at=None,
        intercom_method="DELETE",
        intercom_path="/admins/remove?admin_id=101",
        intercom_body=None,
        intercom_status=None,
        http_status=409,
        error_code="protected_teammate",
        error_message=None,
    )
    rendered = record_json(record)
    assert rendered["intercom"] == {
        "method": "DELETE",
        "path": "/admins/remove?admin_id=101",
        "status": None,
    }
    assert rendered["error"] == {"code": "protected_teammate", "message": ""}
    assert rendered["finished_at"] is None
    assert rendered["team_id"] is None


def test_no_call_renders_null_and_the_hash_and_status_stay_private() -> None:
    rendered = record_json(make_record(intercom_method=None, intercom_path=None))
    assert rendered["intercom"] is None
    assert "request_hash" not in rendered
    assert "http_status" not in rendered


times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1))
ids = st.text(alphabet="0123456789", min_size=1, max_size=20)


@PROPERTY
@given(
    requested_at=times,
    finished_at=st.none() | times,
    method=st.none() | st.sampled_from(["GET", "PUT", "DELETE"]),
    body=st.none() | st.fixed_dictionaries({"admin_ids": st.lists(st.integers(0, 10**12))}),
    error=st.none() | st.tuples(st.text(min_size=1, max_size=30), st.none() | st.text()),
)
def test_every_record_renders_to_the_documented_model_and_back(
    requested_at: datetime,
    finished_at: datetime | None,
    method: str | None,
    body: dict[str, Any] | None,
    error: tuple[str, str | None] | None,
) -> None:
    record = make_record(
        requested_at=requested_at,
        finished_at=finished_at,
        intercom_method=method,
        intercom_path="/teams/9" if method else None,
        intercom_body=body if method else None,
        error_code=error[0] if error else None,
        error_message=error[1] if error else None,
    )
    rendered = record_json(record)
    # What goes on the wire validates against the model the OpenAPI document shows.
    assert ProvisioningRecord.model_validate(orjson.loads(orjson.dumps(rendered)))
    assert list(rendered) == list(ProvisioningRecord.model_fields)
    assert datetime.strptime(rendered["requested_at"], "%Y-%m-%dT%H:%M:%S.%fZ") == requested_at
    if method is None:
        assert rendered["intercom"] is None
    else:
        assert ("body" in rendered["intercom"]) == (body is not None)
    assert (rendered["error"] is None) == (error is None)
