"""The spec (what the Airbyte UI form shows) and config parsing (host forms, anchor_date, ranges)."""

from __future__ import annotations

import logging
from typing import Any, Dict

import pendulum
import pytest
from airbyte_cdk.models import FailureType

from source_posthog import settings
from source_posthog.config import ConfigError, config_warnings, parse_anchor_date, parse_config, parse_host, validate_against_spec
from source_posthog.source import SourcePosthog
from unit_tests.builders import API_KEY, NOW, ConfigBuilder

NOW_DT = pendulum.parse(NOW)


@pytest.fixture(scope="module")
def spec() -> Dict[str, Any]:
    return SourcePosthog().spec(logging.getLogger("airbyte")).connectionSpecification


class TestSpec:
    def test_every_property_has_title_description_examples_and_order(self, spec: Dict[str, Any]) -> None:
        for name, prop in spec["properties"].items():
            for key in ("title", "description", "examples", "order"):
                assert prop.get(key) not in (None, "", []), f"property {name!r} has no {key}"
            assert isinstance(prop["examples"], list)

    def test_orders_are_distinct_and_required_fields_come_first(self, spec: Dict[str, Any]) -> None:
        orders = {name: prop["order"] for name, prop in spec["properties"].items()}
        assert len(set(orders.values())) == len(orders)
        assert sorted(orders, key=orders.get)[:2] == ["api_key", "project_id"]

    def test_api_key_is_a_required_secret_and_project_id_is_required(self, spec: Dict[str, Any]) -> None:
        assert set(spec["required"]) == {"api_key", "project_id"}
        assert spec["properties"]["api_key"]["airbyte_secret"] is True
        assert spec["properties"]["api_key"]["type"] == "string"
        assert spec["properties"]["project_id"]["type"] == "integer"
        secret_free = [name for name, prop in spec["properties"].items() if name != "api_key"]
        assert not any(spec["properties"][name].get("airbyte_secret") for name in secret_free)

    def test_host_defaults_to_us_cloud(self, spec: Dict[str, Any]) -> None:
        assert spec["properties"]["host"]["default"] == "us.posthog.com"
        assert settings.DEFAULT_HOST == "us.posthog.com"

    def test_every_example_is_valid_against_the_spec(self, spec: Dict[str, Any]) -> None:
        for name, prop in spec["properties"].items():
            for example in prop["examples"]:
                config = {**ConfigBuilder().build(), name: example}
                validate_against_spec(config, spec)

    def test_documented_defaults_match_the_code(self, spec: Dict[str, Any]) -> None:
        properties = spec["properties"]
        assert properties["events_lookback_window_days"]["default"] == settings.EVENTS_LOOKBACK_WINDOW_DAYS_DEFAULT
        assert properties["events_page_size"]["default"] == settings.EVENTS_PAGE_SIZE_DEFAULT
        assert properties["events_page_size"]["maximum"] == settings.EVENTS_PAGE_SIZE_MAX == 50_000
        assert properties["request_timeout_seconds"]["default"] == settings.READ_TIMEOUT_SECONDS_DEFAULT


