"""Provisioning endpoints (provisioning token) and their audit list (operator token).

The routes parse and check the request's syntax (ids, body, `Idempotency-Key`) before
anything is recorded or sent; app/provisioning/service.py does the rest. The audit records it
answers with are rendered here, from the models the OpenAPI document shows (the store keeps
the record, not its JSON)."""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from app.api.auth import bearer_token, require_token
from app.api.deps import ServicesDep
from app.api.errors import ApiError
from app.api.operators import require_operator
from app.api.schemas import ErrorBody, ErrorDetail
from app.core.timefmt import iso_microseconds
from app.provisioning.request import (
    ADD_TEAM_MEMBER,
    REMOVE_TEAM_MEMBER,
    REMOVE_USER,
    Answer,
)
from app.provisioning.request import Request as ProvisioningRequest
from app.provisioning.service import Provisioner
from app.services import Services
from app.store import provisioning as records

# A body here is at most `{"reassign_to": "…"}`; anything far larger is not one of ours.
MAX_BODY_BYTES = 16 * 1024
_ID = re.compile(r"^[0-9]{1,20}$")
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


async def require_provisioner(request: Request, services: ServicesDep) -> str:
    """The presented provisioning token (checked), for the audit fingerprint."""
    tokens = services.settings.provisioning_api_tokens
    if not tokens:
        raise ApiError(
            403,
            "provisioning_disabled",
            "provisioning is disabled: set PROVISIONING_API_TOKENS to allow C1 to make changes",
        )
    require_token(request, tokens, kind="provisioning", variable="PROVISIONING_API_TOKENS")
    token = bearer_token(request.headers.get("authorization"))
    assert token is not None  # require_token refused a request without one
    return token


class IntercomCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: str
    path: str
    status: int | None
    body: dict[str, Any] | None = None


class ProvisioningRecord(BaseModel):
    """A provisioning request (spec §10 "Audit"): the answer of every write endpoint."""

    model_config = ConfigDict(extra="forbid")

    id: int
    action: str
    user_id: str
    team_id: str | None
    dry_run: bool
    result: str | None
    requested_at: str
    finished_at: str | None
    requested_by: str
    intercom: IntercomCall | None
    error: ErrorDetail | None


class ProvisioningRecordList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[ProvisioningRecord]


# A refusal after the request was recorded answers the record (its `error` says why); one
# before (bad syntax, a key reused) answers the plain error body.
_RecordOrError = ProvisioningRecord | ErrorBody
_ERRORS: dict[int | str, dict[str, Any]] = {
    200: {"model": ProvisioningRecord, "description": "Done, unchanged, or a dry run."},
    400: {
        "model": ErrorBody,
        "description": "A malformed id, body or Idempotency-Key; no reassignment target.",
    },
    401: {"model": ErrorBody, "description": "Missing or unknown provisioning token."},
    403: {"model": ErrorBody, "description": "`provisioning_disabled`: no tokens configured."},
    404: {"model": _RecordOrError, "description": "Unknown teammate or team."},
    409: {
        "model": _RecordOrError,
        "description": "A guard rail, an Intercom conflict, or an Idempotency-Key reused or busy.",
    },
    413: {"model": ErrorBody, "description": "The body is larger than 16 KiB."},
    502: {"model": ProvisioningRecord, "description": "Intercom refused (`intercom_refused`)."},
    503: {
        "model": ProvisioningRecord,
        "description": "`intercom_unavailable`, `not_synced` or `team_busy`.",
    },
}
router = APIRouter(tags=["provisioning"], responses=_ERRORS)
TokenDep = Annotated[str, Depends(require_provisioner)]
DryRun = Annotated[
    bool, Query(description="Check everything and answer what would be sent; call nothing.")
]


def _json(payload: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(payload), status_code=status, media_type="application/json", headers=headers
    )


def _check_id(value: str, what: str) -> str:
    if not _ID.match(value):
        raise ApiError(400, "invalid_request", f"{what} must be an Intercom id (up to 20 digits)")
    return value


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not _KEY.match(key):
        raise ApiError(
            400,
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        )
    return key


