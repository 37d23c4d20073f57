"""SourcePosthog: validate the config, check access, declare the streams. Nothing else."""

from __future__ import annotations

import logging
from typing import Any, List, Mapping, Optional, Tuple

import requests
from airbyte_cdk.models import AirbyteConnectionStatus, Status
from airbyte_cdk.sources import AbstractSource
from airbyte_cdk.sources.streams import Stream
from airbyte_cdk.utils.airbyte_secrets_utils import filter_secrets

from source_posthog.config import ConfigError, parse_config, validate_against_spec
from source_posthog.http import PostHogErrorHandler, build_api_budget, timeouts
from source_posthog.streams import STREAM_CLASSES


class SourcePosthog(AbstractSource):
    def check(self, logger: logging.Logger, config: Mapping[str, Any]) -> AirbyteConnectionStatus:
        # The CDK would repr() the reason, wrapping it in quotes; ours is already a sentence.
        succeeded, reason = self.check_connection(logger, config)
        if succeeded:
            return AirbyteConnectionStatus(status=Status.SUCCEEDED)
        return AirbyteConnectionStatus(status=Status.FAILED, message=filter_secrets(str(reason)))

    def check_connection(self, logger: logging.Logger, config: Mapping[str, Any]) -> Tuple[bool, Optional[Any]]:
        """Reads the configured project once: proves host, key and project in one request."""
        try:
            validate_against_spec(config, self.spec(logger).connectionSpecification)
            posthog = parse_config(config)
        except ConfigError as error:
            return False, error.message
        url = posthog.project_url
        try:
            response = requests.get(
                url,
                headers={"Authorization": f"Bearer {posthog.api_key}"},
                timeout=timeouts(min(posthog.request_timeout_seconds, 30)),
                allow_redirects=False,
            )
        except requests.RequestException as error:
            return False, (
                f"Could not reach PostHog at {posthog.base_url} ({type(error).__name__}). Check 'host': "
                f"us.posthog.com for US Cloud, eu.posthog.com for EU Cloud, or your self-hosted address."
            )
        if response.status_code == 200:
            return True, None
        if 300 <= response.status_code < 400:
            return False, (
                f"{posthog.base_url} redirected the API request ({response.status_code} to "
                f"{response.headers.get('Location', '?')}). Set 'host' to the address PostHog is served from."
            )
        handler = PostHogErrorHandler("projects", "project:read", posthog.project_id, posthog.base_url)
        return False, handler.client_error_message(response, f"GET /api/projects/{posthog.project_id}/")

    def streams(self, config: Mapping[str, Any]) -> List[Stream]:
        validate_against_spec(config, self.spec(logging.getLogger("airbyte")).connectionSpecification)
        posthog = parse_config(config)
        budget = build_api_budget()  # one budget: every stream shares PostHog's per-key limits
        return [stream_class(posthog, budget) for stream_class in STREAM_CLASSES]

