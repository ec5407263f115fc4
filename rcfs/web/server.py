"""The web player's HTTP server: Hypercorn's trio worker in the daemon's nursery.

Owns the listening socket and the server's lifetime. The socket is bound
before anything else starts, so an address that cannot be bound (a port in
use, an unknown host, a privileged port) raises a plain `OSError` from
`nursery.start(serve_web, ...)` and the caller can say so in one line.
Loopback unless told otherwise; Hypercorn's own access log is off (the app
logs requests without their query strings, see app.py) and its error log
goes to `rcfs.web.http`.
"""

from __future__ import annotations

import logging
import socket
from functools import partial
from typing import Any, cast

import trio

from .app import WebApp

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"


def _url(scheme: str, host: str, port: int) -> str:
    if host in ("", "0.0.0.0", "::"):  # every address: name this machine
        host = socket.gethostname()
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}/"


async def serve_web(
    web: WebApp,
    host: str = DEFAULT_HOST,
    port: int = 0,
    *,
    certfile: str | None = None,
    keyfile: str | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `web` on host:port (0: any free port) until cancelled.

    An empty `host` is loopback; `0.0.0.0` or `::` serve every interface (the URL
    then names this machine by its host name).
    `task_status.started(url)` with the player's URL (`http://127.0.0.1:8080/`),
    also in `web.url` and `web.snapshot()["url"]`. With `certfile` and `keyfile`
    (PEM) it speaks HTTPS and the session cookie is Secure. Raises OSError,
    before it has started, if the address cannot be bound.
    """
    from hypercorn.config import Config
    from hypercorn.trio.run import worker_serve
    from hypercorn.utils import wrap_app

    host = host or DEFAULT_HOST  # ":8080" means loopback, as for --metrics
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("rcfs.web.http")
    config.graceful_timeout = 1.0
    config.include_server_header = False
    if certfile is not None:
        config.certfile, config.keyfile = certfile, keyfile
    sockets = config.create_sockets()  # binds: OSError for a port in use
    listening = [*sockets.secure_sockets, *sockets.insecure_sockets]
    try:
        for sock in listening:
            sock.listen(config.backlog)
        bound_port = listening[0].getsockname()[1]
    except BaseException:
        for sock in listening:
            sock.close()
        raise
    url = _url("https" if certfile else "http", host, bound_port)
    web.bound(url, bound_port)
    app = wrap_app(cast(Any, web.asgi), config.wsgi_max_body_size, "asgi")
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(worker_serve, app, config, sockets=sockets))
            log.info("web player at %s", url)
            task_status.started(url)
    finally:
        for sock in listening:
            sock.close()
