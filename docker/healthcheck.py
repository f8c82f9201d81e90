"""The container's health check: /health through nginx over HTTPS, as clients come in.

Going through nginx checks the whole chain (TLS, proxy, gunicorn, the catalog). The
certificate is not verified: this checks that the index works, not who may trust it
(a real certificate's name need not resolve inside the container). An app container of
a cluster (WHARF_COMPONENTS=app) runs no nginx: its gunicorn is asked over HTTP.
"""

import http.client
import ssl
import sys

from app.settings import Settings


def main() -> int:
    settings = Settings.from_env()  # the container's WHARF_* variables, read as the app reads them
    path = settings.health_endpoint
    if "proxy" in settings.components:
        scheme, port = "https", settings.https_port
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=4, context=context)
    else:
        scheme, port = "http", settings.port
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=4)
    try:
        connection.request("GET", path, headers={"Host": settings.server_name})
        response = connection.getresponse()
        body = response.read(2000).decode("utf-8", "replace")
    except OSError as exc:
        print(f"unhealthy: {scheme}://127.0.0.1:{port}{path}: {exc}")
        return 1
    finally:
        connection.close()
    print(f"{response.status} {body}")
    return 0 if response.status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