class TestHost:
    @pytest.mark.parametrize(
        "value, base_url",
        [
            (None, "https://us.posthog.com"),
            ("", "https://us.posthog.com"),
            ("us.posthog.com", "https://us.posthog.com"),
            ("eu.posthog.com", "https://eu.posthog.com"),
            ("https://eu.posthog.com/", "https://eu.posthog.com"),
            ("https://eu.posthog.com/api", "https://eu.posthog.com"),
            ("posthog.example.com/api/", "https://posthog.example.com"),
            ("  HTTPS://PostHog.Example.com:8443  ", "https://posthog.example.com:8443"),
            ("http://localhost:8000", "http://localhost:8000"),
            ("http://127.0.0.1:8010/api/", "http://127.0.0.1:8010"),
            ("http://[::1]:8000", "http://[::1]:8000"),
        ],
    )
    def test_given_host_form_when_parsed_then_base_url(self, value: Any, base_url: str) -> None:
        assert parse_host(value) == base_url

    @pytest.mark.parametrize("value, right", [("us.i.posthog.com", "us.posthog.com"), ("https://eu.i.posthog.com", "eu.posthog.com")])
    def test_given_ingestion_host_when_parsed_then_error_names_the_right_host(self, value: str, right: str) -> None:
        with pytest.raises(ConfigError) as raised:
            parse_host(value)
        assert "'host'" in raised.value.message and f"Use {right}" in raised.value.message
        assert raised.value.failure_type == FailureType.config_error

    @pytest.mark.parametrize("value", ["http://posthog.example.com", "http://10.0.0.5:8000"])
    def test_given_plain_http_to_a_remote_host_when_parsed_then_refused_with_https_fix(self, value: str) -> None:
        with pytest.raises(ConfigError) as raised:
            parse_host(value)
        assert "https://" in raised.value.message and "'host'" in raised.value.message

    @pytest.mark.parametrize(
        "value, base_url",
        [
            ("http://posthog-web:8000", "http://posthog-web:8000"),
            ("http://10.1.2.3:8000/api", "http://10.1.2.3:8000"),
            ("http://172.20.0.4", "http://172.20.0.4"),
            ("http://192.168.1.10:8000", "http://192.168.1.10:8000"),
            ("http://posthog.internal", "http://posthog.internal"),
            ("http://posthog.local:8000", "http://posthog.local:8000"),
        ],
    )
    def test_given_plain_http_on_a_private_network_and_the_opt_in_when_parsed_then_allowed(self, value: str, base_url: str) -> None:
        config = ConfigBuilder().with_host(value).with_field("allow_http_on_private_network", True).build()
        assert parse_config(config).base_url == base_url

    @pytest.mark.parametrize("value", ["http://posthog-web:8000", "http://10.1.2.3:8000", "http://posthog.internal"])
    def test_given_plain_http_on_a_private_network_without_the_opt_in_when_parsed_then_the_error_names_the_field(self, value: str) -> None:
        with pytest.raises(ConfigError) as raised:
            parse_config(ConfigBuilder().with_host(value).build())
        assert "'allow_http_on_private_network'" in raised.value.message and "'host'" in raised.value.message

    @pytest.mark.parametrize("value", ["http://posthog.example.com", "http://8.8.8.8", "http://us.posthog.com", "http://[2001:4860::1]"])
    def test_given_plain_http_to_a_public_address_even_with_the_opt_in_when_parsed_then_refused(self, value: str) -> None:
        config = ConfigBuilder().with_host(value).with_field("allow_http_on_private_network", True).build()
        with pytest.raises(ConfigError) as raised:
            parse_config(config)
        assert "public address" in raised.value.message

    @pytest.mark.parametrize("value", ["ftp://posthog.example.com", "https://", "https://posthog.example.com/?a=1", "https://host:99999"])
    def test_given_malformed_host_when_parsed_then_error_names_the_field(self, value: str) -> None:
        with pytest.raises(ConfigError) as raised:
            parse_host(value)
        assert "'host'" in raised.value.message


class TestAnchorDate:
    def test_given_no_anchor_date_when_parsed_then_one_year_back_at_midnight(self) -> None:
        assert parse_anchor_date(None, NOW_DT) == pendulum.datetime(2024, 6, 1, tz="UTC")

    @pytest.mark.parametrize(
        "value, expected",
        [
            ("2025-01-01", pendulum.datetime(2025, 1, 1, tz="UTC")),
            ("2025-01-01T10:30:00Z", pendulum.datetime(2025, 1, 1, 10, 30, tz="UTC")),
            ("2025-01-01T12:30:00+02:00", pendulum.datetime(2025, 1, 1, 10, 30, tz="UTC")),
        ],
    )
    def test_given_date_or_date_time_when_parsed_then_utc(self, value: str, expected: Any) -> None:
        assert parse_anchor_date(value, NOW_DT) == expected

    @pytest.mark.parametrize("value", ["2025-13-45", "yesterday", "2025-02-30"])
    def test_given_malformed_anchor_date_when_parsed_then_error_names_field_and_format(self, value: str) -> None:
        with pytest.raises(ConfigError) as raised:
            parse_anchor_date(value, NOW_DT)
        assert "'anchor_date'" in raised.value.message and "2025-01-01" in raised.value.message

    def test_given_future_anchor_date_when_parsed_then_error_says_it_is_in_the_future(self) -> None:
        with pytest.raises(ConfigError) as raised:
            parse_anchor_date("2025-06-02", NOW_DT)
        assert "'anchor_date'" in raised.value.message and "future" in raised.value.message


