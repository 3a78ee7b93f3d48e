"""Intercom's payload shapes, parsed defensively.

Intercom sends ids as strings in REST and as numbers in webhooks, `avatar` as a string or an
object, omits `job_title`, sends `team_priority_level: {}` and adds fields over time. Every model
ignores unknown fields and normalizes ids to strings.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from app.intercom.text import is_storable, storable_text

# The store's column sizes. PostgreSQL refuses longer values, which would fail a whole baseline
# (or a webhook) over one odd teammate, so display text (names, job titles) is clipped to fit
# and an overlong id, which cannot be stored at all, makes its object unusable. An email is an
# identity and is never clipped: one too long to store is the baseline's and the inbox drainer's to
# report (see `app.store.directory.unstorable_reason`).
MAX_ID_LENGTH = 64
MAX_TEXT_LENGTH = 512
MAX_REGION_LENGTH = 16


def _id_to_str(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("an id cannot be a boolean")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        stripped = value.strip()
        if not stripped:
            raise ValueError("an id cannot be empty")
        if len(stripped) > MAX_ID_LENGTH:
            raise ValueError(f"an id cannot be longer than {MAX_ID_LENGTH} characters")
        if not stripped.isprintable() and not is_storable(stripped):
            # Not cleaned like text: "12\x00" made "12" would be another teammate's id.
            raise ValueError("an id cannot contain control characters or surrogates")
        return stripped
    raise ValueError("an id must be a string or a number")


IntercomId = Annotated[str, BeforeValidator(_id_to_str)]


def _id_list(value: object) -> object:
    """Ids in a list, skipping entries that are no usable id: one odd team id must not make a
    teammate unparseable (a baseline would then treat them as gone)."""
    if value is None:
        return []
    if not isinstance(value, list):
        return value
    ids = []
    for entry in value:
        try:
            ids.append(_id_to_str(entry))
        except ValueError:
            continue
    return ids


def _text(value: object) -> str | None:
    """Storable text (see `storable_text`); a number or other value as its string."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    # Nearly always printable: checked here, at C speed, before any further call.
    return text if text.isprintable() else storable_text(text)


def _clipped(value: object, limit: int = MAX_TEXT_LENGTH) -> object:
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    if not text.isprintable():
        text = storable_text(text)
    return text[:limit]


def _bool_or_false(value: object) -> object:
    return False if value is None else value


FlexBool = Annotated[bool, BeforeValidator(_bool_or_false)]
IdList = Annotated[list[IntercomId], BeforeValidator(_id_list)]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class IntercomRole(_Lenient):
    id: IntercomId
    name: str | None = None

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: object) -> object:
        return _clipped(value)


class IntercomAdmin(_Lenient):
    """A teammate as `GET /admins` and the `admin.*` webhooks describe it."""

    type: str = "admin"
    id: IntercomId
    name: str | None = None
    email: str | None = None
    job_title: str | None = None
    away_mode_enabled: FlexBool = False
    away_mode_reassign: FlexBool = False
    has_inbox_seat: FlexBool = False
    team_ids: IdList = Field(default_factory=list)
    role: IntercomRole | None = None

    @field_validator("role", mode="before")
    @classmethod
    def _role(cls, value: object) -> object:
        if isinstance(value, dict) and value.get("id") not in (None, ""):
            return value
        return None

    @field_validator("name", "job_title", mode="before")
    @classmethod
    def _display_text(cls, value: object) -> object:
        return _clipped(value)

    @field_validator("email", mode="before")
    @classmethod
    def _email(cls, value: object) -> object:
        return _text(value)


class IntercomTeam(_Lenient):
    type: str = "team"
    id: IntercomId
    name: str | None = None
    admin_ids: IdList = Field(default_factory=list)

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: object) -> object:
        return _clipped(value)


class IntercomWorkspace(_Lenient):
    """The `app` object embedded in `GET /me`."""

    id_code: IntercomId
    name: str | None = None
    region: str | None = None

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: object) -> object:
        return _clipped(value)

    @field_validator("region", mode="before")
    @classmethod
    def _region(cls, value: object) -> object:
        return _clipped(value, MAX_REGION_LENGTH)


def parse_items(payload: Any, key: str, wanted_type: str) -> list[dict[str, Any]]:
    """The objects under `key` whose `type` is `wanted_type` (older versions mix types).

    Raises ValueError when the answer is not such a list: dropping an entry that is not even
    an object would make a teammate look removed."""
    if not isinstance(payload, dict):
        raise ValueError(f"expected a JSON object with '{key}'")
    items = payload.get(key)
    if not isinstance(items, list):
        raise ValueError(f"'{key}' is missing or not a list")
    for position, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"'{key}'[{position}] is not an object")
    return [item for item in items if item.get("type", wanted_type) == wanted_type]


# The user columns a teammate's Intercom record gives, shared by the baseline (app.sync) and
# the inbox drainer (app.webhooks), which must derive them alike.
def account_type_of(email: str | None) -> str:
    """Intercom's own bot teammates (Fin: `operator+…@intercom.io`) are service accounts."""
    if email:
        local, _, domain = email.strip().lower().partition("@")
        if domain == "intercom.io" and local.startswith("operator+"):
            return "service"
    return "human"


def user_fields_from_admin(admin: IntercomAdmin, *, roles_supported: bool) -> dict[str, Any]:
    return {
        "name": admin.name,
        "email": admin.email,
        "job_title": admin.job_title,
        "has_inbox_seat": admin.has_inbox_seat,
        "away_mode_enabled": admin.away_mode_enabled,
        "away_mode_reassign": admin.away_mode_reassign,
        "role_id": admin.role.id if roles_supported and admin.role else None,
        "account_type": account_type_of(admin.email),
    }
