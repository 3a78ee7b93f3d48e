"""Every error answers `{"error": {"code": "snake_case", "message": "human sentence"}}`."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from app.api.middleware import route_methods
from app.api.schemas import ErrorBody
from app.store.read_errors import (
    ActivityLogNotRead,
    Gone,
    InvalidCursor,
    InvalidRequest,
    NotFound,
    NotSynced,
    ReadError,
)


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


# The read model's refusals: status and headers of each kind (the subclass first where one
# derives from another). `Retry-After` tells a poller when the answer may have changed.
READ_ERRORS: dict[type[ReadError], tuple[int, dict[str, str]]] = {
    NotSynced: (503, {"Retry-After": "30"}),
    ActivityLogNotRead: (503, {"Retry-After": "60"}),
    InvalidCursor: (400, {}),
    InvalidRequest: (400, {}),
    NotFound: (404, {}),
    Gone: (410, {}),
}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return Response(body, status_code=status, media_type="application/json", headers=headers)


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


def _describe(errors: list[Any]) -> str:
    parts = []
    for error in errors[:3]:
        location = ".".join(str(p) for p in error.get("loc", ()) if p not in ("query", "path"))
        parts.append(f"{location or 'request'}: {error.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


_INVALID_REQUEST_RESPONSE: dict[str, Any] = {
    "description": "Invalid parameters (`invalid_request`), or another bad request.",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
}


def _document_400_not_422(app: FastAPI) -> None:
    """FastAPI documents a 422 `HTTPValidationError` for every route with parameters, but the
    validation handler below answers 400 with the error shape: make `/openapi.json` say so."""
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = default_openapi()
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.get("responses", {})
                if responses.pop("422", None) is not None:
                    responses.setdefault("400", _INVALID_REQUEST_RESPONSE)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        if "ErrorBody" not in components:
            body = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(body.pop("$defs", {}))
            components["ErrorBody"] = body
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _allowed_methods(request: Request) -> str:
    """Every method served at this path, HEAD with GET. Starlette's own 405 names only the
    methods of the first route that matched, and FastAPI's included routers name none."""
    return ", ".join(route_methods(request.app).allowed(request.scope["path"]))


def install_error_handlers(app: FastAPI) -> None:
    _document_400_not_422(app)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(ReadError)
    async def _read_error(_request: Request, exc: ReadError) -> Response:
        status, headers = READ_ERRORS.get(type(exc), (500, {}))
        return error_response(status, exc.code, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> Response:
        return error_response(400, "invalid_request", _describe(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = _STATUS_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        if exc.status_code == 404 and message == "Not Found":
            message = "no such route"
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request)
        return error_response(exc.status_code, code, message, headers)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, _exc: Exception) -> Response:
        return error_response(500, "internal_error", "the server hit an unexpected error")
