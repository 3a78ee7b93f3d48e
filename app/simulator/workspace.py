"""Deterministic sample workspaces for tests, the demo and benchmarks."""

from __future__ import annotations

import random
import string

from app.simulator.records import Role, SimAdmin, SimTeam
from app.simulator.state import SimWorkspace

FIRST_ADMIN_ID = 991267400
FIRST_TEAM_ID = 814800
ROLES: tuple[Role, ...] = (("1", "Admin"), ("2", "Support Agent"), ("3", "Viewer"))

_FIRST_NAMES = (
    "Ada", "Amir", "Bea", "Bo", "Carla", "Chen", "Dana", "Diego", "Eli", "Emeka",
    "Fatima", "Finn", "Grace", "Hana", "Ivan", "Jade", "Jonas", "Kai", "Lena", "Luis",
    "Maya", "Mateo", "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tariq", "Uma",
    "Vera", "Wei", "Xena", "Yusuf", "Zoe", "Ciaran", "Aoife", "Kenji", "Leila", "Tomás",
)  # fmt: skip
_LAST_NAMES = (
    "Lee", "Garcia", "Okafor", "Nguyen", "Schmidt", "Rossi", "Kowalski", "Haddad", "Silva",
    "Tanaka", "Murphy", "Novak", "Andersen", "Cohen", "Dubois", "Ibrahim", "Kim", "Larsen",
    "Mensah", "Patel", "Quispe", "Reyes", "Sato", "Walsh", "Yilmaz", "Zhang", "Williams",
    "Fischer", "Moreau", "Petrov",
)  # fmt: skip
_JOB_TITLES = (
    "Support Engineer",
    "Senior Support Engineer",
    "Customer Success Manager",
    "Support Team Lead",
    "Head of Support",
    "Technical Account Manager",
    "Billing Specialist",
    "Solutions Engineer",
    "Account Executive",
    "Community Manager",
)
_TEAM_NAMES = (
    "Tier 1 Support",
    "Tier 2 Support",
    "Billing",
    "Onboarding",
    "Enterprise Success",
    "Escalations",
    "EMEA Support",
    "APAC Support",
    "Sales",
    "Product Specialists",
    "VIP",
    "Trust & Safety",
)


def _team_name(index: int) -> str:
    base = _TEAM_NAMES[index % len(_TEAM_NAMES)]
    cycle = index // len(_TEAM_NAMES)
    return base if cycle == 0 else f"{base} {cycle + 1}"


def generate_workspace(
    n_admins: int = 40,
    n_teams: int = 8,
    *,
    seed: int = 1,
    memberships_per_admin: tuple[int, int] = (1, 3),
    include_bot: bool = True,
    with_roles: bool = True,
    id_code: str = "sim0ws01",
    name: str = "Acme Support",
    region: str = "US",
) -> SimWorkspace:
    """A deterministic workspace: ``n_admins`` admins (Fin, the bot, last), ``n_teams`` teams."""
    # Fin counts toward n_admins so len(ws.admins) == n_admins, and needs at least one human beside.
    rng = random.Random(seed)
    teams = [
        SimTeam(id=str(FIRST_TEAM_ID + i), name=_team_name(i), admin_ids=[]) for i in range(n_teams)
    ]
    with_bot = include_bot and n_admins >= 2
    n_humans = n_admins - 1 if with_bot else max(n_admins, 0)
    low, high = memberships_per_admin
    low, high = min(max(low, 0), n_teams), min(max(high, low), n_teams)

    admins: list[SimAdmin] = []
    emails_seen: dict[str, int] = {}
    team_indices = range(n_teams)
    for i in range(n_humans):
        admin_id = str(FIRST_ADMIN_ID + i)
        first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
        local = f"{first}.{last}".lower().replace("á", "a")
        seen = emails_seen.get(local, 0)
        emails_seen[local] = seen + 1
        email = f"{local}{seen + 1 if seen else ''}@acme.example"
        picks = sorted(rng.sample(team_indices, rng.randint(low, high))) if high else []
        for t in picks:
            teams[t].admin_ids.append(admin_id)
        away = rng.random() < 0.05
        admins.append(
            SimAdmin(
                id=admin_id,
                name=f"{first} {last}",
                email=email,
                # Real workspaces often leave the job title unset.
                job_title=rng.choice(_JOB_TITLES) if rng.random() < 0.7 else None,
                away_mode_enabled=away,
                away_mode_reassign=away and rng.random() < 0.5,
                has_inbox_seat=rng.random() < 0.85,
                team_ids=[teams[t].id for t in picks],
                role=ROLES[i % len(ROLES)] if with_roles else None,
                avatar_url=(
                    f"https://static.intercomassets.com/avatars/{admin_id}/square_128/avatar.png"
                    if rng.random() < 0.5
                    else None
                ),
            )
        )
    if with_bot:
        code = "".join(rng.choices(string.ascii_lowercase + string.digits, k=8))
        admins.append(
            SimAdmin(
                id=str(FIRST_ADMIN_ID + n_humans),
                name="Fin",
                email=f"operator+{code}@intercom.io",
                has_inbox_seat=True,
            )
        )
    return SimWorkspace(id_code=id_code, name=name, region=region, admins=admins, teams=teams)
