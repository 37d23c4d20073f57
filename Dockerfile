# Airbyte's Python connector image pattern (airbytehq/airbyte docker-images/Dockerfile.python-connector),
# with its one heredoc replaced by RUN printf so that older builders (buildah 1.28) build it too.
#   docker build --build-arg BASE_IMAGE=docker.io/airbyte/python-connector-base:4.0.2 \
#                --build-arg CONNECTOR_NAME=source-posthog -t airbyte/source-posthog:dev .
ARG BASE_IMAGE=docker.io/airbyte/python-connector-base:4.0.2

FROM ${BASE_IMAGE} AS builder
ARG BASE_IMAGE
ARG CONNECTOR_NAME=source-posthog

WORKDIR /airbyte/integration_code
COPY setup.py README.md ./
COPY source_posthog ./source_posthog
RUN pip install --no-cache-dir uv
RUN python -m uv pip install --system --no-cache-dir .

FROM ${BASE_IMAGE}
ARG CONNECTOR_NAME=source-posthog
ARG BASE_IMAGE

WORKDIR /airbyte/integration_code
COPY --from=builder /usr/local /usr/local
RUN printf '#!/usr/bin/env bash\nset -e\n\n%s "$@"\n' "${CONNECTOR_NAME}" > /entrypoint.sh \
    && chmod 755 /entrypoint.sh

LABEL io.airbyte.name=airbyte/source-posthog
LABEL io.airbyte.version=0.3.0

USER airbyte
# One malloc arena: page buffers freed on one thread are reused by the next (source_posthog/process.py).
ENV MALLOC_ARENA_MAX=1
ENV AIRBYTE_ENTRYPOINT="/entrypoint.sh"
ENTRYPOINT ["/entrypoint.sh"]
