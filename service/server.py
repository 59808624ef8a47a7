"""Serving the web application: the socket bound first, then uvicorn.

:func:`bind` binds the configured address before anything says "listening",
so a taken port is one clear error (:class:`PortTaken`, naming ``http.port``)
and never uvicorn's own exit. :class:`Server` runs uvicorn on that socket, in
this thread (``paperboy serve``) or a background one (``paperboy run``).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable

import uvicorn

from .cycle import App
from .log import event
from .web import create_app

log = logging.getLogger("paperboy.web")


class PortTaken(OSError):
    """The web server's address cannot be bound (taken, or not this machine's)."""


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port``, or :class:`PortTaken` saying what to change.
    Bound before anything says "listening", and handed to uvicorn."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise PortTaken(f"cannot listen on {host}:{port}: {exc}; check http.host") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise PortTaken(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; is another process using the port? "
            "set http.port (or http.enabled: false)"
        ) from exc
    sock.set_inheritable(True)
    return sock


class Server:
    """uvicorn serving :func:`create_app`, in this thread (``serve``) or a background one (``start``).
    The socket is bound first (:func:`bind`, :class:`PortTaken` when it cannot be)."""

    def __init__(self, current: Callable[[], App], *, host: str, port: int) -> None:
        config = uvicorn.Config(
            create_app(current), host=host, port=port, log_level="warning", access_log=False, lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.host, self.port = host, port
        self.thread: threading.Thread | None = None
        self.socket: socket.socket | None = None

    def _bind(self) -> socket.socket:
        if self.socket is None:
            self.socket = bind(self.host, self.port)
            event(log, "http.listening", url=f"http://{self.host}:{self.port}/")
        return self.socket

    def serve(self) -> None:
        sock = self._bind()
        if threading.current_thread() is threading.main_thread():
            # uvicorn stops on SIGTERM/SIGINT, then raises the signal again for the handler it
            # found: let that be ours, so a requested stop exits with 0.
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda signum, _frame: event(log, "http.stopped", signal=signum))
        try:
            self.server.run(sockets=[sock])
        finally:
            sock.close()

    def start(self, *, timeout: float = 10.0) -> bool:
        """Serve on a background thread (:class:`PortTaken` when the port cannot be bound);
        False when the server did not start in time."""
        self._bind()
        self.thread = threading.Thread(target=self._serve_quietly, name="http", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        return bool(self.server.started)

    def _serve_quietly(self) -> None:
        with contextlib.suppress(SystemExit):  # uvicorn exits on a startup error; start() reports it
            self.serve()

    @property
    def started(self) -> bool:
        return bool(self.server.started)

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=10)
