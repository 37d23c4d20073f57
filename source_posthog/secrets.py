"""Every form of the API key is masked in every log line, message and exception.

The CDK masks the config's `airbyte_secret` values as they were written (`set_up_secret_filter`),
but the connector sends the key stripped of surrounding whitespace, and a key pasted with a
line break (`"phx_…\\n"`) or a header after it is not that value. With `--debug` the CDK logs each
request's headers (`Authorization: Bearer phx_…`): every form the connector could send or name
must be registered, not only the raw one. `register_api_key` is called wherever a config is parsed,
before any request can be made.
"""

from __future__ import annotations

from typing import Any, List

from airbyte_cdk.utils.airbyte_secrets_utils import add_to_secrets, filter_secrets

MIN_FORM_LENGTH = 8  # shorter pieces of a malformed value are not key material worth masking


def key_forms(value: Any) -> List[str]:
    """The key as configured, stripped, and each whitespace-separated piece of it (a key pasted
    with a line break and a header), each with and without its `phx_` prefix; longest first."""
    if not isinstance(value, str):
        return []
    pieces = {value, value.strip(), *value.split()}
    forms = pieces | {piece.removeprefix("phx_") for piece in pieces}
    return sorted((form for form in forms if len(form) >= MIN_FORM_LENGTH), key=len, reverse=True)


def register_api_key(value: Any) -> None:
    """Mask every form of the key from now on (each form once; the CDK replaces longest first
    because they are registered in that order)."""
    for form in key_forms(value):
        if filter_secrets(form) != "****":
            add_to_secrets(form)
