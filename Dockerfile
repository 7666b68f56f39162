# One image for every role: `conductor api`, `celery -A workers worker`, `celery -A workers beat`
# and the `conductor db upgrade` migration step; compose.yaml picks the command.
# The base is any Debian-like image with Python 3.11+ and venv: the official slim image by
# default, or one made from Debian's packages where no image registry is reachable
# (`make test-deploy`: localhost/debian-python:bookworm, which has `python3` but no `python`).
ARG BASE_IMAGE=python:3.12-slim
FROM ${BASE_IMAGE} AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# `python3`: the one name every base has; from here on the venv's `python` comes first on PATH.
RUN python3 -m venv /opt/venv
WORKDIR /app

# Dependencies first: this layer is rebuilt only when pyproject.toml changes (README.md, which
# pyproject names as the readme, comes later so that editing it does not reinstall everything).
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The code, installed in place: migrations, dashboard assets and state_definitions/ stay where
# the package looks for them (next to it), with no extra package-data bookkeeping.
COPY README.md ./
COPY conductor ./conductor
COPY workers ./workers
COPY state_definitions ./state_definitions
RUN pip install --no-deps -e . \
    && python -m compileall -q conductor workers \
    && useradd --system --uid 10001 --user-group --home-dir /app --no-create-home --shell /usr/sbin/nologin conductor

# Read-only code, an unprivileged user; beat keeps its schedule file in /tmp.
USER 10001:10001
ENV CONDUCTOR_LOG_FORMAT=json

EXPOSE 8000
CMD ["conductor", "api", "--host", "0.0.0.0", "--port", "8000"]
