"""CLI command ``serve``: a model folder over HTTP (JSON API and web page) with uvicorn.

One worker (the default) runs uvicorn in this process. With ``--workers N`` this process binds
the socket, starts N worker processes that share it, starts a new one in place of a worker that
dies (a crash, an out-of-memory kill) and relays signals to them: ``SIGHUP`` reloads the model in
every worker (each swaps atomically once its new model passed its check), ``SIGINT``/``SIGTERM``
stop them gracefully (in-flight requests finish, up to ``--graceful-timeout`` seconds).

uvicorn runs the guarded HTTP protocol of :mod:`cfrec.serve.protocol` (request head limit,
timeouts for slow heads and bodies). Admin endpoints need ``--admin-token`` (or
``--admin-token-file``, or ``CFREC_ADMIN_TOKEN``), which is required to listen beyond loopback.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from cfrec.cli._app import app, err_console, fail

logger = logging.getLogger("cfrec.serve")


def _configure_logging(level: str, access_log: bool) -> None:
    """Service logs on stderr with a timestamp; access lines at INFO unless turned off."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    serve_logger = logging.getLogger("cfrec.serve")
    serve_logger.handlers[:] = [handler]
    serve_logger.setLevel(level.upper())
    serve_logger.propagate = False
    logging.getLogger("cfrec.serve.access").setLevel(logging.INFO if access_log else logging.WARNING)


@dataclass(frozen=True)
class ServeOptions:
    """What every worker process serves and how (passed to spawned workers)."""

    model_dir: str
    host: str
    port: int
    log_level: str = "info"
    access_log: bool = True
    graceful_timeout: int = 10
    admin_token: str | None = None
    allowed_hosts: tuple[str, ...] = field(default_factory=tuple)
    max_header_bytes: int = 64 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    pool_threads: int = 1
    pool_queue: int = 32


#: Seconds a thread may hold the interpreter lock while another waits for it (see _run_worker).
SWITCH_INTERVAL = 0.001


def _uvicorn_config(application: Any, opts: ServeOptions) -> Any:
    import uvicorn

    extra: dict[str, Any] = {}
    try:
        from cfrec.serve.protocol import guarded_protocol

        extra["http"] = guarded_protocol(opts.max_header_bytes, opts.header_timeout,
                                         opts.body_timeout)
    except ImportError:  # no httptools: h11 bounds the head, but slow clients are not cut
        logger.warning("httptools is not installed: request heads are limited, but slow heads "
                       "and bodies are not timed out (pip install 'cfrec[serve]')")
        extra.update(http="h11", h11_max_incomplete_event_size=opts.max_header_bytes)
    return uvicorn.Config(application, host=opts.host, port=opts.port, log_level=opts.log_level,
                          access_log=False, timeout_graceful_shutdown=opts.graceful_timeout,
                          lifespan="on", server_header=False, **extra)


def _run_worker(opts: ServeOptions, sock: socket.socket | None) -> None:
    """One serving process: load the model (a bad folder exits with status 1), then serve."""
    import uvicorn

    from cfrec.errors import CfrecError
    from cfrec.serve import create_app
    from cfrec.threads import using_threads

    _configure_logging(opts.log_level, opts.access_log)
    # A large request in the pool thread holds the interpreter lock while it parses and
    # validates; the event loop gets the lock back after at most this long (Python's default:
    # 5 ms, several times per request), so small requests are not held behind large ones.
    sys.setswitchinterval(SWITCH_INTERVAL)
    # Each request's numeric work is small: one BLAS/torch thread per process avoids idle
    # thread pools spinning against the event loop (CFREC_NUM_THREADS overrides).
    threads = int(os.environ.get("CFREC_NUM_THREADS", "") or 1)
    with using_threads(threads):
        try:
            application = create_app(opts.model_dir, handle_sighup=True,
                                     admin_token=opts.admin_token,
                                     allowed_hosts=opts.allowed_hosts, bind_host=opts.host,
                                     pool_threads=opts.pool_threads, pool_queue=opts.pool_queue)
        except CfrecError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True, markup=False)
            sys.exit(1)
        server = uvicorn.Server(_uvicorn_config(application, opts))
        server.run(sockets=[sock] if sock is not None else None)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


