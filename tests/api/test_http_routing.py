"""Routing edges: a 405 names the methods the path really serves in `Allow`; `HEAD`
answers like `GET` wherever `GET` is served, without a body; a trailing slash is a 404 in the
usual error body, never a redirect built from the client's `Host`. Checked over every route of
the served OpenAPI document, with every kind of credential."""

from __future__ import annotations

import re
from typing import Any

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.service import OPERATOR_TOKEN, READ_TOKEN, ServiceServer

WRONG_TOKEN = "not-a-token-anyone-configured-31337"
TOKENS = [None, READ_TOKEN, OPERATOR_TOKEN, WRONG_TOKEN]
# Served, but not part of the API the document describes.
UNDOCUMENTED_GET_PATHS = ["/openapi.json", "/docs", "/redoc"]
PROBED_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
# Differ between two requests on their own.
VOLATILE_HEADERS = {"date", "x-request-id"}


def document(service: ServiceServer) -> dict[str, Any]:
    doc: dict[str, Any] = httpx.get(f"{service.url}/openapi.json", timeout=10).json()
    return doc


def concrete_paths(service: ServiceServer) -> dict[str, set[str]]:
    """Every documented path with its parameters filled with real ids, to the methods the
    document gives it (upper case), plus the app's undocumented GET pages."""
    with service.client(READ_TOKEN) as reader:
        body = reader.get("/api/v1/snapshot").json()
    values = {
        "user_id": body["users"][0]["id"],
        "team_id": body["teams"][0]["id"],
        "role_id": "1",
        "run_id": "1",
        "workspace_id": body["workspaces"][0]["id"],
    }
    paths: dict[str, set[str]] = {}
    for template, operations in document(service)["paths"].items():
        path = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], template)
        paths[path] = {method.upper() for method in operations}
    for path in UNDOCUMENTED_GET_PATHS:
        paths[path] = {"GET"}
    return paths


def headers_for(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def test_every_405_names_the_methods_its_path_serves(service: ServiceServer) -> None:
    paths = concrete_paths(service)
    problems = []
    checked = 0
    with httpx.Client(base_url=service.url, timeout=30) as client:
        for path, served in paths.items():
            allowed = served | ({"HEAD"} if "GET" in served else set())
            for method in PROBED_METHODS:
                if method in served:
                    continue
                for token in TOKENS:
                    response = client.request(method, path, headers=headers_for(token))
                    checked += 1
                    allow = {m.strip() for m in response.headers.get("allow", "").split(",")}
                    if response.status_code != 405 or allow != allowed:
                        problems.append(
                            f"{method} {path} ({token}): {response.status_code}, "
                            f"Allow {response.headers.get('allow')!r}, expected {sorted(allowed)}"
                        )
                    elif response.json()["error"]["code"] != "method_not_allowed":
                        problems.append(f"{method} {path}: {response.text}")
    assert checked > 50
    assert not problems, "\n".join(problems)


def comparable(response: httpx.Response, path: str) -> tuple[int, dict[str, str]]:
    headers = {k: v for k, v in response.headers.items() if k not in VOLATILE_HEADERS}
    if path == "/metrics":
        # Counters move between the two requests; the size of the text with them.
        headers.pop("content-length", None)
    return response.status_code, headers


def test_head_answers_like_get_on_every_get_route_without_a_body(service: ServiceServer) -> None:
    paths = concrete_paths(service)
    get_paths = sorted(path for path, methods in paths.items() if "GET" in methods)
    with service.client(READ_TOKEN) as reader:
        etag = reader.get("/api/v1/snapshot").headers["etag"]
    queries = ["", "?limit=2", "?limit=0", "?include_removed=true", "?since=0", "?cursor=junk"]

    with httpx.Client(base_url=service.url, timeout=30) as client:

        @settings(max_examples=120, deadline=None, database=None)
        @given(
            path=st.sampled_from(get_paths),
            token=st.sampled_from(TOKENS),
            query=st.sampled_from(queries),
            if_none_match=st.sampled_from([None, etag, '"v0"']),
            gzip=st.booleans(),
        )
        def head_is_get_without_body(
            path: str, token: str | None, query: str, if_none_match: str | None, gzip: bool
        ) -> None:
            headers = {
                **headers_for(token),
                "Accept-Encoding": "gzip" if gzip else "identity",
                **({"If-None-Match": if_none_match} if if_none_match else {}),
            }
            got = client.get(path + query, headers=headers)
            head = client.head(path + query, headers=headers)
            assert head.content == b"", f"HEAD {path}{query} sent a body"
            assert comparable(head, path) == comparable(got, path), f"{path}{query} {headers}"

        head_is_get_without_body()

    # The hand-rendered snapshot answers, fast path included, and Intercom's own HEAD.
    with service.client(READ_TOKEN) as reader:
        fast = reader.head("/api/v1/snapshot", headers={"Accept-Encoding": "gzip"})
        assert fast.status_code == 200
        assert fast.headers["etag"] == etag
        assert fast.headers["content-encoding"] == "gzip"
        assert int(fast.headers["content-length"]) > 0
        assert fast.content == b""
        not_modified = reader.head("/api/v1/snapshot", headers={"If-None-Match": etag})
        assert not_modified.status_code == 304
    assert httpx.head(f"{service.url}/webhooks/intercom", timeout=10).status_code == 200


def test_head_before_the_first_baseline_answers_like_get(start_service: Any) -> None:
    service: ServiceServer = start_service(wait_ready=False, sync_on_startup="false")
    with service.client(READ_TOKEN) as reader:
        for path in ("/api/v1/snapshot", "/api/v1/users", "/readyz"):
            got, head = reader.get(path), reader.head(path)
            assert got.status_code == 503, got.text
            assert head.content == b""
            assert comparable(head, path) == comparable(got, path)


def test_a_trailing_slash_is_a_404_error_never_a_redirect(service: ServiceServer) -> None:
    paths = concrete_paths(service)
    problems = []
    with httpx.Client(base_url=service.url, timeout=30, follow_redirects=False) as client:
        for path, served in paths.items():
            for method in sorted(served | {"GET", "HEAD"}):
                for token in TOKENS:
                    headers = {**headers_for(token), "Host": "attacker.example"}
                    response = client.request(method, path + "/", headers=headers)
                    expected_body = b"" if method == "HEAD" else None
                    wrong = (
                        response.status_code != 404
                        or "location" in response.headers
                        or (
                            expected_body is None
                            and response.json()
                            != {"error": {"code": "not_found", "message": "no such route"}}
                        )
                        or (expected_body is not None and response.content != expected_body)
                    )
                    if wrong:
                        problems.append(
                            f"{method} {path}/ ({token}): {response.status_code} "
                            f"{dict(response.headers)} {response.text[:100]}"
                        )
    assert not problems, "\n".join(problems)
