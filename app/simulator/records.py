"""The teammate and team records a simulated workspace holds, and their control-plane JSON.

Ids are strings, as in Intercom's REST answers; the parsers accept the integer ids webhook-style
JSON carries. ``SimWorkspace`` (``state``) keeps the records and the membership relation between
them; the REST and webhook shapes are built from them elsewhere (``admin_routes``, ``webhooks``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Role = tuple[str, str]
"""(role id, role name), e.g. ``("2", "Support Agent")``."""


def _as_id(value: object, what: str) -> str:
    # JSON callers may send Intercom ids as numbers (webhook style); store them as str (REST style).
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"{what} must be a string or integer id, got {value!r}")
    return str(value)


def _ids(value: object, what: str) -> list[str]:
    if not isinstance(value, list):
        raise ValueError(f"{what} must be a list of ids")
    out: list[str] = []
    for item in value:
        ident = _as_id(item, what)
        if ident not in out:
            out.append(ident)
    return out


def _opt_str(value: object, what: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"{what} must be a string or null")


def required_str(value: object, what: str) -> str:
    if isinstance(value, str):
        return value
    raise ValueError(f"{what} must be a string")


def _bool(value: object, what: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"{what} must be a boolean")


def _role(value: object) -> Role | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        return (_as_id(value.get("id"), "role.id"), required_str(value.get("name"), "role.name"))
    if isinstance(value, list | tuple) and len(value) == 2:
        return (_as_id(value[0], "role[0]"), required_str(value[1], "role[1]"))
    raise ValueError("role must be null, [id, name] or {'id': ..., 'name': ...}")


@dataclass(slots=True)
class SimAdmin:
    """One teammate as the simulator stores it (ids are strings, as in REST)."""

    id: str
    name: str
    email: str
    job_title: str | None = None
    away_mode_enabled: bool = False
    away_mode_reassign: bool = False
    has_inbox_seat: bool = True
    team_ids: list[str] = field(default_factory=list)
    role: Role | None = None
    avatar_url: str | None = None

    def copy(self) -> SimAdmin:
        """A copy that shares no mutable list with this one."""
        return dataclasses.replace(self, team_ids=list(self.team_ids))

    def to_dict(self) -> dict[str, Any]:
        """The control-plane JSON form (role as ``[id, name]``)."""
        return {
            "id": self.id,
            "name": self.name,
            "email": self.email,
            "job_title": self.job_title,
            "away_mode_enabled": self.away_mode_enabled,
            "away_mode_reassign": self.away_mode_reassign,
            "has_inbox_seat": self.has_inbox_seat,
            "team_ids": list(self.team_ids),
            "role": list(self.role) if self.role is not None else None,
            "avatar_url": self.avatar_url,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, base: SimAdmin | None = None) -> SimAdmin:
        """Parse control-plane JSON; keys missing from ``data`` keep ``base``'s values."""
        if "id" not in data:
            raise ValueError("admin needs an 'id'")
        ident = _as_id(data["id"], "id")
        if base is None:
            if "name" not in data or "email" not in data:
                raise ValueError("a new admin needs 'name' and 'email'")
            base = cls(id=ident, name="", email="")
        return cls(
            id=ident,
            name=required_str(data.get("name", base.name), "name"),
            email=required_str(data.get("email", base.email), "email"),
            job_title=_opt_str(data.get("job_title", base.job_title), "job_title"),
            away_mode_enabled=_bool(
                data.get("away_mode_enabled", base.away_mode_enabled), "away_mode_enabled"
            ),
            away_mode_reassign=_bool(
                data.get("away_mode_reassign", base.away_mode_reassign), "away_mode_reassign"
            ),
            has_inbox_seat=_bool(data.get("has_inbox_seat", base.has_inbox_seat), "has_inbox_seat"),
            team_ids=_ids(data["team_ids"], "team_ids") if "team_ids" in data else base.team_ids,
            role=_role(data["role"]) if "role" in data else base.role,
            avatar_url=_opt_str(data.get("avatar_url", base.avatar_url), "avatar_url"),
        )


@dataclass(slots=True)
class SimTeam:
    """One team; ``admin_ids`` is the membership as seen from the team's side."""

    id: str
    name: str
    admin_ids: list[str] = field(default_factory=list)

    def copy(self) -> SimTeam:
        """A copy that shares no mutable list with this one."""
        return dataclasses.replace(self, admin_ids=list(self.admin_ids))

    def to_dict(self) -> dict[str, Any]:
        """The control-plane JSON form."""
        return {"id": self.id, "name": self.name, "admin_ids": list(self.admin_ids)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, base: SimTeam | None = None) -> SimTeam:
        """Parse control-plane JSON; keys missing from ``data`` keep ``base``'s values."""
        if "id" not in data:
            raise ValueError("team needs an 'id'")
        ident = _as_id(data["id"], "id")
        if base is None:
            if "name" not in data:
                raise ValueError("a new team needs a 'name'")
            base = cls(id=ident, name="")
        return cls(
            id=ident,
            name=required_str(data.get("name", base.name), "name"),
            admin_ids=_ids(data["admin_ids"], "admin_ids")
            if "admin_ids" in data
            else base.admin_ids,
        )