#: A worker that exits within this many seconds of its start failed to start (a bad model
#: folder): the service stops instead of starting it again and again.
START_SECONDS = 30.0
#: Most worker restarts within RESTART_WINDOW seconds before the service gives up.
MAX_RESTARTS = 10
RESTART_WINDOW = 60.0


def _supervise(opts: ServeOptions, workers: int) -> int:
    """Start ``workers`` processes on one socket, start a new one in place of one that dies, and
    relay SIGHUP (reload) and SIGINT/SIGTERM (stop)."""
    sock = _bind(opts.host, opts.port)
    ctx = multiprocessing.get_context("spawn")
    procs: list[Any] = [None] * workers
    started = [0.0] * workers
    restarts: list[float] = []
    stopping = False
    sighup = getattr(signal, "SIGHUP", None)

    def start(slot: int) -> None:
        p = ctx.Process(target=_run_worker, name=f"cfrec-serve-{slot}", args=(opts, sock))
        # workers start with SIGHUP ignored (an ignored signal stays ignored across exec) until
        # their event loop installs the reload handler: a SIGHUP relayed while one is still
        # starting must not kill it (one that had already loaded the previous model keeps it
        # until the next reload)
        if sighup is not None:
            signal.signal(sighup, signal.SIG_IGN)
        try:
            p.start()
        finally:
            if sighup is not None:
                signal.signal(sighup, relay)
        procs[slot], started[slot] = p, time.monotonic()

    def relay(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if signum == sighup:
            logger.info("SIGHUP: reloading the model in %d workers", len(procs))
            for p in procs:
                if p is not None and p.pid is not None and p.is_alive():
                    os.kill(p.pid, signum)
            return
        stopping = True
        for p in procs:
            if p is not None and p.pid is not None and p.is_alive():
                os.kill(p.pid, signal.SIGTERM)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, relay)
    for slot in range(workers):
        start(slot)
    logger.info("serving %s on http://%s:%d with %d workers (pids %s)", opts.model_dir, opts.host,
                opts.port, workers, ", ".join(str(p.pid) for p in procs))
    status = 0
    try:
        while True:
            if not any(p.is_alive() for p in procs):
                break
            if not stopping:
                for slot, p in enumerate(procs):
                    if p.is_alive():
                        continue
                    now = time.monotonic()
                    restarts[:] = [t for t in restarts if now - t < RESTART_WINDOW]
                    early = now - started[slot] < START_SECONDS and p.exitcode == 1
                    if early or len(restarts) >= MAX_RESTARTS:
                        status = 1
                        why = ("failed to start" if early else
                               f"exited ({len(restarts)} restarts in {RESTART_WINDOW:g} s)")
                        logger.error("worker %s %s with status %s; stopping the others", p.pid,
                                     why, p.exitcode)
                        relay(signal.SIGTERM, None)
                        break
                    restarts.append(now)
                    old_pid, code = p.pid, p.exitcode
                    start(slot)
                    logger.error("worker %s exited with status %s; started worker %s in its place",
                                 old_pid, code, procs[slot].pid)
            time.sleep(0.2)
    finally:
        for p in procs:
            p.join(timeout=opts.graceful_timeout + 5)
        sock.close()
    return status


def _is_loopback(host: str) -> bool:
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    return host == "localhost"


def _admin_token(token: str | None, token_file: Path | None) -> str | None:
    if token is not None and token_file is not None:
        fail("give the admin token once: --admin-token (or CFREC_ADMIN_TOKEN) or --admin-token-file")
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"--admin-token-file {token_file}: cannot read it "
                 f"({getattr(exc, 'strerror', None) or exc})")
        if not token:
            fail(f"--admin-token-file {token_file}: the file is empty")
    if token is not None:
        token = token.strip()
        if len(token) < 16 or not token.isascii() or any(c.isspace() for c in token):
            fail("the admin token must be at least 16 printable ASCII characters without spaces "
                 "(e.g. python -c 'import secrets; print(secrets.token_urlsafe())')")
    return token


