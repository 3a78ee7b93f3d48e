"""Which admin activity-log entries are usage evidence (spec §11).

`admin_login_success` is a sign-in: it sets the teammate's last login. The access events are
the entries an access review or a SIEM asks about, each with a category; every other type
(settings, content, away mode, passwords, sign-outs) is neither, and is not kept.
"""

from __future__ import annotations

from types import MappingProxyType

SIGN_IN = "admin_login_success"

ACCESS_EVENT_CATEGORIES: MappingProxyType[str, str] = MappingProxyType(
    {
        "admin_login_failure": "sign_in_failure",
        "admin_unauthorized_sign_in_method": "sign_in_failure",
        "admin_two_factor_auth_change": "two_factor",
        "app_authentication_method_change": "sso",
        "app_google_sso_domain_change": "sso",
        "admin_permission_change": "permission",
        "inbox_access_change": "permission",
        "role_change": "role",
        "role_creation": "role",
        "role_deletion": "role",
        "seat_change": "seat",
        "seat_revoke": "seat",
        "app_team_creation": "team_membership",
        "app_team_deletion": "team_membership",
        "app_team_membership_modification": "team_membership",
        "admin_invite_creation": "invitation",
        "admin_invite_change": "invitation",
        "admin_invite_deletion": "invitation",
        "app_admin_join": "joining",
        "admin_deletion": "deletion",
        "admin_provisioned": "scim",
        "admin_deprovisioned": "scim",
        "admin_impersonation_start": "impersonation",
        "admin_impersonation_end": "impersonation",
        "admin_impersonation_consent_approved": "impersonation",
        "admin_impersonation_consent_revoked": "impersonation",
        "app_data_export": "data_export",
        "bulk_export": "data_export",
        "app_package_installation": "app_install",
        "app_package_uninstallation": "app_install",
        "app_package_token_regeneration": "token",
        "oauth_token_revocation": "token",
        "custom_authentication_token_creation": "token",
        "messenger_api_secret_creation": "token",
        "messenger_api_secret_deletion": "token",
    }
)
ACCESS_EVENT_TYPES = frozenset(ACCESS_EVENT_CATEGORIES)

# What the 2.16+ search asks for: nothing else is read.
EVENT_TYPES_READ: tuple[str, ...] = (SIGN_IN, *sorted(ACCESS_EVENT_TYPES))


def is_access_event(activity_type: str) -> bool:
    return activity_type in ACCESS_EVENT_TYPES
