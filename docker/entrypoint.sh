#!/bin/sh
# The container's start, as the unprivileged wharf user:
#   1. a TLS certificate: a mounted one is used as is; without one, a local CA and a
#      server certificate are made in the TLS volume (the code `wharf stack` uses);
#   2. the first user, if WHARF_FIRST_USER asks for one (`wharf passwd`);
#   3. nginx, supervisord and gunicorn configs rendered by `wharf render` from the
#      WHARF_* variables: the same templates the CLI and the Ansible role render;
#   4. supervisord in the foreground (PID 1) running gunicorn and nginx; SIGTERM stops
#      both and the container.
# Any other command runs as given: `docker compose run --rm wharf wharf passwd ...`.
set -eu

if [ "$#" -gt 0 ] && [ "$1" != "serve" ]; then
    exec "$@"
fi

log() { printf 'wharf: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

server_name=${WHARF_SERVER_NAME:-localhost}
config_dir=${WHARF_CONFIG_DIR:-/etc/wharf}
cert=${WHARF_TLS_CERT:?}
key=${WHARF_TLS_KEY:?}
tls_dir=$(dirname "$cert")
ca="$tls_dir/ca.crt"

# --- 1. TLS --------------------------------------------------------------------------------
public_url() {
    port=${WHARF_PUBLIC_HTTPS_PORT:-443}
    if [ "$port" = 443 ]; then echo "https://$server_name"; else echo "https://$server_name:$port"; fi
}

trust_instructions() {
    fingerprint=$(openssl x509 -in "$ca" -noout -fingerprint -sha256 | cut -d= -f2)
    url=$(public_url)
    log "clients trust this index through its local CA $ca (SHA-256 $fingerprint):"
    log "  docker compose cp wharf:$ca wharf-ca.crt   (plain docker: docker cp CONTAINER:$ca wharf-ca.crt)"
    log "  pip install --cert wharf-ca.crt --index-url $url/simple/ PACKAGE"
    log "  SSL_CERT_FILE=wharf-ca.crt uv pip install --index-url $url/simple/ PACKAGE"
    log "  twine upload --cert wharf-ca.crt --repository-url $url/ dist/*"
    log "a certificate of your own replaces it: mount it at $cert, its key at $key"
}

names_server() {
    # Does the certificate name WHARF_SERVER_NAME (a host name or an IP address)?
    case "$server_name" in
        *:*) check="-checkip" ;;       # IPv6
        *[!0-9.]*) check="-checkhost" ;;
        *) check="-checkip" ;;         # IPv4
    esac
    openssl x509 -in "$cert" -noout "$check" "$server_name" 2>/dev/null | grep -q " does match "
}

if [ -d "$tls_dir" ] && ! { [ -r "$tls_dir" ] && [ -x "$tls_dir" ]; }; then
    die "cannot read $tls_dir as uid $(id -u): make it readable (the image runs as 10001:10001)"
fi
if [ -s "$cert" ] && [ -s "$key" ] && [ -r "$cert" ] && [ -r "$key" ]; then
    if [ -s "$ca" ] && [ -s "$tls_dir/ca.key" ]; then
        trust_instructions
        renew="remove server.crt, server.key and ca.* from the TLS volume to get new ones"
    else
        log "using the certificate $cert"
        renew="mount a new one"
    fi
    names_server || log "warning: $cert does not name $server_name; $renew"
    openssl x509 -in "$cert" -noout -checkend 2592000 >/dev/null \
        || log "warning: $cert expires within 30 days; $renew"
elif [ -e "$cert" ] && [ -e "$key" ]; then
    die "cannot read $cert or $key as uid $(id -u), or one is empty: the image runs as 10001:10001"
elif [ -e "$cert" ] || [ -e "$key" ]; then
    die "found only one of $cert and $key: provide both, or neither to get a local CA"
elif [ "$(basename "$cert")" != server.crt ] || [ "$key" != "$tls_dir/server.key" ]; then
    die "no certificate at $cert (a local CA is made only for $tls_dir/server.crt and server.key)"
else
    [ -w "$tls_dir" ] && [ -x "$tls_dir" ] \
        || die "no certificate in $tls_dir, and uid $(id -u) cannot write one there: mount a certificate or a writable volume"
    python3 -c 'import sys; from pathlib import Path; from app.stack import make_local_ca; make_local_ca(Path(sys.argv[1]), sys.argv[2])' \
        "$tls_dir" "$server_name" || die "could not make a local CA in $tls_dir"
    log "made a local certificate authority and a certificate for $server_name in $tls_dir"
    trust_instructions
fi

# --- 2. users: the htpasswd file in the users volume ---------------------------------------
users=${WHARF_PASSWORD_FILE:-}
if [ -n "$users" ] && [ "$users" != "." ] && [ ! -e "$users" ]; then
    # An empty file: no users yet, uploads refused until `wharf passwd` adds one.
    : > "$users" || die "cannot create $users: is the users volume writable by uid $(id -u)?"
fi
if [ -n "${WHARF_FIRST_USER:-}" ]; then
    [ -n "$users" ] && [ "$users" != "." ] || die "WHARF_FIRST_USER needs WHARF_PASSWORD_FILE"
    if cut -d: -f1 "$users" | grep -Fqx -- "$WHARF_FIRST_USER"; then
        # The file wins over the variable: a password changed since is not reset.
        log "user $WHARF_FIRST_USER exists in $users"
    else
        password=${WHARF_FIRST_PASSWORD:-}
        if [ -n "${WHARF_FIRST_PASSWORD_FILE:-}" ]; then
            password=$(cat "$WHARF_FIRST_PASSWORD_FILE") || die "cannot read $WHARF_FIRST_PASSWORD_FILE"
        fi
        [ -n "$password" ] || die "WHARF_FIRST_USER needs WHARF_FIRST_PASSWORD or WHARF_FIRST_PASSWORD_FILE"
        printf '%s\n' "$password" | wharf passwd "$users" "$WHARF_FIRST_USER" >/dev/null
        log "added user $WHARF_FIRST_USER to $users"
    fi
fi
# The servers have no use for the first password.
unset WHARF_FIRST_PASSWORD password

# --- 3. configs ------------------------------------------------------------------------------
mkdir -p "${WHARF_RUN_DIR:-/run/wharf}/nginx" "${WHARF_CACHE_PATH:-/var/cache/wharf/nginx}" \
    "${WHARF_LOG_DIR:-/var/log/wharf}"
wharf render all --out "$config_dir" >/dev/null
nginx -t -q -c "$config_dir/nginx/nginx.conf" -e stderr || die "nginx rejects $config_dir/nginx/nginx.conf"

# --- 4. supervisord --------------------------------------------------------------------------
log "serving $(public_url)/simple/ (in the container: HTTPS on ${WHARF_HTTPS_PORT:-8443}, HTTP on ${WHARF_HTTP_PORT:-8080})"
exec supervisord --configuration "$config_dir/supervisor/supervisord.conf"
