"""Removing a teammate from the workspace (`DELETE /admins/remove`): the checks of
the store and the guard rails, the reassignment of what they own, the call, and the removal
stored at once once Intercom confirms it.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool

from app.intercom.errors import IntercomError, IntercomNotFound
from app.intercom.writes import intercom_write
from app.provisioning.guard_rails import read_store_view, refuse_protected, require_synced
from app.provisioning.intercom_calls import WRITE_BUDGET_SECONDS, IntercomCalls, refusal_for
from app.provisioning.request import Outcome, Refusal, Request
from app.provisioning.store_apply import NotificationApplier, apply_confirmed_removal
from app.settings import Settings
from app.store import provisioning as records
from app.store.engine import Database

REMOVAL_VERSION = (2, 17)
REASSIGN_PARAMS = (
    "reassign_messages_admin_id",
    "reassign_owner_admin_id",
    "reassign_articles_author_id",
    "reassign_conversations_admin_id",
)


def removal_api_version(configured: str) -> str:
    """`Intercom-Version` for `DELETE /admins/remove`: 2.17, or the configured version when it
    is newer (Preview and Unstable are newer than any number)."""
    if configured.lower() in ("preview", "unstable"):
        return configured
    try:
        major, minor = (int(part) for part in configured.split(".", 1))
    except ValueError:
        return "2.17"
    return configured if (major, minor) > REMOVAL_VERSION else "2.17"


class TeammateRemoval:
    """One per process; `run` takes a request through to its outcome."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        intercom: IntercomCalls,
        *,
        request_refresh: Callable[[], None],
        apply_notification: NotificationApplier,
    ) -> None:
        self._db = db
        self._settings = settings
        self._intercom = intercom
        self._request_refresh = request_refresh
        self._apply_notification = apply_notification

    async def run(self, request: Request) -> Outcome:
        target = request.reassign_to or self._settings.removal_reassign_admin_id
        view = await run_in_threadpool(read_store_view, self._db, request.user_id, None, target)
        require_synced(view)
        if view.user_active is None:
            raise Refusal(404, "not_found", f"there is no teammate {request.user_id}")
        if not view.user_active:
            return Outcome("already_removed", 200, None)
        if target is None:
            raise Refusal(
                400,
                "reassign_target_required",
                "name who receives the teammate's conversations, messages, articles and "
                "ownerships: the body's reassign_to, or REMOVAL_REASSIGN_ADMIN_ID (0 leaves "
                "them unassigned)",
            )
        if target != "0" and not view.target_active:
            raise Refusal(
                400,
                "reassign_target_invalid",
                f"the reassignment target {target} is not an active teammate",
            )
        await refuse_protected(
            request.user_id, target=target, settings=self._settings, intercom=self._intercom
        )
        params = {"admin_id": request.user_id, **dict.fromkeys(REASSIGN_PARAMS, target)}
        path = "/admins/remove?" + urlencode(params)
        if request.dry_run:
            return Outcome("would_remove", 200, ("DELETE", path, None, None))
        client = self._intercom.client()
        try:
            answer = await intercom_write(
                client,
                "DELETE",
                "/admins/remove",
                params=params,
                endpoint="admins_remove",
                api_version=removal_api_version(self._settings.intercom_api_version),
                budget_seconds=WRITE_BUDGET_SECONDS,
            )
        except IntercomNotFound as exc:
            # Intercom does not know them (or answered 404 for another reason): never store a
            # removal on a guess; the refresh settles what Intercom lists.
            self._request_refresh()
            raise Refusal(
                404,
                "not_found",
                f"Intercom answered 404 ({exc.intercom_code or 'not_found'}) for teammate "
                f"{request.user_id}; nothing was changed and a refresh was requested",
                intercom=("DELETE", path, None, exc.status),
            ) from None
        except IntercomError as exc:
            raise refusal_for(exc, "DELETE", path, None, removal=True) from None
        finally:
            await client.aclose()
        call = ("DELETE", path, None, answer.status)

        async def store(finish: records.FinishFn) -> records.RequestRecord:
            applied = await run_in_threadpool(
                apply_confirmed_removal,
                self._db,
                request.user_id,
                finish=finish,
                apply_notification=self._apply_notification,
            )
            return applied.record

        return Outcome("removed", 200, call, store)
