"""How C1's two ingestion tools read `integrations/c1/*.yaml`, so the tests can run them here.

CEL is evaluated by cel-python (`celpy`), an implementation of the CEL specification, never by
this file. What lies around the CEL is mirrored from the tools' own sources, each rule citing
the file it follows:

- baton-sql: ConductorOne/baton-sql, `pkg/bcel/bcel.go`, `pkg/bcel/helpers.go`,
  `pkg/bsql/query.go`, `pkg/bsql/resources.go`, `pkg/bsql/entitlements.go`,
  `pkg/bsql/grants.go`, `pkg/bsql/helpers.go`, `pkg/database/database.go`.
- baton-http: its source is not public; its rules are those of the authoring guide,
  ConductorOne/docs `developer/http-authoring.mdx` (the `cel:` and `tmpl:` prefixes, `item`
  and `resource` in expressions, `items_path`, cursor paging, static entitlements, grants,
  `skip_if`). Where the guide is silent (how a non-string CEL result is stored) the mirror
  refuses anything but a string, so the configuration must not depend on it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import celpy
from celpy import celtypes
from celpy.evaluation import CELEvalError
from sqlalchemy import Engine, text

_CEL = celpy.Environment()
_PROGRAMS: dict[str, Any] = {}


def cel_value(value: Any) -> Any:
    """A Python value as the CEL value a Go tool would hand the expression: JSON and database
    values (bool before int: Python's bool is an int)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, int):
        return celtypes.IntType(value)
    if isinstance(value, float):
        return celtypes.DoubleType(value)
    if isinstance(value, str):
        return celtypes.StringType(value)
    if isinstance(value, datetime):
        return celtypes.TimestampType(value.astimezone(UTC))
    if isinstance(value, dict):
        return celtypes.MapType({celtypes.StringType(k): cel_value(v) for k, v in value.items()})
    if isinstance(value, list):
        return celtypes.ListType([cel_value(v) for v in value])
    raise TypeError(f"no CEL value for {type(value).__name__}")


def cel_eval(expression: str, variables: dict[str, Any]) -> Any:
    """Evaluate with real CEL; a field the data lacks raises, as in cel-go ("no such key")."""
    program = _PROGRAMS.get(expression)
    if program is None:
        program = _PROGRAMS[expression] = _CEL.program(_CEL.compile(expression))
    result = program.evaluate({k: cel_value(v) for k, v in variables.items()})
    if isinstance(result, CELEvalError):
        raise result
    return result


# -- baton-sql -------------------------------------------------------------------------------

# pkg/database/database.go, DSNREnvRegex: the only placeholder form; there is no default value
# syntax (`${VAR:-x}` is not a placeholder and stays in the DSN as written).
DSN_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")


def expand_dsn(dsn: str, env: dict[str, str]) -> str:
    """pkg/database/database.go, updateFromEnv (older releases) and expandDSN (current ones):
    every `${VAR}` is the variable's value, and an unset variable fails the connection with
    "environment variable VAR is not set", all of them named. Values are substituted as text,
    as older releases do; current ones escape each into its part of the URL, which gives the
    same URL for the values the tests use (no URL-reserved characters)."""
    missing = [name for name in DSN_PLACEHOLDER.findall(dsn) if name not in env]
    if missing:
        raise BatonSqlError(
            "\n".join(f"environment variable {name} is not set" for name in missing)
        )
    return DSN_PLACEHOLDER.sub(lambda m: env[m.group(1)], dsn)


# pkg/bcel/helpers.go, preprocessExpressions: a bare word is a string literal; `.name` not
# preceded by a letter, digit or `_` is the column `cols['name']`.
_BARE_STRING = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_DOT_FIELD = re.compile(r"\.\w+")


def sql_preprocess(expression: str) -> str:
    if _BARE_STRING.match(expression):
        return f'"{expression}"'

    def column(match: re.Match[str]) -> str:
        start = match.start()
        if start > 0 and (expression[start - 1].isalnum() or expression[start - 1] == "_"):
            return match.group(0)
        return f"cols['{match.group(0)[1:]}']"

    return _DOT_FIELD.sub(column, expression)


def go_percent_s(value: Any) -> str:
    """pkg/bcel/bcel.go, EvaluateString: a Go string as it is, an integer with %d, anything
    else with Go's %s of the CEL result's native value (cel-go's `Value()`)."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (bool, celtypes.BoolType)):  # before int: both are ints
        return f"%!s(bool={'true' if value else 'false'})"
    if isinstance(value, int):
        return str(int(value))
    if value is None:
        # cel-go common/types/null.go: Null.Value() is structpb.NullValue_NULL_VALUE, an enum
        # whose String() %s prints.
        return "NULL_VALUE"
    if isinstance(value, float):
        return f"%!s(float64={float(value)!r})"
    if isinstance(value, datetime):
        # time.Time has a String() method, which %s prints.
        utc = value.astimezone(UTC)
        return utc.strftime("%Y-%m-%d %H:%M:%S +0000 UTC")
    raise TypeError(f"no Go %s mirror for {type(value).__name__}")


def sql_evaluate(expression: str, inputs: dict[str, Any]) -> Any:
    # pkg/bcel/bcel.go, Evaluate: preprocess, and `cols` is always defined.
    return cel_eval(sql_preprocess(expression), {"cols": {}, **inputs})


def sql_evaluate_string(expression: str, inputs: dict[str, Any]) -> str:
    return go_percent_s(sql_evaluate(expression, inputs))


def sql_evaluate_bool(expression: str, inputs: dict[str, Any]) -> bool:
    # pkg/bcel/bcel.go, EvaluateBool.
    value = sql_evaluate(expression, inputs)
    if isinstance(value, (bool, celtypes.BoolType)):
        return bool(value)
    if isinstance(value, int):
        return int(value) != 0
    if isinstance(value, str):
        return {"true": True, "1": True, "false": False, "0": False}[str(value).lower()]
    raise TypeError(f"expected bool, got {type(value).__name__}")


def resource_inputs(row: dict[str, Any] | None, resource: dict[str, str] | None) -> dict[str, Any]:
    """pkg/bcel/bcel.go, BaseInputs / BaseInputsWithResource."""
    inputs: dict[str, Any] = {}
    if row is not None:
        inputs["cols"] = row
    if resource is not None:
        inputs["resource"] = resource
    return inputs


# pkg/bsql/query.go: the token, the page size bounds and the reserved keys.
_QUERY_TOKEN = re.compile(r"\?\<([a-zA-Z0-9_]+)(?:\|([a-zA-Z0-9_]+))?\>")
MIN_PAGE_SIZE, MAX_PAGE_SIZE, DEFAULT_PAGE_SIZE = 1, 1000, 100


class BatonSqlError(Exception):
    """What baton-sql would fail the sync with."""


def clamp_page_size(requested: int, configured: int | None) -> int:
    """pkg/bsql/query.go, clampPageSize."""
    if requested == 0:
        if not configured:
            return DEFAULT_PAGE_SIZE
        requested = configured
    return max(MIN_PAGE_SIZE, min(MAX_PAGE_SIZE, requested))


def prepare_query(
    query: str, *, limit: int, offset: int, cursor: str, variables: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """pkg/bsql/query.go, parseQueryOpts: the key is lower-cased; `limit` is the page size
    plus one (to see whether more rows follow), `offset` and `cursor` come from the page
    token ("" on the first page), any other key must be one of the query's `vars`. Every value
    is a bound parameter."""
    params: dict[str, Any] = {}
    problems: list[str] = []

    def bind(match: re.Match[str]) -> str:
        key, option = match.group(1).lower(), match.group(2)
        if option:
            # `|unquoted` / `|identifier` inline text; none of our queries needs them.
            problems.append(f"token option {option} is not mirrored here")
            return match.group(0)
        if key == "limit":
            value: Any = limit + 1
        elif key == "offset":
            value = offset
        elif key == "cursor":
            value = cursor
        elif key in variables:
            value = variables[key]
        else:
            problems.append(f"unknown token {match.group(0)}")
            return match.group(0)
        name = f"p{len(params) + 1}"
        params[name] = value
        return f":{name}"

    sql = _QUERY_TOKEN.sub(bind, query)
    if problems:
        raise BatonSqlError("; ".join(problems))
    return sql, params


def _page_token(value: Any) -> str:
    """pkg/bsql/query.go, nextPageToken: a string or an integer primary key."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise BatonSqlError("unexpected type for primary key")


def prepare_vars(variables: dict[str, str], inputs: dict[str, Any]) -> dict[str, Any]:
    """pkg/bsql/query.go, PrepareQueryVars: a value naming an input is that input; anything
    else is a CEL expression; CEL null becomes SQL NULL (normalizeValue)."""
    return {
        name: inputs[expr] if expr in inputs else sql_evaluate(expr, inputs)
        for name, expr in variables.items()
    }


@dataclass
class BatonSql:
    """Runs a baton-sql configuration's queries on a store, page by page as baton-sql does,
    and maps the rows to what C1 would store."""

    engine: Engine
    config: dict[str, Any]
    page_size: int = 0  # what C1 asks for; 0: the configured or default size
    queries: int = 0
    warnings: list[str] = field(default_factory=list)

    def rows(self, block: dict[str, Any], variables: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """pkg/bsql/query.go, runQuery (setupPagination, prepareQuery, the row loop)."""
        paging = block.get("pagination")
        if paging is None:
            raise BatonSqlError("these configurations always page; a query without is a bug")
        if paging["strategy"] != "cursor":
            raise BatonSqlError(f"unknown pagination strategy {paging['strategy']}")
        limit = clamp_page_size(self.page_size, paging.get("page_size"))
        token = ""
        while True:
            sql, params = prepare_query(
                block["query"], limit=limit, offset=0, cursor=token, variables=variables
            )
            with self.engine.connect() as connection:
                result = [dict(r._mapping) for r in connection.execute(text(sql), params)]
            self.queries += 1
            page = result[:limit]
            for row in page:
                if paging["primary_key"] not in row:
                    raise BatonSqlError("primary key not found in query results")
                yield row
            if len(result) <= limit:
                return
            token = _page_token(page[-1][paging["primary_key"]])

    def resources(self, type_id: str) -> list[dict[str, Any]]:
        block = self.config["resource_types"][type_id]["list"]
        return [self._map_resource(block["map"], row) for row in self.rows(block, {})]

    def _map_resource(self, mapping: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
        """pkg/bsql/resources.go, getMappedResource and mapTraits."""
        inputs = resource_inputs(row, None)
        resource: dict[str, Any] = {
            "id": sql_evaluate_string(mapping["id"], inputs),
            "display_name": sql_evaluate_string(mapping["display_name"], inputs),
        }
        if mapping.get("description"):
            resource["description"] = sql_evaluate_string(mapping["description"], inputs)
        traits = mapping.get("traits") or {}
        # fetchTraits: the first of user, group, role, app that is configured.
        for kind in ("user", "group", "role", "app"):
            if traits.get(kind) is not None:
                if kind == "user":
                    resource["user"] = self._user_trait(traits["user"], inputs)
                else:
                    resource[kind] = {"profile": self._profile(traits[kind], inputs)}
                break
        return resource

    @staticmethod
    def _profile(mapping: dict[str, Any], inputs: dict[str, Any]) -> dict[str, str]:
        return {
            k: sql_evaluate_string(v, inputs) for k, v in (mapping.get("profile") or {}).items()
        }

    def _user_trait(self, mapping: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
        """pkg/bsql/resources.go, mapUserTrait."""
        trait: dict[str, Any] = {
            "emails": [sql_evaluate_string(e, inputs) for e in mapping.get("emails", []) if e],
            "profile": self._profile(mapping, inputs),
        }
        if mapping.get("status"):
            value = sql_evaluate_string(mapping["status"], inputs).lower()
            statuses = {
                "active": "ENABLED",
                "enabled": "ENABLED",
                "disabled": "DISABLED",
                "inactive": "DISABLED",
                "suspended": "DISABLED",
                "locked": "DISABLED",
                "deleted": "DELETED",
            }
            if value not in statuses:
                self.warnings.append(f"unexpected status value in mapping: {value!r}")
            trait["status"] = statuses.get(value, "UNSPECIFIED")
        trait["account_type"] = "HUMAN"  # without a mapping
        if mapping.get("account_type"):
            value = sql_evaluate_string(mapping["account_type"], inputs).lower()
            kinds = {"user": "HUMAN", "human": "HUMAN", "service": "SERVICE", "system": "SYSTEM"}
            if value not in kinds:
                self.warnings.append(f"unexpected account type value in mapping: {value!r}")
            trait["account_type"] = kinds.get(value, "HUMAN")
        if mapping.get("login"):
            trait["login"] = sql_evaluate_string(mapping["login"], inputs)
        trait["last_login"] = None
        if mapping.get("last_login"):
            value = sql_evaluate_string(mapping["last_login"], inputs)
            if value:  # "" is no last login
                parsed = parse_time(value)
                if parsed is None:
                    self.warnings.append(f"failed to parse last login time {value!r}")
                trait["last_login"] = parsed
        return trait

    def static_entitlements(self, type_id: str, resource: dict[str, str]) -> dict[str, str]:
        """pkg/bsql/entitlements.go, staticEntitlements: id `type:resource:slug`, display name
        evaluated with `resource` (ID, ResourceTypeID, DisplayName)."""
        inputs = resource_inputs(None, resource)
        found = {}
        for entitlement in self.config["resource_types"][type_id].get("static_entitlements", []):
            name = sql_evaluate_string(entitlement["display_name"], inputs)
            found[f"{type_id}:{resource['ID']}:{entitlement['id']}"] = name
        return found

    def grants(self, type_id: str, resource: dict[str, str]) -> set[str]:
        """pkg/bsql/grants.go: only the first grants query of a resource type runs
        (`s.config.Grants[0]`); `skip_if` with EvaluateBool; principal_id evaluated, principal
        type and entitlement taken as written; grant id `entitlement:principal_type:principal`."""
        queries = self.config["resource_types"][type_id].get("grants", [])
        if not queries:
            return set()
        block = queries[0]
        inputs = resource_inputs(None, resource)
        variables = prepare_vars(block.get("vars") or {}, inputs)
        found = set()
        for row in self.rows(block, variables):
            row_inputs = resource_inputs(row, resource)
            for mapping in block["map"]:
                if mapping.get("skip_if") and sql_evaluate_bool(mapping["skip_if"], row_inputs):
                    continue
                principal = sql_evaluate_string(mapping["principal_id"], row_inputs)
                found.add(
                    f"{type_id}:{resource['ID']}:{mapping['entitlement_id']}:"
                    f"{mapping['principal_type']}:{principal}"
                )
        return found


def parse_time(value: str) -> datetime | None:
    """pkg/bsql/helpers.go, parseTimeWithEngine for PostgreSQL: "2006-01-02 15:04:05.000000",
    "2006-01-02 15:04:05", then RFC 3339 first; the long tail of other layouts is not mirrored
    (the view writes RFC 3339), so anything else counts as unparsable here."""
    for layout in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.strptime(value, layout).replace(tzinfo=UTC)
        except ValueError:
            pass
    if re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", value):
        return datetime.fromisoformat(value)
    return None


# -- baton-http ------------------------------------------------------------------------------

_TEMPLATE = re.compile(r"\{\{\s*\.resource\.(id|display_name)\s*\}\}")


def http_template(value: str, resource: dict[str, str]) -> str:
    """`tmpl:` URLs (http-authoring.mdx, "URL templates"): `.resource.id` and
    `.resource.display_name`; any other template is not used by our file and fails here."""
    body = value.removeprefix("tmpl:")
    rendered = _TEMPLATE.sub(lambda m: resource[m.group(1)], body)
    if "{{" in rendered:
        raise ValueError(f"template not mirrored: {value!r}")
    return rendered


def http_value(value: Any, variables: dict[str, Any]) -> Any:
    """`cel:` values are CEL over `item` (and `resource`); others are taken as written."""
    if isinstance(value, str) and value.startswith("cel:"):
        return cel_eval(value.removeprefix("cel:"), variables)
    return value


def http_string(value: Any, variables: dict[str, Any], where: str) -> str:
    """A mapped value baton-http stores as text. The guide shows only string results; how it
    stores a bool or null is not documented, so those fail here instead of being guessed."""
    result = http_value(value, variables)
    if not isinstance(result, str):
        raise TypeError(f"{where}: {value!r} gave {type(result).__name__}, not a string")
    return str(result)


def http_walk(data: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        if not isinstance(data, dict) or key not in data:
            raise KeyError(f"{dotted!r}: no {key!r} in the real response")
        data = data[key]
    return data


@dataclass
class BatonHttp:
    """Runs a baton-http configuration's requests through `get(url, params)`."""

    config: dict[str, Any]
    get: Callable[[str, dict[str, Any]], Any]
    page_size: int
    pages: int = 0

    def items(self, url: str, items_path: str) -> Iterator[dict[str, Any]]:
        """Cursor paging (http-authoring.mdx, "Cursor-based"): `limit_param` = page size,
        `cursor_param` = the value at `cursor_path` of the last page, until there is none."""
        paging = self.config["connect"]["pagination"]
        assert paging["strategy"] == "cursor"
        cursor = None
        while True:
            params: dict[str, Any] = {paging["limit_param"]: self.page_size}
            if cursor:
                params[paging["cursor_param"]] = cursor
            page = self.get(url, params)
            self.pages += 1
            yield from http_walk(page, items_path)
            cursor = http_walk(page, paging["cursor_path"])
            if not cursor:
                return

    def resources(self, type_id: str) -> list[dict[str, Any]]:
        block = self.config["resource_types"][type_id]["list"]
        response = block["response"]
        assert response["mapping_type"] == "resource"
        mapping = response["resource_mapping"]
        found = []
        for item in self.items(block["request"]["url"], response["items_path"]):
            scope = {"item": item}
            resource: dict[str, Any] = {
                "id": http_string(mapping["id"], scope, "id"),
                "display_name": http_string(mapping["display_name"], scope, "display_name"),
            }
            for kind in ("user_traits", "group_traits"):
                if kind in mapping:
                    trait: dict[str, Any] = {
                        k: http_string(v, scope, f"{kind}.{k}")
                        for k, v in mapping[kind].items()
                        if k != "profile"
                    }
                    trait["profile"] = {
                        k: http_string(v, scope, f"{kind}.profile.{k}")
                        for k, v in (mapping[kind].get("profile") or {}).items()
                    }
                    resource[kind] = trait
            found.append(resource)
        return found

    def static_entitlements(self, type_id: str, resource: dict[str, str]) -> dict[str, str]:
        scope = {"resource": resource}
        return {
            f"{type_id}:{resource['id']}:{e['id']}": http_string(e["display_name"], scope, e["id"])
            for e in self.config["resource_types"][type_id].get("static_entitlements", [])
        }

    def grants(self, type_id: str, resource: dict[str, str]) -> set[str]:
        found = set()
        for block in self.config["resource_types"][type_id].get("grants", []):
            response = block["response"]
            assert response["mapping_type"] == "grant"
            url = http_template(block["request"]["url"], resource)
            for item in self.items(url, response["items_path"]):
                scope = {"item": item, "resource": resource}
                if "skip_if" in response and http_value(response["skip_if"], scope):
                    continue
                grant = response["grant_mapping"]
                principal = http_string(grant["principal_id"], scope, "principal_id")
                kind = http_string(grant["principal_type"], scope, "principal_type")
                name = http_string(grant["entitlement_name"], scope, "entitlement_name")
                found.add(f"{type_id}:{resource['id']}:{name}:{kind}:{principal}")
        return found
