# Wharf: the index (gunicorn), nginx (HTTPS + cache) and supervisord in one image.
#
#   docker compose up                       # builds this file, see compose.yaml
#   docker build -t wharf .                 # or by hand
#
# Offline builds: put wheels in docker/wheelhouse/ (see the README there) and the base
# image under the name BASE_IMAGE; nothing else is fetched except Debian packages.

# Debian's python3 (3.11 on bookworm) serves both stages, so the virtualenv built in the
# first runs unchanged in the second.
ARG BASE_IMAGE=debian:bookworm-slim

# --- build: a virtualenv with the dependencies, then Wharf -------------------------
FROM ${BASE_IMAGE} AS build

# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/wharf/venv
WORKDIR /src

# Dependencies first, from pyproject.toml alone: a change to the code reuses this layer.
# With wheels in docker/wheelhouse/ nothing is fetched from an index.
COPY pyproject.toml docker/requirements.py ./
COPY docker/wheelhouse/ /wheels/
RUN python3 requirements.py pyproject.toml stack > requirements.txt \
 && if ls /wheels/*.whl >/dev/null 2>&1; then \
        set -- --no-index --find-links /wheels; \
    fi \
 && /opt/wharf/venv/bin/pip install "$@" -r requirements.txt

COPY README.md ./
COPY deploy/ deploy/
COPY app/ app/
# The build backend came with the dependencies, so no isolated build (and no index).
# The deploy templates land in the venv's share/wharf/deploy/, where `wharf render` looks.
RUN /opt/wharf/venv/bin/pip install --no-deps --no-build-isolation . \
 && /opt/wharf/venv/bin/pip uninstall -y -q setuptools pip

# --- runtime: Python, nginx, openssl (for the first-start CA); no build tools -------
FROM ${BASE_IMAGE} AS runtime

# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 nginx openssl \
 && rm -rf /var/lib/apt/lists/*

# One fixed, unprivileged UID/GID: chown bind-mounted directories to 10001:10001.
ARG WHARF_UID=10001
RUN groupadd --system --gid "${WHARF_UID}" wharf \
 && useradd --system --uid "${WHARF_UID}" --gid wharf --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin wharf \
 && mkdir -p /data/packages /data/users /etc/wharf/tls /etc/wharf/keys /run/wharf /var/cache/wharf /var/log/wharf \
 && chown -R wharf:wharf /data /etc/wharf /run/wharf /var/cache/wharf /var/log/wharf \
        /var/lib/nginx /var/log/nginx

COPY --from=build /opt/wharf/venv /opt/wharf/venv
COPY docker/entrypoint.sh /usr/local/bin/wharf-entrypoint
COPY docker/healthcheck.py /usr/local/bin/wharf-healthcheck

# Settings are WHARF_* variables (``wharf serve --help`` lists them). These place the
# index in the volumes and nginx on unprivileged ports; compose.yaml publishes them.
# (WHARF_PASSWORD_FILE names a file in the users volume; it holds no secret itself.)
# hadolint ignore=DL3064
ENV PATH=/opt/wharf/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    WHARF_PACKAGES=/data/packages \
    WHARF_PASSWORD_FILE=/data/users/htpasswd \
    WHARF_TLS_CERT=/etc/wharf/tls/server.crt \
    WHARF_TLS_KEY=/etc/wharf/tls/server.key \
    WHARF_HOST=127.0.0.1 \
    WHARF_PORT=8000 \
    WHARF_HTTP_PORT=8080 \
    WHARF_HTTPS_PORT=8443 \
    WHARF_CACHE_PATH=/var/cache/wharf/nginx \
    WHARF_LOG_DIR=/var/log/wharf \
    WHARF_RUN_DIR=/run/wharf \
    WHARF_CONFIG_DIR=/etc/wharf \
    WHARF_PYTHON=/opt/wharf/venv/bin/python3 \
    WHARF_SUPERVISE_NGINX=true \
    WHARF_LOG_STDOUT=true \
    WHARF_OCSP_STAPLING=false

USER ${WHARF_UID}:${WHARF_UID}
WORKDIR /data
VOLUME ["/data/packages", "/data/users", "/etc/wharf/tls"]
EXPOSE 8080 8443

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "/usr/local/bin/wharf-healthcheck"]

LABEL org.opencontainers.image.title="Wharf" \
      org.opencontainers.image.description="A private Python package index: gunicorn and nginx (HTTPS, cache) under supervisord" \
      org.opencontainers.image.licenses="MIT"

# supervisord stops gunicorn (graceful) and nginx on SIGTERM, then exits.
STOPSIGNAL SIGTERM
ENTRYPOINT ["wharf-entrypoint"]
CMD ["serve"]
