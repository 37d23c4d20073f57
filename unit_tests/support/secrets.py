"""The leak guard: the strings that must never appear in any output, log, state or exception."""

from __future__ import annotations

from typing import Any, Iterable, List, Union

from unit_tests.builders import API_KEY as UNIT_TEST_KEY


def secret_forms(api_key: Any) -> List[str]:
    """For one key: the key as configured, stripped, and each whitespace-separated piece of it (a
    key pasted with a line break and a header), each with and without its `phx_` prefix."""
    if isinstance(api_key, bool) or not isinstance(api_key, (str, int)):
        return []
    text = str(api_key)
    pieces = {text, text.strip(), *text.split()}
    forms = pieces | {piece.removeprefix("phx_") for piece in pieces}
    return sorted(form for form in forms if len(form) >= 8)


def known_secrets(*keys: Any) -> List[str]:
    """Every form of the unit tests' key and of `keys` (the integration tests add the emulator's)."""
    forms = set()
    for key in (UNIT_TEST_KEY, *keys):
        forms.update(secret_forms(key))
    return sorted(forms)


def leaked(text: Union[str, bytes], secrets: Iterable[str]) -> List[str]:
    """The secrets found in `text`, masked so that the failure message does not leak them."""
    found = []
    for secret in secrets:
        needle = secret.encode() if isinstance(text, bytes) else secret
        if needle in text:
            found.append(f"{secret[:7]}…({len(secret)} chars)")
    return sorted(set(found))