class TestOtherFields:
    def test_given_minimal_config_when_parsed_then_safe_defaults(self) -> None:
        parsed = parse_config({"api_key": API_KEY, "project_id": 2}, now=NOW_DT)
        assert parsed.base_url == "https://us.posthog.com"
        assert parsed.project_url == "https://us.posthog.com/api/projects/2/"
        assert parsed.events_page_size == settings.EVENTS_PAGE_SIZE_DEFAULT
        assert parsed.events_lookback_window_days == settings.EVENTS_LOOKBACK_WINDOW_DAYS_DEFAULT
        assert parsed.request_timeout_seconds == settings.READ_TIMEOUT_SECONDS_DEFAULT

    def test_given_project_api_key_when_parsed_then_error_asks_for_a_personal_key(self) -> None:
        with pytest.raises(ConfigError) as raised:
            parse_config({"api_key": "phc_projecttoken", "project_id": 2}, now=NOW_DT)
        assert "'api_key'" in raised.value.message and "phx_" in raised.value.message

    @pytest.mark.parametrize("value, expected", [(2, 2), ("12", 12), (" 7 ", 7)])
    def test_given_project_id_as_number_or_digits_when_parsed_then_integer(self, value: Any, expected: int) -> None:
        assert parse_config({"api_key": API_KEY, "project_id": value}, now=NOW_DT).project_id == expected

    @pytest.mark.parametrize("value", [0, -1, "abc", True, None, 1.5])
    def test_given_bad_project_id_when_parsed_then_error_names_the_field(self, value: Any) -> None:
        with pytest.raises(ConfigError) as raised:
            parse_config({"api_key": API_KEY, "project_id": value}, now=NOW_DT)
        assert "'project_id'" in raised.value.message

    @pytest.mark.parametrize("field, value", [("events_page_size", 999), ("events_page_size", 50_001), ("events_lookback_window_days", 91), ("request_timeout_seconds", 0)])
    def test_given_out_of_range_tuning_value_when_parsed_then_error_names_field_and_range(self, field: str, value: int) -> None:
        with pytest.raises(ConfigError) as raised:
            parse_config({"api_key": API_KEY, "project_id": 2, field: value}, now=NOW_DT)
        assert f"'{field}'" in raised.value.message and "from" in raised.value.message

    def test_given_invalid_secret_against_spec_when_validated_then_the_value_is_not_shown(self, spec: Dict[str, Any]) -> None:
        with pytest.raises(ConfigError) as raised:
            validate_against_spec({"api_key": ["phx_" + "s3cr3t" * 5], "project_id": 2}, spec)
        assert "s3cr3t" not in raised.value.message and "<secret>" in raised.value.message

    def test_given_missing_required_field_when_validated_then_error_names_it(self, spec: Dict[str, Any]) -> None:
        with pytest.raises(ConfigError) as raised:
            validate_against_spec({"api_key": API_KEY}, spec)
        assert "'project_id'" in raised.value.message and "required" in raised.value.message


