"""The ready-made C1 configurations in `integrations/c1/` work under the real tools' rules.

`tests/integrations/c1_tools.py` runs each file as its tool would (real CEL through
cel-python; paging, placeholders, type conversion and trait mapping mirrored from baton-sql's
source and baton-http's authoring guide, each rule citing its file): the baton-http file against a
running service, the baton-sql file on the test's migrated, synced store (SQLite, or
PostgreSQL with TEST_DATABASE_URL, connected through the file's own DSN). Both must yield
exactly the users, teams, roles, workspace, entitlements, grants and profile values (as the
strings the tools store) of `/api/v1/snapshot`, and every YAML key must be one its tool
knows."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.main import create_app
from app.simulator import SimulatorServer
from app.simulator.records import SimAdmin
from app.simulator.webhooks import admin_webhook_item, build_notification, encode_notification
from app.store.engine import normalize_database_url
from harness.service import READ_TOKEN, ROOT, ServiceServer, make_settings, signed_headers, snapshot
from harness.waiting import wait_for
from tests.integrations.c1_tools import (
    BatonHttp,
    BatonSql,
    BatonSqlError,
    clamp_page_size,
    expand_dsn,
    go_percent_s,
    parse_time,
    prepare_query,
    sql_evaluate_string,
    sql_preprocess,
)

HTTP_CONFIG = ROOT / "integrations" / "c1" / "baton-http.yaml"
SQL_CONFIG = ROOT / "integrations" / "c1" / "baton-sql.yaml"
ENV_VAR = re.compile(r"\$\{([A-Za-z0-9_]+)\}")

# Three teammates whose every profile string is asserted literally (issue 12.4).
SEAT_HOLDER = SimAdmin(
    id="990001",
    name="Sam Seat",
    email="sam.seat@acme.example",
    job_title="Support Lead",
    has_inbox_seat=True,
    away_mode_enabled=True,
    away_mode_reassign=False,
)
NO_JOB_TITLE = SimAdmin(
    id="990002", name="Nora Plain", email="nora.plain@acme.example", has_inbox_seat=False
)
SEAT_HOLDER_LOGIN = 1_796_560_245  # 2026-12-06T12:30:45Z
SEAT_HOLDER_LOGIN_TEXT = "2026-12-06T12:30:45Z"


def load(path: Path) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(path.read_text())
    return config


def expand(value: str, env: dict[str, str]) -> str:
    return ENV_VAR.sub(lambda m: env[m.group(1)], value)


def deliver(
    service: ServiceServer, sim: SimulatorServer, topic: str, admin: SimAdmin, **kw: Any
) -> None:
    item = admin_webhook_item(admin)
    if topic == "admin.removed_from_workspace":
        item["team_ids"] = []
    envelope = build_notification(topic, item, app_id=sim.workspace.id_code, **kw)
    body = encode_notification(envelope)
    response = httpx.post(
        f"{service.url}/webhooks/intercom", content=body, headers=signed_headers(body), timeout=10
    )
    assert response.json() == {"status": "accepted"}


@pytest.fixture
def synced(
    start_service: Callable[..., ServiceServer], sim: SimulatorServer
) -> tuple[ServiceServer, dict[str, Any]]:
    """A 2.16 service (roles on) whose store holds a removed teammate's tombstone, a seat
    holder who signed in, a teammate without a job title, and Fin (a service account)."""
    for admin in (SEAT_HOLDER, NO_JOB_TITLE):
        sim.workspace.upsert_admin(admin.copy())
    service = start_service(intercom_api_version="2.16")
    removed = next(
        a
        for a in sorted(sim.workspace.admins.values(), key=lambda a: a.id)
        if a.team_ids and a.role
    )
    deliver(service, sim, "admin.removed_from_workspace", removed)
    deliver(service, sim, "admin.logged_in", SEAT_HOLDER, created_at=SEAT_HOLDER_LOGIN)
    with service.client() as client:

        def applied() -> dict[str, Any] | None:
            body = snapshot(client)
            users = {u["id"]: u for u in body["users"]}
            done = removed.id not in users and users[SEAT_HOLDER.id]["last_login_at"]
            return body if done else None

        body = wait_for(applied, timeout=20, what="the removal and the sign-in to be applied")
    assert body["roles"]
    assert {u["account_type"] for u in body["users"]} == {"human", "service"}
    return service, body


def expected_resources(body: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {
        "user": {u["id"]: u["display_name"] for u in body["users"]},
        "team": {t["id"]: t["display_name"] for t in body["teams"]},
        "role": {r["id"]: r["display_name"] for r in body["roles"]},
        "workspace": {w["id"]: w["display_name"] for w in body["workspaces"]},
    }


def text_of(value: Any) -> str:
    """A snapshot value as the configurations render it: booleans "true"/"false", null ""."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def fin(body: dict[str, Any]) -> dict[str, Any]:
    bot: dict[str, Any]
    (bot,) = [u for u in body["users"] if u["account_type"] == "service"]
    return bot


