"""Every form of the API key is masked (issue #21, item 1): the CDK masks the configured value
only, while the connector sends it stripped."""

from __future__ import annotations

from airbyte_cdk.utils.airbyte_secrets_utils import filter_secrets, update_secrets

from source_posthog.config import parse_config
from source_posthog.secrets import key_forms

KEY = "phx_unitTestKeyForMasking0123456789abcdefAB"


def test_given_a_key_with_surrounding_whitespace_when_the_config_is_parsed_then_the_key_it_sends_is_masked() -> None:
    update_secrets([f"  {KEY}\n"])  # what the CDK's entrypoint registers: the value as configured

    parse_config({"api_key": f"  {KEY}\n", "project_id": 2})

    assert filter_secrets(f"Authorization: Bearer {KEY}") == "Authorization: Bearer ****"
    assert KEY.removeprefix("phx_") not in filter_secrets(f"key body {KEY.removeprefix('phx_')}")


def test_given_a_key_pasted_with_a_header_after_it_when_parsed_then_each_piece_is_masked_even_though_it_is_refused() -> None:
    update_secrets([])
    pasted = f"{KEY}\r\nX-Injected: 1"

    try:
        parse_config({"api_key": pasted, "project_id": 2})
    except Exception:  # refused: it holds a line break
        pass

    assert KEY not in filter_secrets(f"first line: {KEY}")


def test_key_forms_are_longest_first_and_skip_short_pieces() -> None:
    forms = key_forms(f" {KEY}\nX 1")

    assert forms == sorted(forms, key=len, reverse=True)
    assert KEY in forms and KEY.removeprefix("phx_") in forms and "X" not in forms