class TestMessagesReadAsPlainText:
    """Messages come from spec descriptions written as HTML for the form: no entities, no tags,
    no doubled punctuation."""

    MESSY = __import__("re").compile(r"&[a-z]+;|&#\d+;|</?(code|b|i|a|br|p|em|strong|ul|li)\b[^>]*>|\.\.(?!\.)|[.!?]\s*\.|,\s*\.")

    @pytest.mark.parametrize("field", ["project_id", "host", "anchor_date", "events_page_size", "events_lookback_window_days", "request_timeout_seconds", "api_key"])
    def test_given_a_value_of_the_wrong_type_when_validated_then_the_message_is_plain_text(self, spec: Dict[str, Any], field: str) -> None:
        config = ConfigBuilder().with_field(field, {"not": "valid"}).build()
        with pytest.raises(ConfigError) as raised:
            validate_against_spec(config, spec)
        message = raised.value.message
        assert f"'{field}'" in message
        assert not self.MESSY.search(message), message


class TestFieldsOfOtherConnectors:
    """Issue #21, item 2: a user coming from the official connector keeps `start_date` and
    `base_url`. Ignoring them read a year instead of a day, from the wrong host."""

    def test_given_the_official_start_date_when_parsed_then_it_is_the_anchor_date(self) -> None:
        parsed = parse_config({"api_key": API_KEY, "project_id": 2, "start_date": "2025-05-30T00:00:00Z"}, now=pendulum.parse(NOW))

        assert parsed.anchor_date == pendulum.datetime(2025, 5, 30, tz="UTC")

    def test_given_the_official_base_url_when_parsed_then_requests_go_to_it(self) -> None:
        parsed = parse_config({"api_key": API_KEY, "project_id": 2, "base_url": "https://posthog.example.com"}, now=pendulum.parse(NOW))

        assert parsed.base_url == "https://posthog.example.com"

    @pytest.mark.parametrize("official, ours, value, other", [("start_date", "anchor_date", "2025-05-30", "2025-01-01"), ("base_url", "host", "https://app.posthog.com", "eu.posthog.com")])
    def test_given_both_names_with_different_values_then_a_config_error_names_both(self, official: str, ours: str, value: str, other: str) -> None:
        with pytest.raises(ConfigError) as raised:
            parse_config({"api_key": API_KEY, "project_id": 2, official: value, ours: other}, now=pendulum.parse(NOW))

        assert raised.value.field == official and f"'{ours}'" in raised.value.message

    def test_given_unknown_fields_then_each_is_named_in_a_warning(self) -> None:
        notes = config_warnings({"api_key": API_KEY, "project_id": 2, "start_date": "2025-05-30", "events_time_step": 30, "colour": "blue"}, ["api_key", "project_id"])

        assert len(notes) == 3
        assert "'start_date'" in notes[2] and "'anchor_date'" in notes[2]
        assert "'events_time_step' is not used" in notes[1]
        assert "'colour' is not a field of this connector" in notes[0]


def test_given_a_config_with_an_unknown_field_when_check_then_it_succeeds_and_warns_naming_it(config: Dict[str, Any], requests_mock: Any) -> None:
    from unit_tests.builders import readable_everywhere
    from unit_tests.reader import run_check, connection_status

    readable_everywhere(requests_mock, "https://us.posthog.com")

    output = run_check({**config, "start_date": config.get("anchor_date") or "2025-01-01", "legacy_option": True})

    assert connection_status(output).status.value == "SUCCEEDED"
    warnings = [log.log.message for log in output.logs if log.log.level.value == "WARN"]
    assert any("'legacy_option' is not a field of this connector" in line for line in warnings), warnings


def test_given_a_config_with_an_unknown_field_when_read_then_the_warning_names_it(requests_mock: Any) -> None:
    from unit_tests.reader import read_stream

    requests_mock.get("https://us.posthog.com/api/projects/2/cohorts/", json={"count": 0, "next": None, "previous": None, "results": []})

    output = read_stream("cohorts", config={**ConfigBuilder().build(), "events_time_step": 30})

    assert any("'events_time_step' is not used" in log.log.message for log in output.logs if log.log.level.value == "WARN")
