"""CLI command ``serve``: a model folder over HTTP (JSON API and web page) with uvicorn.

One worker (the default) runs uvicorn in this process. With ``--workers N`` this process binds
the socket, starts N worker processes that share it and relays signals to them: ``SIGHUP``
reloads the model in every worker (each swaps atomically once its new model passed its check),
``SIGINT``/``SIGTERM`` stop them gracefully (in-flight requests finish, up to
``--graceful-timeout`` seconds).
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


def _uvicorn_config(application: Any, *, host: str, port: int, log_level: str,
                    graceful_timeout: int) -> Any:
    import uvicorn

    return uvicorn.Config(application, host=host, port=port, log_level=log_level, access_log=False,
                          timeout_graceful_shutdown=graceful_timeout, lifespan="on",
                          server_header=False)


def _run_worker(model_dir: str, sock: socket.socket | None, host: str, port: int, log_level: str,
                access_log: bool, graceful_timeout: int) -> None:
    """One serving process: load the model (a bad folder exits with status 1), then serve."""
    import uvicorn

    from cfrec.errors import CfrecError
    from cfrec.serve import create_app
    from cfrec.threads import using_threads

    _configure_logging(log_level, access_log)
    # Each request's numeric work is small: one BLAS/torch thread per process avoids idle
    # thread pools spinning against the event loop (CFREC_NUM_THREADS overrides).
    threads = int(os.environ.get("CFREC_NUM_THREADS", "") or 1)
    with using_threads(threads):
        try:
            application = create_app(model_dir, handle_sighup=True)
        except CfrecError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True, markup=False)
            sys.exit(1)
        server = uvicorn.Server(_uvicorn_config(application, host=host, port=port,
                                                log_level=log_level, graceful_timeout=graceful_timeout))
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


def _supervise(model_dir: str, host: str, port: int, workers: int, log_level: str,
               access_log: bool, graceful_timeout: int) -> int:
    """Start ``workers`` processes on one socket; relay SIGHUP (reload) and SIGINT/SIGTERM (stop)."""
    sock = _bind(host, port)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_run_worker, name=f"cfrec-serve-{i}",
                         args=(model_dir, sock, host, port, log_level, access_log, graceful_timeout))
             for i in range(workers)]
    stopping = False

    def relay(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if signum == signal.SIGHUP:
            logger.info("SIGHUP: reloading the model in %d workers", len(procs))
            for p in procs:
                if p.pid is not None and p.is_alive():
                    os.kill(p.pid, signal.SIGHUP)
            return
        stopping = True
        for p in procs:
            if p.pid is not None and p.is_alive():
                os.kill(p.pid, signal.SIGTERM)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, relay)
    # workers start with SIGHUP ignored (an ignored signal stays ignored across exec) until their
    # event loop installs the reload handler: a SIGHUP relayed while one is still starting must
    # not kill it (one that had already loaded the previous model keeps it until the next reload)
    sighup = getattr(signal, "SIGHUP", None)
    if sighup is not None:
        signal.signal(sighup, signal.SIG_IGN)
    for p in procs:
        p.start()
    if sighup is not None:
        signal.signal(sighup, relay)
    logger.info("serving %s on http://%s:%d with %d workers (pids %s)", model_dir, host, port,
                workers, ", ".join(str(p.pid) for p in procs))
    status = 0
    try:
        while True:
            alive = [p for p in procs if p.is_alive()]
            if not alive:
                break
            if not stopping and len(alive) < len(procs):
                dead = [p for p in procs if not p.is_alive()]
                status = 1
                logger.error("worker %s exited with status %s; stopping the others",
                             dead[0].pid, dead[0].exitcode)
                relay(signal.SIGTERM, None)
            time.sleep(0.2)
    finally:
        for p in procs:
            p.join(timeout=graceful_timeout + 5)
        sock.close()
    return status


def _is_loopback(host: str) -> bool:
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host).is_loopback
    return host == "localhost"


@app.command()
def serve(
    model_dir: Annotated[Path, typer.Argument(help="Model folder written by 'cfrec train'.")],
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default; another "
                                           "address exposes the service, admin reload included).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free port).")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes sharing the port.")] = 1,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    access_log: Annotated[bool, typer.Option(help="One log line per request, with its latency.")] = True,
    graceful_timeout: Annotated[int, typer.Option(min=0, help="Seconds in-flight requests get to "
                                                              "finish on shutdown.")] = 10,
) -> None:
    """Serve a model over HTTP: JSON API (/docs), web page at /, reload on SIGHUP or
    POST /v1/admin/reload without downtime."""
    from cfrec.models.persistence import read_meta

    if log_level.lower() not in ("debug", "info", "warning", "error"):
        fail(f"--log-level must be debug, info, warning or error, got {log_level!r}")
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        fail(f"serving needs FastAPI and uvicorn ({exc.name} is not installed); "
             "install them with: pip install 'cfrec[serve]'")
    read_meta(model_dir)  # a folder that is not a model fails here, before any port is opened
    _configure_logging(log_level, access_log)
    if not _is_loopback(host):
        logger.warning("listening on %s: the service, POST /v1/admin/reload included, is reachable "
                       "from other machines", host)
    if workers == 1:
        logger.info("serving %s on http://%s:%d (pid %d; SIGHUP reloads the model)", model_dir,
                    host, port, os.getpid())
        _run_worker(str(model_dir), None, host, port, log_level.lower(), access_log, graceful_timeout)
        return
    code = _supervise(str(model_dir), host, port, workers, log_level.lower(), access_log,
                      graceful_timeout)
    if code:
        raise typer.Exit(code)