@app.command()
def serve(
    model_dir: Annotated[Path, typer.Argument(help="Model folder written by 'cfrec train'.")],
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default; another "
                                           "address needs an admin token).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free port).")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes sharing the port (a dead "
                                                     "one is replaced).")] = 1,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    access_log: Annotated[bool, typer.Option(help="One log line per request, with its latency.")] = True,
    graceful_timeout: Annotated[int, typer.Option(min=0, help="Seconds in-flight requests get to "
                                                              "finish on shutdown.")] = 10,
    admin_token: Annotated[str | None, typer.Option(
        envvar="CFREC_ADMIN_TOKEN", show_envvar=True,
        help="Token the admin endpoints (POST /v1/admin/reload) need as 'Authorization: Bearer "
             "TOKEN'; without one they are off (SIGHUP still reloads). Required with a --host "
             "beyond loopback. Prefer the environment variable or --admin-token-file (a command "
             "line is visible to other users).")] = None,
    admin_token_file: Annotated[Path | None, typer.Option(
        help="File holding the admin token (first line).")] = None,
    allowed_host: Annotated[list[str] | None, typer.Option(
        help="Host name the service answers to besides loopback names and --host (repeatable; "
             "'*': any). Other Host headers get 403 (DNS rebinding).")] = None,
    max_header_bytes: Annotated[int, typer.Option(
        min=1024, help="Largest request head (request line and headers); larger: 431.")] = 64 * 1024,
    header_timeout: Annotated[float, typer.Option(
        min=0.1, help="Seconds a client has to send a request head; slower: 408, closed.")] = 10.0,
    body_timeout: Annotated[float, typer.Option(
        min=0.1, help="Seconds a client has to send a request body; slower: 408, closed.")] = 30.0,
    pool_threads: Annotated[int, typer.Option(
        min=1, help="Threads for large requests (long lists, big fold-ins) per worker.")] = 1,
    pool_queue: Annotated[int, typer.Option(
        min=0, help="Large requests that may wait for a thread; more: 429 with Retry-After.")] = 32,
) -> None:
    """Serve a model over HTTP: JSON API (/docs), web page at /, reload on SIGHUP or
    POST /v1/admin/reload (with the admin token) without downtime."""
    from cfrec.models.persistence import read_meta

    if log_level.lower() not in ("debug", "info", "warning", "error"):
        fail(f"--log-level must be debug, info, warning or error, got {log_level!r}")
    token = _admin_token(admin_token, admin_token_file)
    if token is None and not _is_loopback(host):
        fail(f"--host {host} makes the service reachable from other machines: give an admin "
             "token (--admin-token-file FILE or CFREC_ADMIN_TOKEN) so that only its holder can "
             "use the admin endpoints, or listen on 127.0.0.1")
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        fail(f"serving needs FastAPI and uvicorn ({exc.name} is not installed); "
             "install them with: pip install 'cfrec[serve]'")
    read_meta(model_dir)  # a folder that is not a model fails here, before any port is opened
    _configure_logging(log_level, access_log)
    if not _is_loopback(host):
        logger.warning("listening on %s: the service is reachable from other machines (admin "
                       "endpoints need the token)", host)
    opts = ServeOptions(str(model_dir), host, port, log_level.lower(), access_log, graceful_timeout,
                        token, tuple(allowed_host or ()), max_header_bytes, header_timeout,
                        body_timeout, pool_threads, pool_queue)
    if workers == 1:
        logger.info("serving %s on http://%s:%d (pid %d; SIGHUP reloads the model)", model_dir,
                    host, port, os.getpid())
        _run_worker(opts, None)
        return
    code = _supervise(opts, workers)
    if code:
        raise typer.Exit(code)
