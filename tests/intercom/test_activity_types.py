"""Which activity-log types refresh, and how topics and types are read.

The expected sets are written out here from the spec rather than taken from the table, so that a
type moved to the wrong category in `app/intercom/activity_types.py` shows up."""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.intercom.activity_types import (
    ACTIVITY_TYPES,
    ActivityCategory,
    activity_changes_access,
    classify_activity,
    is_access_event,
)
from app.intercom.notifications import (
    ACTIVITY_LOG_TOPIC,
    ADMIN_STATE_TOPICS,
    activity_needs_refresh,
    parse_notification,
)

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Team membership, seats, roles, permissions, joining, deletion, invitations, SCIM provisioning.
ACCESS_CHANGING = frozenset(
    {
        "app_team_creation",
        "app_team_deletion",
        "app_team_membership_modification",
        "seat_change",
        "seat_revoke",
        "inbox_access_change",
        "role_change",
        "role_creation",
        "role_deletion",
        "admin_permission_change",
        "app_admin_join",
        "admin_deletion",
        "admin_invite_creation",
        "admin_invite_change",
        "admin_invite_deletion",
        "admin_provisioned",
        "admin_deprovisioned",
    }
)
# Sign-ins, sign-outs, away mode, avatars, passwords, two-factor: never a refresh, although
# most of them start with `admin_` as the access-changing ones do.
NEVER_REFRESH = frozenset(
    {
        "admin_login_success",
        "admin_login_failure",
        "admin_logout",
        "admin_unauthorized_sign_in_method",
        "admin_away_mode_change",
        "admin_avatar_change",
        "admin_password_reset_request",
        "admin_password_reset_success",
        "admin_two_factor_auth_change",
        "admin_conversation_assignment_limit_change",
        "admin_impersonation_start",
        "admin_impersonation_end",
        "admin_occupancy_state_change",
    }
)
WHITESPACE = st.text(alphabet=" \t\r\n", max_size=4)
KNOWN_TYPES = sorted(ACTIVITY_TYPES)


def test_exactly_the_access_changing_types_refresh() -> None:
    assert {name for name in ACTIVITY_TYPES if activity_changes_access(name)} == ACCESS_CHANGING
    for name in NEVER_REFRESH:
        assert name in ACTIVITY_TYPES, name
        assert not activity_changes_access(name), name


def test_sign_ins_are_sign_in_evidence_and_access_changes_are_access_events() -> None:
    assert classify_activity("admin_login_success") is ActivityCategory.SIGN_IN
    assert classify_activity("admin_logout") is ActivityCategory.SIGN_IN
    assert not is_access_event("admin_login_success")
    assert not is_access_event("admin_away_mode_change")
    assert all(is_access_event(name) for name in ACCESS_CHANGING)
    assert is_access_event("admin_impersonation_start")
    assert is_access_event("bulk_export")


@PROPERTY
@given(name=st.sampled_from(KNOWN_TYPES), before=WHITESPACE, after=WHITESPACE)
def test_a_known_type_is_classified_whatever_whitespace_surrounds_it(
    name: str, before: str, after: str
) -> None:
    padded = before + name + after
    assert classify_activity(padded) is ACTIVITY_TYPES[name]
    assert activity_needs_refresh({"activity_type": padded}) is (name in ACCESS_CHANGING)


@PROPERTY
@given(name=st.one_of(st.text(max_size=40), st.integers(), st.none(), st.booleans()))
def test_an_unknown_type_never_refreshes(name: object) -> None:
    if isinstance(name, str) and name.strip() in ACTIVITY_TYPES:
        return
    assert classify_activity(name) is None
    assert not activity_needs_refresh({"activity_type": name})
    assert not is_access_event(name)


@PROPERTY
@given(
    topic=st.sampled_from(sorted(ADMIN_STATE_TOPICS | {ACTIVITY_LOG_TOPIC})),
    before=WHITESPACE,
    after=WHITESPACE,
)
def test_topics_are_trimmed_before_they_are_classified(topic: str, before: str, after: str) -> None:
    item = {"type": "admin", "id": 7, "email": "a@acme.example"}
    body = orjson.dumps(
        {
            "type": "notification_event",
            "id": "notif_1",
            "topic": before + topic + after,
            "app_id": "abc",
            "created_at": 1_700_000_000,
            "data": {"item": item},
        }
    )
    notification = parse_notification(body)
    assert notification.topic == topic
    if topic in ADMIN_STATE_TOPICS:
        assert notification.teammate is not None
        assert notification.item_id == "7"
    else:
        assert notification.teammate is None


def test_every_classified_type_is_one_of_intercoms_114() -> None:
    # The simulator's list is the `activity_type` enum of Intercom's OpenAPI 2.16: a name the
    # table invents would classify nothing real.
    from app.simulator.activity import ACTIVITY_TYPES as INTERCOM_TYPES

    assert len(INTERCOM_TYPES) == len(set(INTERCOM_TYPES)) == 114
    assert set(ACTIVITY_TYPES) <= set(INTERCOM_TYPES)
