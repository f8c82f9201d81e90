#!/bin/sh
# The container's start: `wharf container` (app/serving/container.py) makes or checks the
# TLS certificate, adds WHARF_FIRST_USER, renders the configs from the WHARF_* variables
# and becomes supervisord (PID 1), which runs gunicorn and nginx.
# Any other command runs as given: `docker compose run --rm wharf wharf passwd ...`.
set -eu

if [ "$#" -gt 0 ] && [ "$1" != "serve" ]; then
    exec "$@"
fi
exec wharf container
