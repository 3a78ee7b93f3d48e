"""Intercom's admin activity-log types, classified once for everything that reads them.

The names are the `activity_type` enum of the `activity_log` schema (Intercom-OpenAPI 2.16 and
Preview). A type missing from the table is unknown and counts for nothing: in particular it
never triggers a refresh, since Intercom adds types over time and most are workspace settings.
"""

from __future__ import annotations

from enum import StrEnum


class ActivityCategory(StrEnum):
    # A teammate signed in or out, or reset a password: evidence of use, never of a change in
    # access.
    SIGN_IN = "sign_in"
    # A sign-in that failed or used a method the workspace does not allow: evidence of an
    # attempt an auditor wants to see, never a change in access.
    SIGN_IN_FAILURE = "sign_in_failure"
    # How teammates authenticate: two-factor, SSO domains, the workspace's sign-in methods.
    AUTHENTICATION = "authentication"
    # A teammate joined, was invited, provisioned, deprovisioned or deleted.
    LIFECYCLE = "lifecycle"
    # What a teammate may do: permissions, roles, seats, inbox access.
    RIGHTS = "rights"
    # Which teams exist and who is in them.
    TEAMS = "teams"
    # Intercom staff (or a teammate) acting as another teammate.
    IMPERSONATION = "impersonation"
    # Apps, OAuth and API tokens, webhooks and secrets: access that is not a teammate's.
    INTEGRATIONS = "integrations"
    # Data leaving (or being wiped from) the workspace in bulk.
    DATA_EXPORT = "data_export"
    # Everything else Intercom logs: profile fields, away mode, workspace settings, content.
    NOISE = "noise"


# The categories whose events can change who has access to what, so the served snapshot may
# be stale until Intercom is read again.
REFRESH_CATEGORIES = frozenset(
    {ActivityCategory.LIFECYCLE, ActivityCategory.RIGHTS, ActivityCategory.TEAMS}
)
# The categories an access review wants to see as events (everything but successful
# sign-ins, sign-outs and noise).
ACCESS_EVENT_CATEGORIES = frozenset(
    {
        ActivityCategory.SIGN_IN_FAILURE,
        ActivityCategory.AUTHENTICATION,
        ActivityCategory.LIFECYCLE,
        ActivityCategory.RIGHTS,
        ActivityCategory.TEAMS,
        ActivityCategory.IMPERSONATION,
        ActivityCategory.INTEGRATIONS,
        ActivityCategory.DATA_EXPORT,
    }
)

_C = ActivityCategory
ACTIVITY_TYPES: dict[str, ActivityCategory] = {
    # sign-in
    "admin_login_success": _C.SIGN_IN,
    "admin_login_failure": _C.SIGN_IN_FAILURE,
    "admin_logout": _C.SIGN_IN,
    "admin_unauthorized_sign_in_method": _C.SIGN_IN_FAILURE,
    "admin_password_reset_request": _C.SIGN_IN,
    "admin_password_reset_success": _C.SIGN_IN,
    # authentication
    "admin_two_factor_auth_change": _C.AUTHENTICATION,
    "app_authentication_method_change": _C.AUTHENTICATION,
    "app_google_sso_domain_change": _C.AUTHENTICATION,
    "security_settings_change": _C.AUTHENTICATION,
    # lifecycle (SCIM provisioning included)
    "admin_provisioned": _C.LIFECYCLE,
    "admin_deprovisioned": _C.LIFECYCLE,
    "app_admin_join": _C.LIFECYCLE,
    "admin_deletion": _C.LIFECYCLE,
    "admin_invite_creation": _C.LIFECYCLE,
    "admin_invite_change": _C.LIFECYCLE,
    "admin_invite_deletion": _C.LIFECYCLE,
    # rights
    "admin_permission_change": _C.RIGHTS,
    "role_change": _C.RIGHTS,
    "role_creation": _C.RIGHTS,
    "role_deletion": _C.RIGHTS,
    "seat_change": _C.RIGHTS,
    "seat_revoke": _C.RIGHTS,
    "inbox_access_change": _C.RIGHTS,
    # teams
    "app_team_creation": _C.TEAMS,
    "app_team_deletion": _C.TEAMS,
    "app_team_membership_modification": _C.TEAMS,
    # impersonation
    "admin_impersonation_start": _C.IMPERSONATION,
    "admin_impersonation_end": _C.IMPERSONATION,
    "admin_impersonation_consent_approved": _C.IMPERSONATION,
    "admin_impersonation_consent_revoked": _C.IMPERSONATION,
    # integrations: apps, tokens, secrets, webhooks
    "app_package_installation": _C.INTEGRATIONS,
    "app_package_uninstallation": _C.INTEGRATIONS,
    "app_package_token_regeneration": _C.INTEGRATIONS,
    "oauth_token_revocation": _C.INTEGRATIONS,
    "custom_authentication_token_creation": _C.INTEGRATIONS,
    "messenger_api_secret_creation": _C.INTEGRATIONS,
    "messenger_api_secret_deletion": _C.INTEGRATIONS,
    "app_webhook_creation": _C.INTEGRATIONS,
    "app_webhook_deletion": _C.INTEGRATIONS,
    "app_identity_verification_change": _C.INTEGRATIONS,
    # data leaving or wiped in bulk
    "app_data_export": _C.DATA_EXPORT,
    "bulk_export": _C.DATA_EXPORT,
    "conversation_pdf_export": _C.DATA_EXPORT,
    "macro_usage_export": _C.DATA_EXPORT,
    "app_data_deletion": _C.DATA_EXPORT,
    "bulk_delete": _C.DATA_EXPORT,
    "workspace_deletion_request": _C.DATA_EXPORT,
    # a teammate's own profile and availability: never access
    "admin_away_mode_change": _C.NOISE,
    "admin_avatar_change": _C.NOISE,
    "admin_conversation_assignment_limit_change": _C.NOISE,
    "admin_ticket_assignment_limit_change": _C.NOISE,
    "admin_occupancy_setting_change": _C.NOISE,
    "admin_occupancy_state_change": _C.NOISE,
    "automatic_away_mode_setting_change": _C.NOISE,
    "team_assignment_limit_change": _C.NOISE,
}


# The entry that sets a teammate's last login.
SIGN_IN_SUCCESS = "admin_login_success"
ACCESS_EVENT_TYPES = frozenset(
    name for name, category in ACTIVITY_TYPES.items() if category in ACCESS_EVENT_CATEGORIES
)
# What the 2.16+ activity-log search asks for: nothing else is read.
EVENT_TYPES_READ: tuple[str, ...] = (SIGN_IN_SUCCESS, *sorted(ACCESS_EVENT_TYPES))


def classify_activity(activity_type: object) -> ActivityCategory | None:
    """The category of an `activity_type`, or None for one this table does not know (and
    for anything that is not a string). Surrounding whitespace is ignored."""
    if not isinstance(activity_type, str):
        return None
    return ACTIVITY_TYPES.get(activity_type.strip())


def activity_changes_access(activity_type: object) -> bool:
    """Whether an activity can change who has access, so that Intercom must be read again."""
    return classify_activity(activity_type) in REFRESH_CATEGORIES


def is_access_event(activity_type: object) -> bool:
    """Whether an activity belongs in an access review's event list."""
    return classify_activity(activity_type) in ACCESS_EVENT_CATEGORIES