def run_sync(
    tool: BatonHttp | BatonSql, scope_of: Callable[[str, str, str], dict[str, str]]
) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, str], set[str]]:
    """What a sync gathers: every resource type's resources, then each resource's static
    entitlements and grants, `scope_of(type, id, display name)` being the tool's `resource`."""
    resources = {t: {r["id"]: r for r in tool.resources(t)} for t in tool.config["resource_types"]}
    entitlements: dict[str, str] = {}
    grants: set[str] = set()
    for type_id, found in resources.items():
        for rid, mapped in found.items():
            scope = scope_of(type_id, rid, mapped["display_name"])
            entitlements |= tool.static_entitlements(type_id, scope)
            grants |= tool.grants(type_id, scope)
    return resources, entitlements, grants


# -- baton-http ------------------------------------------------------------------------------


def http_requests(config: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for type_id, resource_type in config["resource_types"].items():
        yield type_id, resource_type["list"]
        for grant in resource_type.get("grants", []):
            yield type_id, grant


def _route_shape(path: str) -> str:
    path = path.removeprefix("tmpl:")
    return re.sub(r"\{\{[^}]*\}\}|\{[^}]*\}", "{}", path)


class TestBatonHttp:
    def test_the_file_is_a_baton_http_config_with_bearer_auth_and_cursor_paging(self) -> None:
        config = load(HTTP_CONFIG)
        assert config["version"] == "1"
        assert config["app_name"]
        connect = config["connect"]
        assert ENV_VAR.fullmatch(connect["base_url"])
        assert connect["auth"]["type"] == "bearer"
        assert ENV_VAR.fullmatch(connect["auth"]["token"]), "the token comes from the environment"
        assert connect["pagination"] == {
            "strategy": "cursor",
            "limit_param": "limit",
            "cursor_param": "cursor",
            "cursor_path": "next_cursor",
            "page_size": connect["pagination"]["page_size"],
        }
        assert 1 <= connect["pagination"]["page_size"] <= 1000
        types = config["resource_types"]
        assert {k: v["traits"] for k, v in types.items()} == {
            "user": ["user"],
            "team": ["group"],
            "role": ["role"],
            "workspace": [],
        }
        assert [e["id"] for e in types["team"]["static_entitlements"]] == ["member"]
        assert [e["id"] for e in types["role"]["static_entitlements"]] == ["assigned"]
        assert [e["id"] for e in types["workspace"]["static_entitlements"]] == ["member"]
        # The guide shows `resource` in entitlements and URL templates, not in skip_if: none
        # is needed, since every grant list is one resource's own.
        assert all("skip_if" not in block["response"] for _, block in http_requests(config))

    def test_every_request_path_is_a_get_route_of_the_app(self, database_url: str) -> None:
        # The app builds its document from its routes: no need to serve it.
        document = create_app(make_settings(database_url, None)).openapi()
        routes = {_route_shape(path): ops for path, ops in document["paths"].items()}
        for type_id, block in http_requests(load(HTTP_CONFIG)):
            request = block["request"]
            assert request.get("method", "GET") == "GET"
            shape = _route_shape(request["url"])
            assert shape in routes, f"{type_id}: {request['url']} is not a route"
            assert "get" in routes[shape]

    def test_running_the_config_against_the_service_yields_the_snapshot(
        self, synced: tuple[ServiceServer, dict[str, Any]]
    ) -> None:
        service, body = synced
        config = load(HTTP_CONFIG)
        used = set(ENV_VAR.findall(HTTP_CONFIG.read_text()))
        env = {"INTERCOM_SYNC_URL": service.url, "INTERCOM_SYNC_READ_TOKEN": READ_TOKEN}
        assert used == set(env)
        connect = config["connect"]
        headers = {
            **connect["request_defaults"]["headers"],
            "Authorization": f"Bearer {expand(connect['auth']['token'], env)}",
        }
        with httpx.Client(
            base_url=expand(connect["base_url"], env), headers=headers, timeout=30
        ) as http:

            def get(url: str, params: dict[str, Any]) -> Any:
                response = http.get(url, params=params)
                assert response.status_code == 200, (url, response.text)
                return response.json()

            # Small pages, so the cursor is really followed.
            tool = BatonHttp(config, get, page_size=4)
            # `resource` as the guide names it in entitlements and URL templates.
            resources, entitlements, grants = run_sync(
                tool, lambda _, rid, name: {"id": rid, "display_name": name}
            )

        assert {
            t: {i: r["display_name"] for i, r in rs.items()} for t, rs in resources.items()
        } == expected_resources(body)
        for user in body["users"]:
            assert resources["user"][user["id"]]["user_traits"] == {
                "email": user["email"],
                "login": user["login"],
                "status": "enabled",
                "account_type": user["account_type"],
                "profile": {
                    "email": text_of(user["email"]),
                    "account_type": user["account_type"],
                    "last_login_at": text_of(user["last_login_at"]),
                    **{k: text_of(v) for k, v in user["profile"].items()},
                },
            }
        traits = {uid: r["user_traits"] for uid, r in resources["user"].items()}
        assert traits[SEAT_HOLDER.id]["profile"] == {
            "email": "sam.seat@acme.example",
            "account_type": "human",
            "job_title": "Support Lead",
            "has_inbox_seat": "true",
            "away_mode_enabled": "true",
            "away_mode_reassign": "false",
            "last_login_method": "",  # no sign-in read from the log
            "last_login_at": SEAT_HOLDER_LOGIN_TEXT,
        }
        assert traits[NO_JOB_TITLE.id]["profile"] == {
            "email": "nora.plain@acme.example",
            "account_type": "human",
            "job_title": "",
            "has_inbox_seat": "false",
            "away_mode_enabled": "false",
            "away_mode_reassign": "false",
            "last_login_method": "",  # no sign-in read from the log
            "last_login_at": "",
        }
        bot = fin(body)
        assert traits[bot["id"]]["account_type"] == "service"
        assert traits[bot["id"]]["profile"] == {
            "email": bot["email"],
            "account_type": "service",
            "job_title": "",
            "has_inbox_seat": "true",
            "away_mode_enabled": "false",
            "away_mode_reassign": "false",
            "last_login_method": "",  # no sign-in read from the log
            "last_login_at": "",
        }
        assert entitlements == {e["id"]: e["display_name"] for e in body["entitlements"]}
        assert grants == {g["id"] for g in body["grants"]}
        # One list per resource type and one member list per team, role and workspace.
        assert tool.pages > len(body["teams"]) + len(body["roles"]) + 4
        # The workspace's grants are every active teammate's, read from its member pages.
        (workspace,) = body["workspaces"]
        assert {g for g in grants if g.startswith("workspace:")} == {
            f"workspace:{workspace['id']}:member:user:{u['id']}" for u in body["users"]
        }


# -- baton-sql -------------------------------------------------------------------------------


class TestBatonSqlRules:
    """The mirrored rules themselves, on the cases the source names."""

    def test_columns_become_cols_lookups_and_a_bare_word_is_a_string(self) -> None:
        assert sql_preprocess(".email") == "cols['email']"
        assert sql_preprocess("user") == '"user"'
        assert sql_preprocess("resource.DisplayName + ' Role'") == "resource.DisplayName + ' Role'"
        assert sql_preprocess(".a + .b") == "cols['a'] + cols['b']"

    def test_evaluate_string_keeps_strings_and_integers_and_garbles_the_rest(self) -> None:
        row = {"s": "x", "n": 7, "t": True, "f": False, "z": None, "d": 1.5}
        inputs = {"cols": row}
        when = datetime(2026, 12, 6, 12, 30, 45, tzinfo=UTC)
        assert {k: sql_evaluate_string(f".{k}", inputs) for k in row} == {
            "s": "x",
            "n": "7",
            "t": "%!s(bool=true)",
            "f": "%!s(bool=false)",
            "z": "NULL_VALUE",
            "d": "%!s(float64=1.5)",
        }
        assert go_percent_s(when) == "2026-12-06 12:30:45 +0000 UTC"

    def test_placeholders_bind_limit_plus_one_the_cursor_and_declared_vars_only(self) -> None:
        sql, params = prepare_query(
            "SELECT 1 WHERE a = ?<Team_ID> AND id > ?<Cursor> LIMIT ?<Limit> OFFSET ?<offset>",
            limit=4,
            offset=0,
            cursor="",
            variables={"team_id": "7", "unused": "ignored"},
        )
        assert sql == "SELECT 1 WHERE a = :p1 AND id > :p2 LIMIT :p3 OFFSET :p4"
        assert params == {"p1": "7", "p2": "", "p3": 5, "p4": 0}
        with pytest.raises(BatonSqlError, match=r"unknown token \?<role_id>"):
            prepare_query("SELECT ?<role_id>", limit=1, offset=0, cursor="", variables={})
        assert [clamp_page_size(n, None) for n in (0, -3, 1, 1000, 5000)] == [100, 1, 1, 1000, 1000]
        assert clamp_page_size(0, 250) == 250


DSN_VARIABLES = {
    "INTERCOM_SYNC_DB_HOST",
    "INTERCOM_SYNC_DB_PORT",
    "INTERCOM_SYNC_DB_NAME",
    "INTERCOM_SYNC_DB_USER",
    "INTERCOM_SYNC_DB_PASSWORD",
    "INTERCOM_SYNC_DB_SSLMODE",
}


def dsn_env(database_url: str, sslmode: str) -> dict[str, str]:
    """The variables that point the DSN at a PostgreSQL store's URL."""
    url = make_url(database_url)
    return {
        "INTERCOM_SYNC_DB_HOST": url.host or "",
        "INTERCOM_SYNC_DB_PORT": str(url.port or 5432),
        "INTERCOM_SYNC_DB_NAME": url.database or "",
        "INTERCOM_SYNC_DB_USER": url.username or "",
        "INTERCOM_SYNC_DB_PASSWORD": url.password or "",
        "INTERCOM_SYNC_DB_SSLMODE": sslmode,
    }


def sql_connection_url(config: dict[str, Any], database_url: str) -> str:
    """Where the tool connects: on PostgreSQL through the file's DSN expanded as baton-sql
    expands it (the test cluster runs on a port of its own, without TLS); on SQLite, which no
    baton-sql release opens, the test's store itself, so the queries still run there."""
    if make_url(database_url).get_backend_name() != "postgresql":
        return normalize_database_url(database_url)
    dsn = expand_dsn(config["connect"]["dsn"], dsn_env(database_url, "disable"))
    return normalize_database_url(dsn)


class TestBatonSql:
    def test_the_dsn_takes_host_port_database_credentials_and_sslmode_each_from_a_variable(
        self,
    ) -> None:
        dsn = load(SQL_CONFIG)["connect"]["dsn"]
        assert set(ENV_VAR.findall(dsn)) == DSN_VARIABLES
        assert set(ENV_VAR.findall(SQL_CONFIG.read_text())) == DSN_VARIABLES
        env = {
            "INTERCOM_SYNC_DB_HOST": "db.internal",
            "INTERCOM_SYNC_DB_PORT": "5499",
            "INTERCOM_SYNC_DB_NAME": "intercom_sync",
            "INTERCOM_SYNC_DB_USER": "c1_reader",
            "INTERCOM_SYNC_DB_PASSWORD": "s3cret",
            "INTERCOM_SYNC_DB_SSLMODE": "verify-full",
        }
        url = make_url(expand_dsn(dsn, env))
        # No release opens SQLite: the DSN is PostgreSQL's (pkg/database/database.go).
        assert url.drivername == "postgres"
        assert (url.host, url.port, url.database) == ("db.internal", 5499, "intercom_sync")
        assert (url.username, url.password) == ("c1_reader", "s3cret")
        assert dict(url.query) == {"sslmode": "verify-full"}
        # Nothing is fixed in the file: a port of 5432 or an sslmode comes from a variable.
        assert ":5432" not in dsn
        assert "sslmode=require" not in dsn
        # baton-sql has no defaults: an unset variable stops it, naming the variable.
        with pytest.raises(BatonSqlError, match="environment variable INTERCOM_SYNC_DB_PORT"):
            expand_dsn(dsn, {k: v for k, v in env.items() if k != "INTERCOM_SYNC_DB_PORT"})

    def test_the_file_is_a_baton_sql_config_over_the_reader_view_and_tables(self) -> None:
        config = load(SQL_CONFIG)
        assert config["app_name"]
        assert ENV_VAR.search(config["connect"]["dsn"]), "credentials come from the environment"
        assert set(config["resource_types"]) == {"user", "team", "role", "workspace"}
        everything = SQL_CONFIG.read_text()
        # Teammates only through c1_user (active, text columns), never the raw table.
        assert not re.search(r'(?i)\b(from|join)\s+("user"|user)\b', everything)
        assert "c1_user" in config["resource_types"]["user"]["list"]["query"]
        # grants.go runs only the first grants query of a resource type.
        assert all(len(t.get("grants", [])) <= 1 for t in config["resource_types"].values())

    def test_every_query_runs_on_the_store_and_yields_the_snapshot(
        self, synced: tuple[ServiceServer, dict[str, Any]], database_url: str
    ) -> None:
        _, body = synced
        config = load(SQL_CONFIG)
        engine = create_engine(sql_connection_url(config, database_url))
        try:
            # Small pages, so the cursor is really followed.
            tool = BatonSql(engine, config, page_size=4)
            # pkg/bcel/bcel.go, BaseInputsWithResource: `resource` for entitlements and grants.
            resources, entitlements, grants = run_sync(
                tool,
                lambda type_id, rid, name: {
                    "ID": rid,
                    "ResourceTypeID": type_id,
                    "DisplayName": name,
                },
            )
        finally:
            engine.dispose()

        assert tool.warnings == []
        assert {
            t: {i: r["display_name"] for i, r in rs.items()} for t, rs in resources.items()
        } == expected_resources(body)
        for user in body["users"]:
            last_login = user["last_login_at"]
            assert resources["user"][user["id"]]["user"] == {
                "emails": [user["email"]],
                "login": user["login"],
                "status": "ENABLED",
                "account_type": user["account_type"].upper(),
                "last_login": (
                    datetime.fromisoformat(last_login) if last_login is not None else None
                ),
                "profile": {k: text_of(v) for k, v in user["profile"].items()},
            }
        traits = {uid: r["user"] for uid, r in resources["user"].items()}
        assert traits[SEAT_HOLDER.id]["last_login"] == datetime.fromisoformat(
            SEAT_HOLDER_LOGIN_TEXT
        )
        assert traits[SEAT_HOLDER.id]["profile"] == {
            "job_title": "Support Lead",
            "has_inbox_seat": "true",
            "away_mode_enabled": "true",
            "away_mode_reassign": "false",
            "last_login_method": "",  # no sign-in read from the log
        }
        assert traits[NO_JOB_TITLE.id]["last_login"] is None
        assert traits[NO_JOB_TITLE.id]["profile"] == {
            "job_title": "",
            "has_inbox_seat": "false",
            "away_mode_enabled": "false",
            "away_mode_reassign": "false",
            "last_login_method": "",  # no sign-in read from the log
        }
        bot = fin(body)
        assert traits[bot["id"]]["account_type"] == "SERVICE"
        assert traits[bot["id"]]["profile"] == {
            "job_title": "",
            "has_inbox_seat": "true",
            "away_mode_enabled": "false",
            "away_mode_reassign": "false",
            "last_login_method": "",  # no sign-in read from the log
        }
        assert entitlements == {e["id"]: e["display_name"] for e in body["entitlements"]}
        assert grants == {g["id"] for g in body["grants"]}
        assert tool.queries > len(body["teams"]) + len(body["roles"]) + 1

    def test_the_reader_view_is_what_the_raw_table_would_garble(
        self, synced: tuple[ServiceServer, dict[str, Any]], database_url: str
    ) -> None:
        """Why c1_user exists: the same columns read from "user" come out of EvaluateString
        as Go's %s of a NULL, a boolean and a timestamp (the last not a last login)."""
        engine = create_engine(normalize_database_url(database_url))
        query = "SELECT has_inbox_seat, job_title, {login} FROM {table} WHERE id = :id"
        try:
            with engine.connect() as connection:

                def row(table: str, login: str, admin: SimAdmin) -> dict[str, Any]:
                    sql = text(query.format(table=table, login=login))
                    return dict(connection.execute(sql, {"id": admin.id}).one()._mapping)

                raw_seat = row('"user"', "last_login_at", SEAT_HOLDER)
                raw_plain = row('"user"', "last_login_at", NO_JOB_TITLE)
                view_seat = row("c1_user", "last_login", SEAT_HOLDER)
                view_plain = row("c1_user", "last_login", NO_JOB_TITLE)
        finally:
            engine.dispose()

        def strings(cols: dict[str, Any]) -> dict[str, str]:
            return {k: sql_evaluate_string(f".{k}", {"cols": cols}) for k in cols}

        assert strings(raw_plain)["job_title"] == "NULL_VALUE"
        assert strings(raw_plain)["last_login_at"] == "NULL_VALUE"
        if engine.dialect.name == "postgresql":
            assert strings(raw_seat) == {
                "has_inbox_seat": "%!s(bool=true)",
                "job_title": "Support Lead",
                "last_login_at": "2026-12-06 12:30:45 +0000 UTC",
            }
            assert parse_time(strings(raw_seat)["last_login_at"]) is None
        assert strings(view_seat) == {
            "has_inbox_seat": "true",
            "job_title": "Support Lead",
            "last_login": SEAT_HOLDER_LOGIN_TEXT,
        }
        assert strings(view_plain) == {
            "has_inbox_seat": "false",
            "job_title": "",
            "last_login": "",
        }


# The YAML keys baton-sql knows: the `yaml:"…"` struct tags of ConductorOne/baton-sql
# pkg/bsql/config.go (Config, DatabaseConfig, ResourceType, ListQuery, ResourceMapping,
# Traits, UserTraitMapping, GroupTraitMapping, RoleTraitMapping, Pagination,
# EntitlementMapping, GrantsQuery, GrantMapping). Maps of free keys (profile, vars,
# resource_types, params) are not checked below their own level.
_SQL_SCHEMA: dict[str, Any] = {
    "app_name": None,
    "app_description": None,
    "connect": dict.fromkeys(
        ("dsn", "scheme", "host", "port", "database", "user", "password", "params")
    ),
    "resource_types": "*",
    "actions": None,
}
_PAGINATION = {"strategy": None, "primary_key": None, "page_size": None}
_TRAITS = {
    "user": dict.fromkeys(
        (
            "emails",
            "status",
            "status_details",
            "profile",
            "account_type",
            "login",
            "login_aliases",
            "last_login",
            "employee_ids",
            "manager_id",
            "manager_email",
            "mfa_enabled",
            "sso_enabled",
        )
    ),
    "group": {"profile": None},
    "role": {"profile": None},
    "app": {"help_url": None, "profile": None},
}
_ENTITLEMENT = dict.fromkeys(
    (
        "id",
        "display_name",
        "description",
        "grantable_to",
        "purpose",
        "slug",
        "immutable",
        "skip_if",
        "provisioning",
        "exclusion_group",
    )
)
_RESOURCE_TYPE: dict[str, Any] = {
    "name": None,
    "description": None,
    "skip_entitlements_and_grants": None,
    "account_provisioning": None,
    "credential_rotation": None,
    "list": {
        "vars": None,
        "query": None,
        "pagination": _PAGINATION,
        "map": {
            "id": None,
            "display_name": None,
            "description": None,
            "traits": _TRAITS,
            "annotations": None,
        },
    },
    "entitlements": {"vars": None, "query": None, "pagination": _PAGINATION, "map": [_ENTITLEMENT]},
    "static_entitlements": [_ENTITLEMENT],
    "grants": [
        {
            "vars": None,
            "query": None,
            "pagination": _PAGINATION,
            "map": [
                dict.fromkeys(
                    (
                        "skip_if",
                        "principal_id",
                        "principal_type",
                        "entitlement_id",
                        "annotations",
                        "expandable",
                    )
                )
            ],
        }
    ],
}


def unknown_keys(
    data: Any, schema: Any, resource_type: dict[str, Any], where: str = ""
) -> list[str]:
    """Every key of `data` that `schema` does not list; `"*"` is a map of resource types."""
    if schema is None:
        return []
    if schema == "*":
        return [
            p
            for k, v in data.items()
            for p in unknown_keys(v, resource_type, resource_type, f"{where}.{k}")
        ]
    if isinstance(schema, list):
        return [
            p
            for i, v in enumerate(data)
            for p in unknown_keys(v, schema[0], resource_type, f"{where}[{i}]")
        ]
    found = []
    for key, value in data.items():
        if key not in schema:
            found.append(f"{where}.{key}")
        else:
            found += unknown_keys(value, schema[key], resource_type, f"{where}.{key}")
    return found


def unknown_sql_keys(data: Any) -> list[str]:
    """Every key of a baton-sql config that pkg/bsql/config.go has no yaml tag for."""
    return unknown_keys(data, _SQL_SCHEMA, _RESOURCE_TYPE)


class TestBatonSqlKeys:
    def test_every_key_of_the_config_is_one_baton_sql_knows(self) -> None:
        assert unknown_sql_keys(load(SQL_CONFIG)) == []

    def test_a_misspelled_key_is_rejected(self) -> None:
        config = load(SQL_CONFIG)
        config["resource_types"]["user"]["list"]["map"]["traits"]["user"]["last_logon"] = ".x"
        config["resource_types"]["team"]["grants"][0]["pagniation"] = {}
        assert unknown_sql_keys(config) == [
            ".resource_types.user.list.map.traits.user.last_logon",
            ".resource_types.team.grants[0].pagniation",
        ]


# The YAML keys baton-http knows, as ConductorOne/docs developer/http-authoring.mdx lists and
# shows them (its source is not public): the top-level and resource type tables, and the keys
# of every example (connect, auth, pagination, requests, responses, mappings, entitlements,
# grants, provisioning, http, error_handling). Free maps (headers, query_params, vars,
# profile, error_status_codes, resource_types) are not checked below their own level.
_HTTP_PAGINATION = dict.fromkeys(
    (
        "strategy",
        "limit_param",
        "offset_param",
        "cursor_param",
        "cursor_path",
        "page_param",
        "page_start",
        "page_size",
        "total_path",
        "link_next_path",
    )
)
_HTTP_REQUEST: dict[str, Any] = dict.fromkeys(
    ("method", "url", "headers", "query_params", "body", "pre_requests", "pagination")
)
_HTTP_USER_TRAITS = {"email": None, "login": None, "status": None, "profile": None}
# Issue 12.3 asks for account_type, which the guide's examples do not show (see docs/c1.md).
HTTP_KEYS_BEYOND_THE_GUIDE = {
    ".resource_types.user.list.response.resource_mapping.user_traits.account_type"
}
_HTTP_RESPONSE: dict[str, Any] = {
    "items_path": None,
    "mapping_type": None,
    "skip_if": None,
    "resource_mapping": {
        "id": None,
        "display_name": None,
        "description": None,
        "user_traits": {**_HTTP_USER_TRAITS, "account_type": None},
        "group_traits": {"profile": None},
    },
    "grant_mapping": dict.fromkeys(("principal_id", "principal_type", "entitlement_name")),
    "entitlement_mapping": dict.fromkeys(
        ("id", "display_name", "description", "slug", "purpose", "grantable_to")
    ),
}
_HTTP_BLOCK = {"request": _HTTP_REQUEST, "response": _HTTP_RESPONSE}
# "Provisioning": a grant and a revoke, each a request and a `success_condition`.
_HTTP_PROVISIONING_ACTION = {"request": _HTTP_REQUEST, "success_condition": None}
_HTTP_ENTITLEMENT = {
    **dict.fromkeys(("id", "display_name", "description", "slug", "purpose", "grantable_to")),
    "provisioning": {"grant": _HTTP_PROVISIONING_ACTION, "revoke": _HTTP_PROVISIONING_ACTION},
}
_HTTP_RESOURCE_TYPE: dict[str, Any] = {
    "name": None,
    "description": None,
    "traits": None,
    "depends_on": None,
    "parent_type": None,
    "child_types": None,
    "list": _HTTP_BLOCK,
    "static_resources": None,
    "static_entitlements": [_HTTP_ENTITLEMENT],
    "entitlements": [_HTTP_BLOCK],
    "grants": [_HTTP_BLOCK],
    "skip_entitlements_and_grants": None,
}
_HTTP_SCHEMA: dict[str, Any] = {
    "version": None,
    "app_name": None,
    "app_description": None,
    "vars": None,
    "connect": {
        "base_url": None,
        "auth": dict.fromkeys(
            (
                "type",
                "token",
                "username",
                "password",
                "api_key",
                "oauth2_client_credentials",
                "oauth2_password",
                "bearer_dynamic",
            )
        ),
        "request_defaults": dict.fromkeys(("content_type", "headers", "query_params")),
        "pagination": _HTTP_PAGINATION,
    },
    "http": {"timeout": None, "headers": None, "retry": None},
    "resource_types": "*",
    "error_handling": {"error_status_codes": None},
    "actions": None,
}


def unknown_http_keys(data: Any) -> list[str]:
    """Every key of a baton-http config that the authoring guide does not show."""
    return unknown_keys(data, _HTTP_SCHEMA, _HTTP_RESOURCE_TYPE)


def beyond_the_guide(data: dict[str, Any]) -> set[str]:
    """The keys the guide shows nowhere, `account_type` (not in its examples) included."""
    strict = {**_HTTP_RESPONSE["resource_mapping"], "user_traits": _HTTP_USER_TRAITS}
    response = {**_HTTP_RESPONSE, "resource_mapping": strict}
    resource_type = {
        **_HTTP_RESOURCE_TYPE,
        "list": {"request": _HTTP_REQUEST, "response": response},
    }
    return set(unknown_keys(data, {**_HTTP_SCHEMA, "connect": None}, resource_type))


class TestBatonHttpKeys:
    def test_every_key_of_the_config_is_one_the_authoring_guide_shows(self) -> None:
        config = load(HTTP_CONFIG)
        assert unknown_http_keys(config) == []
        assert beyond_the_guide(config) == HTTP_KEYS_BEYOND_THE_GUIDE

    def test_a_misspelled_key_is_rejected(self) -> None:
        config = load(HTTP_CONFIG)
        config["connect"]["pagination"]["cursor_pth"] = "next"
        config["resource_types"]["team"]["grants"][0]["response"]["grant_maping"] = {}
        config["resource_types"]["user"]["list"]["response"]["resource_mapping"]["user_traits"][
            "emial"
        ] = "cel:item.email"
        config["resource_types"]["team"]["static_entitlements"][0]["provisioning"]["revoke"][
            "sucess_condition"
        ] = "cel:true"
        assert unknown_http_keys(config) == [
            ".connect.pagination.cursor_pth",
            ".resource_types.user.list.response.resource_mapping.user_traits.emial",
            ".resource_types.team.static_entitlements[0].provisioning.revoke.sucess_condition",
            ".resource_types.team.grants[0].response.grant_maping",
        ]
