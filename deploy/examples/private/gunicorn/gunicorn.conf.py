"""gunicorn's configuration for Wharf: ``gunicorn -c THIS_FILE app.wsgi:application``.

Rendered by Wharf from deploy/gunicorn/gunicorn.conf.py.j2 (edit that, not this file),
from the same settings as the nginx and supervisord configs beside it. That template is
the one place gunicorn's options are set: `wharf serve` renders and loads it too.
"""

import os

# 1. The app's settings are this deployment's WHARF_* variables, read from the env file
#    rendered with this config. That file is the whole configuration: WHARF_* variables
#    inherited from whoever started gunicorn are dropped first, so the app cannot drift
#    from the nginx config rendered from the same settings. A missing file stops gunicorn.
ENV_FILE = "/etc/wharf/wharf.env"


def _read_env(path):
    values = {}
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            line = line.strip()
            if line and not line.startswith("#"):
                name, _, value = line.partition("=")
                values[name.strip()] = value
    return values


for _name in [name for name in os.environ if name.startswith("WHARF_")]:
    del os.environ[_name]
raw_env = [f"{name}={value}" for name, value in _read_env(ENV_FILE).items()]

# 2. Where the app listens (nginx's upstream) and how many workers: 0 in the settings
#    means 2 x cores + 1, at most 8, counted on the machine that runs gunicorn.
bind = ["127.0.0.1:8000"]
workers = 4
worker_class = "sync"

# 3. A worker may spend this long on one request (slow uploads); on TERM, requests in
#    flight get graceful_timeout seconds to finish.
timeout = 300
graceful_timeout = 10

# 4. Logs: "-" is standard output/error, which supervisord writes to files and rotates.
accesslog = "-"
errorlog = "-"
loglevel = "info"
# gunicorn's default format logs the Basic user name unverified (%(u)s), which is where a
# password typed into the name field would land: "-" instead (issue 14.10).
access_log_format = '%(h)s %(l)s - %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'

# 5. Forwarded headers are judged by the app's own trusted_proxies, not by gunicorn.
secure_scheme_headers = {}
forwarded_allow_ips = "127.0.0.1"
proc_name = "wharf"
# gunicorn >= 27 opens a control socket at one fixed path per user by default, which
# two indexes on one machine would fight over.
control_socket_disable = True


# 6. A worker whose master died (killed, OOM) finishes the request it is serving and exits:
#    gunicorn's sync worker only checks its parent when no connection is waiting, so under
#    steady traffic an orphan kept serving, and held the port the restarted master needs.
def post_request(worker, req, environ, resp):
    if os.getppid() != worker.ppid:
        worker.log.info("master %s is gone: worker %s exits after this request", worker.ppid, worker.pid)
        worker.alive = False


# 7. /metrics (app/metrics.py): the workers share their counts through files in this
#    directory (prometheus_client's multi-process mode). It is emptied when gunicorn
#    starts (counts of an earlier run would be summed in) and a worker's live gauges are
#    dropped when it exits. The files are memory-mapped: on a full disk a worker writing
#    one dies of SIGBUS, so they live in shared memory (/dev/shm) where there is one, never
#    beside the packages. One directory per state dir and port.
def _metrics_dir(state, port):
    import hashlib

    shm = "/dev/shm"
    base = shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else state
    return os.path.join(base, f"wharf-metrics-{hashlib.sha256(state.encode()).hexdigest()[:12]}-{port}")


METRICS_DIR = _metrics_dir("/data/packages/.wharf", 8000)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = METRICS_DIR


def on_starting(server):
    import shutil

    shutil.rmtree(METRICS_DIR, ignore_errors=True)
    os.makedirs(METRICS_DIR, exist_ok=True)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
