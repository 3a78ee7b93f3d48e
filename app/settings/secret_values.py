"""Secrets as the environment gives them: tokens and the client secret cleaned and checked
one by one, token lists split, and the database URL's password found for the log redactor.
The Settings class (app/settings/__init__.py) calls these; every error names where the bad
character is and never shows a value.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import SecretStr


def clean_secret(value: str) -> str:
    """The secret without surrounding whitespace; ValueError (which never shows the value)
    when what is left holds whitespace, a control or a non-ASCII character."""
    text = value.strip()
    for position, char in enumerate(text, start=1):
        if not "!" <= char <= "~":
            raise ValueError(
                f"holds {_kind_of_character(char)} at character {position} of {len(text)}; "
                "a token is printable ASCII without spaces (surrounding whitespace is ignored)"
            )
    return text


def _kind_of_character(char: str) -> str:
    if char.isspace():
        return "whitespace"
    if not char.isascii():
        return "a non-ASCII character"
    return "a control character"


def split_tokens(value: object) -> object:
    """A comma-separated list (or a list) as cleaned tokens, blanks dropped; a ValueError names
    the token by position, never by value. Anything else is left for pydantic to refuse."""
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list):
        return value
    parts = [part.get_secret_value() if isinstance(part, SecretStr) else part for part in value]
    tokens = [part for part in parts if not isinstance(part, str) or part.strip()]
    cleaned: list[object] = []
    for index, token in enumerate(tokens, start=1):
        if not isinstance(token, str):
            cleaned.append(token)
            continue
        try:
            cleaned.append(clean_secret(token))
        except ValueError as exc:
            raise ValueError(f"token {index} of {len(tokens)} {exc}") from None
    return cleaned


def database_password(url: str) -> str | None:
    """The password of a database URL (as written: percent-encoded), for the redactor."""
    try:
        return urlsplit(url).password
    except ValueError:
        return None