async def _read_body(request: Request) -> dict[str, Any]:
    """The optional JSON object body, refused above MAX_BODY_BYTES without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ApiError(413, "payload_too_large", f"the body is over {MAX_BODY_BYTES} bytes")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise ApiError(413, "payload_too_large", f"the body is over {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(bytes(raw))
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_json", "the body is not JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    return body


def _reassign_to(body: dict[str, Any]) -> str | None:
    unknown = sorted(set(body) - {"reassign_to"})
    if unknown:
        raise ApiError(400, "invalid_request", f"unknown body field: {unknown[0][:64]}")
    value = body.get("reassign_to")
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        value = str(value)
    if not isinstance(value, str) or not _ID.match(value):
        raise ApiError(400, "invalid_request", "reassign_to must be a teammate id (digits), or 0")
    return value


def _request_hash(method: str, path: str, dry_run: bool, body: dict[str, Any]) -> str:
    canonical = orjson.dumps(
        {"method": method, "path": path, "dry_run": dry_run, "body": body},
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(canonical).hexdigest()


# The audit's times: UTC with microseconds (two requests can share a second).


def record_view(record: records.RequestRecord) -> ProvisioningRecord:
    """A stored request as the API shows it (without its hash, key or our status)."""
    intercom: IntercomCall | None = None
    if record.intercom_method is not None:
        call: dict[str, Any] = {
            "method": record.intercom_method,
            "path": record.intercom_path,
            "status": record.intercom_status,
        }
        if record.intercom_body is not None:
            # Only a call with a body shows `body` (never `"body": null`).
            call["body"] = record.intercom_body
        intercom = IntercomCall.model_validate(call)
    error = None
    if record.error_code:
        error = ErrorDetail(code=record.error_code, message=record.error_message or "")
    return ProvisioningRecord(
        id=record.id,
        action=record.action,
        user_id=record.user_id,
        team_id=record.team_id,
        dry_run=record.dry_run,
        result=record.result,
        requested_at=iso_microseconds(record.requested_at),
        finished_at=iso_microseconds(record.finished_at),
        requested_by=record.requested_by,
        intercom=intercom,
        error=error,
    )


def record_json(record: records.RequestRecord) -> dict[str, Any]:
    return record_view(record).model_dump(mode="json", exclude_unset=True)


def _answer(answer: Answer) -> Response:
    if answer.record is not None:
        payload = record_json(answer.record)
    else:
        assert answer.error is not None  # an answer holds a record or an error
        code, message = answer.error
        payload = ErrorBody(error=ErrorDetail(code=code, message=message)).model_dump()
    return _json(payload, answer.status, answer.headers or None)


def _provisioner(services: Services, request: Request) -> Provisioner:
    provisioner: Provisioner = request.app.state.provisioner
    return provisioner


async def _handle(
    request: Request,
    services: Services,
    token: str,
    *,
    action: str,
    user_id: str,
    team_id: str | None,
    dry_run: bool,
) -> Response:
    _check_id(user_id, "user_id")
    if team_id is not None:
        _check_id(team_id, "team_id")
    key = _idempotency_key(request)
    body = await _read_body(request)
    reassign_to = _reassign_to(body) if action == REMOVE_USER else None
    if action != REMOVE_USER and body:
        raise ApiError(400, "invalid_request", "this endpoint takes no body fields")
    parsed = ProvisioningRequest(
        action=action,
        user_id=user_id,
        team_id=team_id,
        dry_run=dry_run,
        token=token,
        request_hash=_request_hash(request.method, request.url.path, dry_run, body),
        idempotency_key=key,
        reassign_to=reassign_to,
    )
    return _answer(await _provisioner(services, request).handle(parsed))


@router.delete(
    "/api/v1/users/{user_id}",
    summary="Remove a teammate from the workspace (Intercom DELETE /admins/remove)",
)
async def remove_user(
    user_id: str, request: Request, services: ServicesDep, token: TokenDep, dry_run: DryRun = False
) -> Response:
    """Optional JSON body `{"reassign_to": "<teammate id>"}` (else REMOVAL_REASSIGN_ADMIN_ID)."""
    return await _handle(
        request,
        services,
        token,
        action=REMOVE_USER,
        user_id=user_id,
        team_id=None,
        dry_run=dry_run,
    )


@router.put(
    "/api/v1/teams/{team_id}/members/{user_id}",
    summary="Add a teammate to a team (Intercom PUT /teams/{id}, Preview)",
)
async def add_team_member(
    team_id: str,
    user_id: str,
    request: Request,
    services: ServicesDep,
    token: TokenDep,
    dry_run: DryRun = False,
) -> Response:
    return await _handle(
        request,
        services,
        token,
        action=ADD_TEAM_MEMBER,
        user_id=user_id,
        team_id=team_id,
        dry_run=dry_run,
    )


@router.delete(
    "/api/v1/teams/{team_id}/members/{user_id}",
    summary="Take a teammate out of a team (Intercom PUT /teams/{id}, Preview)",
)
async def remove_team_member(
    team_id: str,
    user_id: str,
    request: Request,
    services: ServicesDep,
    token: TokenDep,
    dry_run: DryRun = False,
) -> Response:
    return await _handle(
        request,
        services,
        token,
        action=REMOVE_TEAM_MEMBER,
        user_id=user_id,
        team_id=team_id,
        dry_run=dry_run,
    )


audit_router = APIRouter(
    tags=["operators"],
    dependencies=[Depends(require_operator)],
    responses={401: {"model": ErrorBody, "description": "Missing or unknown token."}},
)


@audit_router.get(
    "/provisioning-requests",
    summary="Provisioning requests, newest first",
    responses={200: {"model": ProvisioningRecordList}},
)
async def list_provisioning_requests(
    services: ServicesDep, limit: Annotated[int, Query(ge=1, le=1000)] = 50
) -> Response:
    def read() -> list[dict[str, Any]]:
        with services.db.reading() as session:
            return [record_json(r) for r in records.list_requests(session, limit=limit)]

    return _json({"items": await run_in_threadpool(read)})
