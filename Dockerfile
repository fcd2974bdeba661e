# syntax=docker/dockerfile:1
#
# agent-state as a container image.
#
#   docker build -t agent-state .
#   docker run --rm -p 127.0.0.1:50051:50051 \
#     -e DATABASE_URL=postgresql://user:password@db.example:5432/agent_state \
#     -e AGENT_STATE_AUTH_TOKENS=rw:some-long-random-token \
#     agent-state
#
# The image listens on 0.0.0.0:50051, and the server refuses a non-loopback
# address without AGENT_STATE_AUTH_TOKENS (or AGENT_STATE_ALLOW_UNAUTHENTICATED=true).
# Without DATABASE_URL it keeps an SQLite file in /var/lib/agent-state (a volume).
# Draining on SIGTERM takes up to AGENT_STATE_SHUTDOWN_GRACE_SECONDS (10 s) plus
# a moment, more than Docker's default stop timeout: use `docker stop -t 20`.

# Keep the Python minor version in step with pyproject.toml (requires-python)
# and requirements/runtime.txt, which are locked for Python 3.11.
ARG PYTHON_VERSION=3.11.14

# --- builder: the locked dependencies and the project's wheels in /opt/venv ---
FROM python:${PYTHON_VERSION}-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN python -m venv /opt/venv

# Dependencies first, from the hash-locked file alone, so that this layer is
# rebuilt only when the lock changes.
COPY requirements/runtime.txt /tmp/runtime.txt
RUN /opt/venv/bin/pip install --require-hashes --no-deps -r /tmp/runtime.txt

# The build backend goes into the builder's own Python, never into /opt/venv.
# Same version as requirements/dev.txt.
ARG HATCHLING_VERSION=1.33.0
RUN pip install "hatchling==${HATCHLING_VERSION}"

# Two wheels: the client distribution (client/, which holds the generated
# code the server imports) and the server.
WORKDIR /build
COPY pyproject.toml README.md ./
COPY src ./src
COPY client ./client
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /build/dist ./client . \
    && /opt/venv/bin/pip install --no-deps /build/dist/*.whl

# --- runtime: the venv only, run by an unprivileged user ---
FROM python:${PYTHON_VERSION}-slim-bookworm

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="agent-state" \
      org.opencontainers.image.description="Working memory for LLM agents: AgentStateService over gRPC on PostgreSQL or an embedded SQLite file." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 agent-state \
    && useradd --system --uid 10001 --gid agent-state \
       --home-dir /var/lib/agent-state --no-create-home --shell /usr/sbin/nologin agent-state \
    && install -d -o agent-state -g agent-state -m 0750 /var/lib/agent-state

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GRPC_ADDRESS=0.0.0.0:50051

# The working directory holds the default SQLite file (agent-state.db).
WORKDIR /var/lib/agent-state
VOLUME ["/var/lib/agent-state"]

USER 10001:10001

# gRPC, and Prometheus metrics when AGENT_STATE_METRICS_ADDRESS is set.
EXPOSE 50051 9464

# Exits 0 only while the health service reports SERVING (not while draining).
# Change the port here too if GRPC_ADDRESS listens on another one.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["agent-state", "health", "--address", "127.0.0.1:50051"]

ENTRYPOINT ["agent-state"]
CMD ["serve"]
