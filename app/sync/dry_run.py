"""`intercom-sync sync --dry-run`: a baseline's diff as lines to read, written nowhere.

The diff is `diff_baseline`'s, the very one a real run writes, so what is printed is what a run
would do at that moment (a webhook applied in between can still change it).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from app.sync.plan import BaselinePlan, FetchedWorkspace

# Fields that `user_fields_from_admin` (app.intercom.models) derives rather than Intercom
# sending them as such.
_FIELD_LABELS = {"role_id": "role", "account_type": "account type"}


def describe_plan(plan: BaselinePlan, fetched: FetchedWorkspace) -> list[str]:
    """Who would be added, removed and changed (id, name, email), memberships by team, and
    the teams and roles a run would add, rename or remove."""
    current = plan.current
    fetched_by_id = {admin.id: admin for admin in fetched.admins}
    team_names: dict[str, str | None] = {**current.teams, **{t.id: t.name for t in fetched.teams}}

    def who(user_id: str) -> str:
        admin = fetched_by_id.get(user_id)
        if admin is not None:
            name, email = admin.name, admin.email
        else:
            stored = current.users.get(user_id)
            fields: dict[str, Any] = stored.fields if stored is not None else {}
            name, email = fields.get("name"), fields.get("email")
        return f"{user_id} {name or '(no name)'} <{email or 'no email'}>"

    added = [uid for uid, _ in plan.new_users]
    removed: list[str] = []
    readded: list[str] = []
    changed: list[tuple[str, list[str]]] = []
    for row in plan.changed_rows:
        uid = row["id"]
        before = current.users[uid]
        if row["removed_at"] is not None:
            removed.append(uid)
        elif not before.active:
            readded.append(uid)
        else:
            fields = [
                _FIELD_LABELS.get(key, key.replace("_", " "))
                for key, value in before.fields.items()
                if key in row and row[key] != value
            ]
            changed.append((uid, fields))

    lines: list[str] = []
    section(lines, "teammates to add", [f"+ {who(uid)}" for uid in added])
    section(lines, "teammates to add back (removed earlier)", [f"+ {who(uid)}" for uid in readded])
    section(lines, "teammates to remove", [f"- {who(uid)}" for uid in removed])
    section(
        lines,
        "teammates to change",
        [f"~ {who(uid)}: {', '.join(fields)}" for uid, fields in changed],
    )

    by_team: dict[str, list[str]] = defaultdict(list)
    for tid, uid in sorted(plan.pairs_added):
        by_team[tid].append(f"+ {who(uid)}")
    for tid, uid in sorted(plan.pairs_removed):
        by_team[tid].append(f"- {who(uid)}")
    membership_lines: list[str] = []
    for tid in sorted(by_team):
        membership_lines.append(f"team {tid} {team_names.get(tid) or '(no name)'}:")
        membership_lines.extend(f"  {line}" for line in by_team[tid])
    section(
        lines,
        "memberships by team",
        membership_lines,
        count=len(plan.pairs_added) + len(plan.pairs_removed),
    )

    team_lines = [f"+ {tid} {name}" for tid, name in sorted(plan.new_teams.items())]
    team_lines += [
        f"~ {tid} {current.teams.get(tid)} -> {name}" for tid, name in sorted(plan.renamed.items())
    ]
    team_lines += [f"- {tid} {current.teams.get(tid)}" for tid in sorted(plan.gone_teams)]
    section(lines, "teams", team_lines)
    role_lines = [f"+ {rid} {name}" for rid, name in sorted(plan.new_roles.items())]
    role_lines += [
        f"~ {rid} {current.roles.get(rid)} -> {name}"
        for rid, name in sorted(plan.renamed_roles.items())
    ]
    role_lines += [f"- {rid} {current.roles.get(rid)}" for rid in sorted(plan.gone_roles)]
    section(lines, "roles", role_lines)
    return lines


def section(lines: list[str], title: str, items: list[str], *, count: int | None = None) -> None:
    if items:
        lines.append(f"{title} ({len(items) if count is None else count}):")
        lines.extend(f"  {item}" for item in items)
