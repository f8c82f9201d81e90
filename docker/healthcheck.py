"""The container's health check: /health through nginx over HTTPS, as clients come in.

Going through nginx checks the whole chain (TLS, proxy, gunicorn, the catalog). The
certificate is not verified: this checks that the index works, not who may trust it
(a real certificate's name need not resolve inside the container).
"""

import http.client
import os
import ssl
import sys


def main() -> int:
    port = int(os.environ.get("WHARF_HTTPS_PORT", "8443"))
    path = os.environ.get("WHARF_HEALTH_ENDPOINT", "/health")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=4, context=context)
    try:
        connection.request("GET", path, headers={"Host": os.environ.get("WHARF_SERVER_NAME", "localhost")})
        response = connection.getresponse()
        body = response.read(2000).decode("utf-8", "replace")
    except OSError as exc:
        print(f"unhealthy: https://127.0.0.1:{port}{path}: {exc}")
        return 1
    finally:
        connection.close()
    print(f"{response.status} {body}")
    return 0 if response.status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
