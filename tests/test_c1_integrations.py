"""The ready-made C1 configurations in `integrations/c1/` work against the real service.

Each file is run by a small interpreter of the subset of its connector's format it uses: the
baton-http file's requests go to a running service (every path must be a route of the app,
every `items_path` and every field its CEL mappings name must exist in the real JSON); the
baton-sql file's queries run on the test's migrated, synced store (SQLite or PostgreSQL). Both
must yield exactly the users, teams, roles, entitlements and grants of the snapshot."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import create_engine, text

from app.main import create_app
from app.simulator import SimulatorServer
from app.simulator.webhooks import admin_webhook_item, build_notification, encode_notification
from app.store.engine import normalize_database_url
from tests.support import (
    READ_TOKEN,
    ROOT,
    ServiceServer,
    make_settings,
    signed_headers,
    snapshot,
    wait_for,
)

HTTP_CONFIG = ROOT / "integrations" / "c1" / "baton-http.yaml"
SQL_CONFIG = ROOT / "integrations" / "c1" / "baton-sql.yaml"
ENV_VAR = re.compile(r"\$\{([A-Za-z0-9_]+)\}")


def load(path: Path) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(path.read_text())
    return config


# -- a tiny CEL subset: paths, string literals, `+`, `==` / `!=` ------------------------------

_TOKEN = re.compile(
    r"""\s*(?:(?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|(?P<op>==|!=|\+)"""
    r"""|(?P<path>\.?[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*))"""
)


def cel(expression: str, resolve: Callable[[str], Any]) -> Any:
    """Evaluate `expression`; `resolve` turns a path (`item.a.b`, `.col`) into its value and
    raises KeyError when the real data has no such field."""
    tokens: list[tuple[str, str]] = []
    position = 0
    source = expression.strip()
    while position < len(source):
        match = _TOKEN.match(source, position)
        assert match is not None, f"unsupported CEL: {expression!r}"
        assert match.end() > position, f"unsupported CEL: {expression!r}"
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
        position = match.end()
        while position < len(source) and source[position].isspace():
            position += 1

    def atom(token: tuple[str, str]) -> Any:
        kind, value = token
        if kind == "str":
            return value[1:-1]
        assert kind == "path", f"unexpected {value!r} in {expression!r}"
        return resolve(value)

    def sum_of(part: list[tuple[str, str]]) -> Any:
        assert len(part) % 2 == 1, f"malformed CEL: {expression!r}"
        result = atom(part[0])
        for i in range(1, len(part), 2):
            assert part[i] == ("op", "+"), f"unsupported CEL: {expression!r}"
            result = result + atom(part[i + 1])
        return result

    comparisons = [i for i, t in enumerate(tokens) if t in (("op", "=="), ("op", "!="))]
    if not comparisons:
        return sum_of(tokens)
    assert len(comparisons) == 1, f"unsupported CEL: {expression!r}"
    i = comparisons[0]
    left, right = sum_of(tokens[:i]), sum_of(tokens[i + 1 :])
    return left == right if tokens[i][1] == "==" else left != right


def walk(data: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        if not isinstance(data, dict) or key not in data:
            raise KeyError(f"{dotted!r}: no {key!r} in the real response")
        data = data[key]
    return data


def expand(value: str, env: dict[str, str]) -> str:
    return ENV_VAR.sub(lambda m: env[m.group(1)], value)


def deliver_removal(service: ServiceServer, sim: SimulatorServer, admin_id: str) -> None:
    admin = sim.workspace.get_admin(admin_id)
    assert admin is not None
    item = admin_webhook_item(admin)
    item["team_ids"] = []
    envelope = build_notification(
        "admin.removed_from_workspace", item, app_id=sim.workspace.id_code
    )
    body = encode_notification(envelope)
    response = httpx.post(
        f"{service.url}/webhooks/intercom", content=body, headers=signed_headers(body), timeout=10
    )
    assert response.json() == {"status": "accepted"}


@pytest.fixture
def synced(
    start_service: Callable[..., ServiceServer], sim: SimulatorServer
) -> tuple[ServiceServer, dict[str, Any]]:
    """A 2.16 service (roles on) whose store holds a removed teammate's tombstone."""
    service = start_service(intercom_api_version="2.16")
    removed = next(
        a
        for a in sorted(sim.workspace.admins.values(), key=lambda a: a.id)
        if a.team_ids and a.role
    )
    deliver_removal(service, sim, removed.id)
    with service.client() as client:

        def removal_applied() -> dict[str, Any] | None:
            body = snapshot(client)
            return body if removed.id not in {u["id"] for u in body["users"]} else None

        body = wait_for(removal_applied, timeout=20, what="the removal to be applied")
    assert body["roles"]
    return service, body


def expected_resources(body: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {
        "user": {u["id"]: u["display_name"] for u in body["users"]},
        "team": {t["id"]: t["display_name"] for t in body["teams"]},
        "role": {r["id"]: r["display_name"] for r in body["roles"]},
    }


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
        }
        user_traits = types["user"]["list"]["response"]["resource_mapping"]["user_traits"]
        assert {"email", "login", "status", "profile"} <= set(user_traits)
        assert [e["id"] for e in types["team"]["static_entitlements"]] == ["member"]
        assert [e["id"] for e in types["role"]["static_entitlements"]] == ["assigned"]

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
        paging = connect["pagination"]
        headers = {
            **connect["request_defaults"]["headers"],
            "Authorization": f"Bearer {expand(connect['auth']['token'], env)}",
        }
        pages_read = 0
        # Small pages, so the cursor is really followed.
        page_size = 4

        def fetch_items(url: str, items_path: str) -> Iterator[dict[str, Any]]:
            nonlocal pages_read
            cursor = None
            with httpx.Client(base_url=expand(connect["base_url"], env), timeout=30) as http:
                while True:
                    params: dict[str, Any] = {paging["limit_param"]: page_size}
                    if cursor:
                        params[paging["cursor_param"]] = cursor
                    response = http.get(url, params=params, headers=headers)
                    assert response.status_code == 200, (url, response.text)
                    page = response.json()
                    pages_read += 1
                    yield from walk(page, items_path)
                    cursor = walk(page, paging["cursor_path"])
                    if not cursor:
                        return

        resources: dict[str, dict[str, dict[str, Any]]] = {}
        for type_id, resource_type in config["resource_types"].items():
            block = resource_type["list"]
            assert block["response"]["mapping_type"] == "resource"
            mapping = block["response"]["resource_mapping"]
            found: dict[str, dict[str, Any]] = {}
            for item in fetch_items(block["request"]["url"], block["response"]["items_path"]):
                mapped = self._map(mapping, {"item": item})
                found[mapped["id"]] = mapped
            resources[type_id] = found

        assert {
            t: {i: r["display_name"] for i, r in rs.items()} for t, rs in resources.items()
        } == (expected_resources(body))
        for user in body["users"]:
            mapped = resources["user"][user["id"]]["user_traits"]
            assert mapped["email"] == user["email"]
            assert mapped["login"] == user["login"]
            assert mapped["status"] == "enabled"
            assert mapped["profile"] == {
                "email": user["email"],
                "account_type": user["account_type"],
                "last_login_at": user["last_login_at"],
                **user["profile"],
            }

        entitlements: dict[str, str] = {}
        grants: set[str] = set()
        for type_id, resource_type in config["resource_types"].items():
            for rid, mapped in resources[type_id].items():
                scope = {"resource": {"id": rid, "display_name": mapped["display_name"]}}
                for static in resource_type.get("static_entitlements", []):
                    assert static["purpose"] == "assignment"
                    assert static["grantable_to"] == ["user"]
                    name = self._value(static["display_name"], scope)
                    entitlements[f"{type_id}:{rid}:{static['id']}"] = name
                for block in resource_type.get("grants", []):
                    response = block["response"]
                    assert response["mapping_type"] == "grant"
                    url = block["request"]["url"].removeprefix("tmpl:")
                    url = url.replace("{{.resource.id}}", rid)
                    for item in fetch_items(url, response["items_path"]):
                        if "skip_if" in response and self._value(
                            response["skip_if"], {**scope, "item": item}
                        ):
                            continue
                        g = self._map(response["grant_mapping"], {**scope, "item": item})
                        grants.add(
                            f"{type_id}:{rid}:{g['entitlement_name']}:"
                            f"{g['principal_type']}:{g['principal_id']}"
                        )
        assert entitlements == {e["id"]: e["display_name"] for e in body["entitlements"]}
        assert grants == {g["id"] for g in body["grants"]}
        assert pages_read > len(body["teams"]) + len(body["roles"])

    @classmethod
    def _value(cls, value: Any, scope: dict[str, Any]) -> Any:
        if isinstance(value, str) and value.startswith("cel:"):
            return cel(value.removeprefix("cel:"), lambda path: walk(scope, path))
        return value

    @classmethod
    def _map(cls, mapping: Any, scope: dict[str, Any]) -> Any:
        if isinstance(mapping, dict):
            return {k: cls._map(v, scope) for k, v in mapping.items()}
        return cls._value(mapping, scope)


# -- baton-sql -------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\?<([A-Za-z0-9_]+)>")


class SqlRunner:
    """Runs baton-sql queries the way baton-sql does: `?<Limit>` is the page size plus one,
    `?<Cursor>` the last primary key of the previous page ("" at first), other `?<name>`s
    come from the query's `vars`."""

    def __init__(self, database_url: str, page_size: int) -> None:
        self.engine = create_engine(normalize_database_url(database_url))
        self.page_size = page_size
        self.queries = 0

    def rows(self, block: dict[str, Any], bound: dict[str, Any]) -> Iterator[dict[str, Any]]:
        paging = block["pagination"]
        assert paging["strategy"] == "cursor"
        names = _PLACEHOLDER.findall(block["query"])
        assert {"Cursor", "Limit"} <= set(names)
        sql = _PLACEHOLDER.sub(lambda m: f":p_{m.group(1).lower()}", block["query"])
        cursor = ""
        while True:
            params = {"p_limit": self.page_size + 1, "p_cursor": cursor}
            params.update({f"p_{k.lower()}": v for k, v in bound.items()})
            with self.engine.connect() as conn:
                result = [dict(r._mapping) for r in conn.execute(text(sql), params)]
            self.queries += 1
            yield from result[: self.page_size]
            if len(result) <= self.page_size:
                return
            cursor = result[self.page_size - 1][paging["primary_key"]]

    def close(self) -> None:
        self.engine.dispose()


def go_string(value: Any) -> str:
    """What baton-sql's EvaluateString leaves of a column value: Go strings and integers as they
    are, anything else formatted with %s (bool -> "%!s(bool=true)", NULL -> "%!s(<nil>)")."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return f"%!s(bool={'true' if value else 'false'})"
    if isinstance(value, int):
        return str(value)
    if value is None:
        return "%!s(<nil>)"
    if isinstance(value, float):
        return f"%!s(float64={value:g})"
    return f"%!s({type(value).__name__}={value})"


def sql_value(expression: Any, row: dict[str, Any], resource: dict[str, str]) -> Any:
    def resolve(path: str) -> Any:
        if path.startswith("."):
            if path[1:] not in row:
                raise KeyError(f"{path!r}: the query returns no such column")
            return row[path[1:]]
        return {
            "resource.ID": resource.get("ID"),
            "resource.DisplayName": resource.get("DisplayName"),
        }[path]

    return cel(expression, resolve) if isinstance(expression, str) else expression


def sql_map(mapping: Any, row: dict[str, Any], resource: dict[str, str]) -> Any:
    if isinstance(mapping, dict):
        return {k: sql_map(v, row, resource) for k, v in mapping.items()}
    if isinstance(mapping, list):
        return [sql_map(v, row, resource) for v in mapping]
    return sql_value(mapping, row, resource)


class TestBatonSql:
    def test_the_file_is_a_baton_sql_config_over_the_store_tables(self) -> None:
        config = load(SQL_CONFIG)
        assert config["app_name"]
        assert ENV_VAR.search(config["connect"]["dsn"]), "credentials come from the environment"
        assert set(config["resource_types"]) == {"user", "team", "role"}
        everything = SQL_CONFIG.read_text()
        # `user` is reserved in PostgreSQL: every use of the table is quoted.
        assert not re.search(r"(?i)\b(from|join)\s+user\b", everything)
        assert '"user"' in everything
        assert "removed_at IS NULL" in config["resource_types"]["user"]["list"]["query"]

    def test_every_query_runs_on_the_store_and_yields_the_snapshot(
        self, synced: tuple[ServiceServer, dict[str, Any]], database_url: str
    ) -> None:
        _, body = synced
        config = load(SQL_CONFIG)
        runner = SqlRunner(database_url, page_size=4)
        try:
            resources: dict[str, dict[str, dict[str, Any]]] = {}
            for type_id, resource_type in config["resource_types"].items():
                block = resource_type["list"]
                found = {}
                for row in runner.rows(block, {}):
                    mapped = sql_map(block["map"], row, {})
                    found[mapped["id"]] = mapped
                resources[type_id] = found

            assert {
                t: {i: r["display_name"] for i, r in rs.items()} for t, rs in resources.items()
            } == expected_resources(body)
            for user in body["users"]:
                traits = resources["user"][user["id"]]["traits"]["user"]
                assert traits["emails"] == [user["email"]]
                assert traits["login"] == user["login"]
                assert traits["status"] == "enabled"
                assert traits["account_type"] == user["account_type"]
                # The strings C1 stores: baton-sql keeps strings and integers and formats any
                # other value with Go's %s, so a raw boolean or NULL column would not match.
                profile = {k: go_string(v) for k, v in traits["profile"].items()}
                expected = {
                    k: ("true" if v else "false") if isinstance(v, bool) else (v or "")
                    for k, v in user["profile"].items()
                }
                assert profile == expected
                assert go_string(traits["login"]) == (user["login"] or "")

            entitlements: dict[str, str] = {}
            grants: set[str] = set()
            for type_id, resource_type in config["resource_types"].items():
                for rid, mapped in resources[type_id].items():
                    resource = {"ID": rid, "DisplayName": mapped["display_name"]}
                    for static in resource_type.get("static_entitlements", []):
                        assert static["purpose"] == "assignment"
                        assert static["grantable_to"] == ["user"]
                        entitlements[f"{type_id}:{rid}:{static['id']}"] = sql_value(
                            static["display_name"], {}, resource
                        )
                    for block in resource_type.get("grants", []):
                        bound = {
                            name: sql_value(expr, {}, resource)
                            for name, expr in block.get("vars", {}).items()
                        }
                        for row in runner.rows(block, bound):
                            for g in block["map"]:
                                principal = sql_value(g["principal_id"], row, resource)
                                grants.add(
                                    f"{type_id}:{rid}:{g['entitlement_id']}:"
                                    f"{g['principal_type']}:{principal}"
                                )
            assert entitlements == {e["id"]: e["display_name"] for e in body["entitlements"]}
            assert grants == {g["id"] for g in body["grants"]}
            assert runner.queries > len(body["teams"]) + len(body["roles"])
        finally:
            runner.close()


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


def unknown_sql_keys(data: Any, schema: Any = _SQL_SCHEMA, where: str = "") -> list[str]:
    """Every key of a baton-sql config that pkg/bsql/config.go has no yaml tag for."""
    if schema is None:
        return []
    if schema == "*":
        return [
            p for k, v in data.items() for p in unknown_sql_keys(v, _RESOURCE_TYPE, f"{where}.{k}")
        ]
    if isinstance(schema, list):
        return [
            p for i, v in enumerate(data) for p in unknown_sql_keys(v, schema[0], f"{where}[{i}]")
        ]
    found = []
    for key, value in data.items():
        if key not in schema:
            found.append(f"{where}.{key}")
        else:
            found += unknown_sql_keys(value, schema[key], f"{where}.{key}")
    return found


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
