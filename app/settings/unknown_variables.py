"""Variables that look like ours but are not: a misspelling of a known one, or an unknown name
with one of our prefixes, from the environment or the `.env` file. Settings ignore them (they
are not errors), so start-up names them in a warning instead of leaving a typo silent.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable
from pathlib import Path

from dotenv import dotenv_values

# Names with these prefixes are ours even when we do not know them: a warning names them.
OUR_PREFIXES = (
    "INTERCOM_",
    "READ_API_",
    "OPERATOR_API_",
    "PROVISIONING_",
    "RECONCILE_",
    "WEBHOOK_",
    "CHANGE_LOG_",
    "MAX_REMOVAL_",
    "ACTIVITY_LOG_",
    "ACCESS_EVENT_",
    "REMOVAL_REASSIGN_",
    "PROTECTED_ADMIN",
)
# Kubernetes adds these for a Service named intercom-sync (INTERCOM_SYNC_SERVICE_HOST, …).
_SERVICE_LINK = re.compile(r"_(SERVICE_HOST|SERVICE_PORT\w*|PORT(_\d+_(TCP|UDP|SCTP)\w*)?)$")
_CLOSE_MISSPELLING = 0.88


def unknown_variable_warnings(names: Iterable[str], known_fields: Iterable[str]) -> list[str]:
    """A warning for each name that looks like one of ours but is not: a close misspelling
    of a known variable (`known_fields`, the Settings field names), or an unknown name with
    one of our prefixes."""
    known = sorted(name.upper() for name in known_fields)
    warnings: list[str] = []
    for name in sorted(set(names)):
        upper = name.upper()
        if upper in known or _SERVICE_LINK.search(upper):
            continue
        close = difflib.get_close_matches(upper, known, n=1, cutoff=_CLOSE_MISSPELLING)
        ours = upper.startswith(OUR_PREFIXES)
        if not close and ours:
            close = difflib.get_close_matches(upper, known, n=1, cutoff=0.75)
        if close:
            warnings.append(
                f"{name} is not a variable intercom-sync reads: did you mean {close[0]}?"
            )
        elif ours:
            warnings.append(
                f"{name} is not a variable intercom-sync reads and is ignored "
                "(.env.example lists every variable)"
            )
    return warnings


def configured_names(env_file: object) -> list[str]:
    """Variable names from the environment and from the `.env` file settings read."""
    names = list(os.environ)
    files = env_file if isinstance(env_file, (list, tuple)) else [env_file]
    for path in files:
        if isinstance(path, (str, Path)) and Path(path).is_file():
            names.extend(dotenv_values(path))
    return names
