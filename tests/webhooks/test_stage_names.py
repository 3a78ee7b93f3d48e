"""The webhook path's names (issue 18.4): one module per stage, named for what it does and
listed in order in the package docstring, and one enum per set of outcomes whose values are
the wire values stored in the inbox and served by /webhook-events."""

from __future__ import annotations

import re
from pathlib import Path

import orjson

import app
import app.webhooks
from app.store import inbox
from app.store.inbox import InboxStatus
from app.webhooks.apply_notification import ApplyOutcome

README = Path(__file__).resolve().parents[2] / "README.md"
STAGES = ["receive", "inbox_writer", "inbox_drainer", "apply_notification", "activity_evidence"]


def test_the_package_holds_one_module_per_stage_and_its_docstring_lists_them_in_order() -> None:
    package = Path(app.webhooks.__file__).parent
    assert {p.stem for p in package.glob("*.py")} == {"__init__", *STAGES}
    listed = re.findall(r"^\d\. `(\w+)`", app.webhooks.__doc__ or "", flags=re.MULTILINE)
    assert listed == STAGES


def test_inbox_statuses_keep_their_stored_and_served_values() -> None:
    assert [status.value for status in InboxStatus] == [
        "pending",
        "applied",
        "ignored",
        "rejected",
        "failed",
    ]
    # The values reach the database and the JSON bodies as plain strings.
    assert orjson.dumps({"outcome": InboxStatus.APPLIED}) == b'{"outcome":"applied"}'
    assert f"{InboxStatus.FAILED}" == "failed"
    # The /webhook-events filter: every status, and "duplicate", in the order the 400 names them.
    assert ", ".join(inbox.OUTCOMES) == "pending, applied, ignored, duplicate, rejected, failed"


def test_every_settling_apply_outcome_is_an_inbox_status_of_the_same_value() -> None:
    assert [outcome.value for outcome in ApplyOutcome] == [
        "applied",
        "ignored",
        "deferred",
        "rejected",
    ]
    for outcome in ApplyOutcome:
        if outcome is ApplyOutcome.DEFERRED:
            # Stays pending and is retried: never a status of its own.
            assert outcome.value not in {status.value for status in InboxStatus}
        else:
            assert InboxStatus(outcome) == outcome.value


def test_the_glossary_defines_the_words_and_names_the_stages() -> None:
    how_it_works = README.read_text().split("## How it works", 1)[1].split("\n## ", 1)[0]
    rows = {
        line.split("|")[1].strip()
        for line in how_it_works.splitlines()
        if line.startswith("| ") and not line.startswith("| Word")
    }
    assert {"admin, teammate, user", "baseline", "reconcile", "resync", "refresh"} <= rows
    for text in (how_it_works, app.__doc__ or ""):
        positions = [text.index(f"`{stage}`") for stage in STAGES]
        assert positions == sorted(positions)
