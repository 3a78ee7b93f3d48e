"""What an entry of Intercom's admin activity log (``activity_log``) is: the activity types
Intercom names, one entry as the simulator serves it, and the description Intercom writes.

The log that holds the entries is ``activity_log.SimActivityLog``; a benchmark's year of
sign-ins is ``synthetic_activity.SyntheticLog``; the routes and their paging are in
``activity_routes``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Every `activity_type` of Intercom's OpenAPI description 2.16 (schema `activity_log`), in its
# order: 114 values.
ACTIVITY_TYPES: tuple[str, ...] = (
    "admin_conversation_assignment_limit_change",
    "admin_ticket_assignment_limit_change",
    "admin_avatar_change",
    "admin_away_mode_change",
    "admin_deletion",
    "admin_deprovisioned",
    "admin_impersonation_end",
    "admin_impersonation_start",
    "admin_impersonation_consent_approved",
    "admin_impersonation_consent_revoked",
    "admin_invite_change",
    "admin_invite_creation",
    "admin_invite_deletion",
    "admin_login_failure",
    "admin_login_success",
    "admin_logout",
    "admin_occupancy_setting_change",
    "admin_occupancy_state_change",
    "admin_password_reset_request",
    "admin_password_reset_success",
    "admin_permission_change",
    "admin_provisioned",
    "admin_two_factor_auth_change",
    "admin_unauthorized_sign_in_method",
    "app_admin_join",
    "app_authentication_method_change",
    "app_data_deletion",
    "app_data_export",
    "app_google_sso_domain_change",
    "app_identity_verification_change",
    "app_name_change",
    "app_outbound_address_change",
    "app_package_installation",
    "app_package_token_regeneration",
    "app_package_uninstallation",
    "app_team_creation",
    "app_team_deletion",
    "app_team_membership_modification",
    "app_timezone_change",
    "app_webhook_creation",
    "app_webhook_deletion",
    "articles_in_messenger_enabled_change",
    "automatic_away_mode_setting_change",
    "bulk_delete",
    "bulk_export",
    "campaign_deletion",
    "campaign_state_change",
    "conversation_deletion_schedule_creation",
    "conversation_deletion_schedule_deletion",
    "conversation_deletion_schedule_state_change",
    "conversation_deletion_schedule_update",
    "conversation_part_deletion",
    "conversation_pdf_export",
    "conversation_topic_change",
    "conversation_topic_creation",
    "conversation_topic_deletion",
    "content_redaction_rule_creation",
    "content_redaction_rule_deletion",
    "content_redaction_rule_update",
    "csv_import_completion",
    "csv_import_creation",
    "custom_authentication_token_creation",
    "help_center_settings_change",
    "inbound_conversations_change",
    "inbox_access_change",
    "macro_creation",
    "macro_deletion",
    "macro_update",
    "macro_usage_export",
    "malicious_domains_setting_change",
    "message_deletion",
    "message_state_change",
    "messenger_api_secret_creation",
    "messenger_api_secret_deletion",
    "messenger_look_and_feel_change",
    "messenger_search_required_change",
    "messenger_spaces_change",
    "oauth_token_revocation",
    "office_hours_change",
    "role_change",
    "role_creation",
    "role_deletion",
    "ruleset_activation_title_preview",
    "ruleset_creation",
    "ruleset_deletion",
    "search_browse_enabled_change",
    "search_browse_required_change",
    "seat_change",
    "seat_revoke",
    "security_settings_change",
    "series_creation",
    "series_deletion",
    "series_settings_update",
    "series_status_change",
    "series_update",
    "strip_inbound_email_links_change",
    "temporary_expectation_change",
    "team_assignment_limit_change",
    "trusted_domains_setting_change",
    "unassign_unsnoozed_at_capacity_setting_change",
    "unassign_unsnoozed_when_away_setting_change",
    "upfront_email_collection_change",
    "allowed_attachment_filetypes_setting_change",
    "attach_uploads_inline_setting_change",
    "teammate_gifs_setting_change",
    "user_camera_attachments_setting_change",
    "user_conversation_attachments_setting_change",
    "user_file_attachments_setting_change",
    "user_gifs_setting_change",
    "user_media_attachments_setting_change",
    "user_voice_notes_setting_change",
    "welcome_message_change",
    "workspace_deletion_request",
    "hide_csat_from_agents_setting_change",
)

_DESCRIPTIONS = {
    "admin_login_success": "{name} successfully logged in",
    "admin_login_failure": "{name} failed to log in",
    "admin_logout": "{name} logged out",
    "admin_permission_change": "{name} changed a teammate's permissions",
    "seat_change": "{name} changed a teammate's seat",
    "app_team_membership_modification": "{name} changed a team's membership",
    "role_change": "{name} changed a teammate's role",
}


@dataclass(frozen=True, slots=True)
class SimActivity:
    """One activity-log entry."""

    id: str
    created_at: int
    activity_type: str
    admin_id: str
    email: str | None = None
    ip: str | None = None
    description: str | None = None
    metadata: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The entry as Intercom sends it."""
        return {
            "id": self.id,
            "performed_by": {
                "type": "admin",
                "id": self.admin_id,
                "email": self.email,
                "ip": self.ip,
            },
            "metadata": dict(self.metadata) if self.metadata is not None else None,
            "created_at": self.created_at,
            "activity_type": self.activity_type,
            "activity_description": self.description,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, now: int) -> SimActivity:
        """Parse control-plane JSON: ``admin_id`` and ``activity_type`` are required."""
        activity_type = data.get("activity_type")
        if not isinstance(activity_type, str) or not activity_type:
            raise ValueError("'activity_type' is a required string")
        admin_id = data.get("admin_id")
        if isinstance(admin_id, bool) or not isinstance(admin_id, str | int):
            raise ValueError("'admin_id' is a required string or integer id")
        created_at = data.get("created_at", now)
        if isinstance(created_at, bool) or not isinstance(created_at, int):
            raise ValueError("'created_at' must be an integer unix timestamp")
        metadata = data.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise ValueError("'metadata' must be an object or null")
        entry_id = data.get("id", str(uuid.uuid4()))
        if not isinstance(entry_id, str) or not entry_id:
            raise ValueError("'id' must be a non-empty string")
        for name in ("email", "ip", "description"):
            if data.get(name) is not None and not isinstance(data.get(name), str):
                raise ValueError(f"'{name}' must be a string or null")
        return cls(
            id=entry_id,
            created_at=created_at,
            activity_type=activity_type,
            admin_id=str(admin_id),
            email=data.get("email"),
            ip=data.get("ip"),
            description=data.get("description"),
            metadata=metadata,
        )


def describe(activity_type: str, name: str) -> str:
    """An ``activity_description`` in Intercom's manner."""
    template = _DESCRIPTIONS.get(activity_type, "{name}: " + activity_type.replace("_", " "))
    return template.format(name=name)
