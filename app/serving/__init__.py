"""How Wharf is run: gunicorn, the configs around it, the local stack, pypiserver's command line.

  render.py          deploy/'s templates -> nginx, supervisord and gunicorn configs
  appserver.py       ``wharf serve``: the app under gunicorn with the rendered gunicorn config
  stack.py           ``wharf stack``: nginx, gunicorn and supervisord on one machine, no root
  local_ca.py        a local certificate authority for a stack or a container without one
  container.py       the container's start: certificate, first user, configs, supervisord
  pypiserver_cli.py  ``pypi-server``: pypiserver's command line on Wharf

This file imports nothing: the Ansible role loads render.py (and settings.py) from the
source tree on its controller without the rest of the app.
"""
