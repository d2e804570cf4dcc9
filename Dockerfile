# syntax=docker/dockerfile:1
# The flashsale image: every process of the platform, one per container.
#
#   docker build -t flashsale:local .
#   docker run --rm flashsale:local --help                  # the `flashsale` CLI
#   docker run --rm -e FLASHSALE_... --entrypoint python flashsale:local -m queue_server
#
# Compose (infra/docker-compose.yml) and the Helm chart (infra/helm/flashsale) run each process
# as `python -m <module>`: queue_server, token_gate, shop, scheduler, shop.worker, shop.migrate.

# 3.11: the version the test suite runs on (requires-python >= 3.11).
ARG PYTHON_VERSION=3.11

# --- builder: a virtualenv with the package and its dependencies -------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# The dependencies first, from pyproject.toml alone, so that a code change reuses this layer
# instead of reinstalling them all.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > requirements.txt \
    && pip install -r requirements.txt

# Then the package itself: a regular (not editable) install, so the runtime stage needs no
# source tree.
COPY . .
# The check runs from / so that it imports the installed package, not the source tree, and
# finds the files that are not Python (migrations, Lua scripts) where the processes look.
RUN pip install --no-deps . \
    && cd / \
    && python -c "import infra.stack.cli, queue_server.app, token_gate.app, shop.app, shop.worker, scheduler.app" \
    && python -c "from importlib.resources import files as f; assert (f('shop') / 'migrations' / 'env.py').is_file(); assert (f('infra.sale') / 'lua' / 'admit.lua').is_file()"

# --- runtime: the virtualenv on a slim Python, run by an unprivileged user ---------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime

# A fixed numeric uid/gid: Kubernetes' runAsNonRoot can only verify a numeric USER.
RUN groupadd --system --gid 10001 flashsale \
    && useradd --system --uid 10001 --gid flashsale --create-home --home-dir /home/flashsale \
        --shell /usr/sbin/nologin flashsale

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    # In a container the HTTP processes bind every interface (the settings default to loopback).
    FLASHSALE_HOST=0.0.0.0 \
    FLASHSALE_DATA_DIR=/home/flashsale/data

WORKDIR /home/flashsale
USER 10001:10001

# gate, queue_server, shop, scheduler, order worker (each serves /healthz and /metrics on its
# own port).
EXPOSE 8000 8001 8002 8003 8004

ENTRYPOINT ["flashsale"]
CMD ["--help"]
