"""The HTTP service: a FastAPI application serving one model folder.

Endpoints (JSON, raw ids as the model knows them: integers or strings)::

    GET  /healthz                      liveness
    GET  /readyz                       200 once a model is loaded and checked, else 503
    GET  /v1/model                     model card
    GET  /v1/recommend/{user_id}       top-k for a training user (a new user: the cold-start list)
    POST /v1/recommend                 top-k for a new user folded in from a few ratings
    GET  /v1/similar/{item_id}         nearest items by cosine of item vectors
    GET  /v1/predict?user=&item=       one score / predicted rating
    GET  /v1/items?q=&limit=           title search (no ``q``: the most-rated items)
    POST /v1/admin/reload              load the model folder's current version and swap it in
                                       (needs the admin token)
    GET  /                             the web page; /openapi.json and /docs describe the API

The package keeps only HTTP; every answer is the library's own (``Recommender.recommend``,
``fold_in``, ``similar_items``, ``predict``, ``score`` for one user or item, and the
:class:`~cfrec.catalog.Catalog`'s item records). Its modules:

* :mod:`~cfrec.serve.schemas` -- request and response bodies (validation, OpenAPI);
* :mod:`~cfrec.serve.params` -- the busiest endpoints' parameters, read from the request and
  validated by the schemas' models (FastAPI's own errors and OpenAPI entries, a fraction of the cost);
* :mod:`~cfrec.serve.snapshot` -- one immutable, checked snapshot per model version, swapped
  atomically on reload (``POST /v1/admin/reload`` or ``SIGHUP`` to ``cfrec serve``) without
  downtime: the old model answers until the new one has loaded and passed its check;
* :mod:`~cfrec.serve.middleware` -- the access log and the request body limit;
* :mod:`~cfrec.serve.security` -- the Host and Origin checks and the admin token;
* :mod:`~cfrec.serve.pool` -- where a request runs: small ones on the event loop, large ones (by
  their own size) in a bounded thread pool that answers 429 when full;
* :mod:`~cfrec.serve.protocol` -- uvicorn's HTTP protocol with a request head limit (431) and
  timeouts for slow heads and bodies (408), as ``cfrec serve`` runs it;
* :mod:`~cfrec.serve.routes` -- the endpoints;
* :mod:`~cfrec.serve.errors` -- every 4xx/5xx as ``{"error": {"status", "code", "message",
  "field"}}``.

A request runs on the event loop when it is small by its own size (a list of at most
:data:`~cfrec.serve.pool.INLINE_MAX_K` items, a fold-in body of at most
:data:`~cfrec.serve.pool.INLINE_MAX_BODY` bytes) and the model is fast (its load check's
recommendation and fold-in take under :data:`~cfrec.serve.snapshot.INLINE_SECONDS`), where a
thread hop would cost about as much as the work; anything else runs in the bounded pool, so no
client can hold the loop that answers everyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Iterable
from pathlib import Path
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from cfrec._version import __version__
from cfrec.errors import CfrecError
from cfrec.models.persistence import read_meta
from cfrec.serve.errors import JSONResponse, add_error_handlers
from cfrec.serve.middleware import MAX_BODY_BYTES, AccessLog, BodyLimit
from cfrec.serve.pool import POOL_QUEUE, POOL_THREADS, BoundedPool
from cfrec.serve.routes import Service, add_routes
from cfrec.serve.routes_items import add_item_routes
from cfrec.serve.security import RequestGuard, allowed_host_names
from cfrec.serve.snapshot import INLINE_SECONDS, ModelHolder, ServedModel, load_served

__all__ = ["INLINE_SECONDS", "MAX_BODY_BYTES", "ModelHolder", "ServedModel", "create_app",
           "load_served"]

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: The web page may only load what the service itself serves (no CDN, works offline).
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def create_app(model_dir: str | Path, *, preload: bool = True, handle_sighup: bool = False,
               inline: bool | None = None, max_body_bytes: int = MAX_BODY_BYTES,
               admin_token: str | None = None, allowed_hosts: Iterable[str] | None = None,
               bind_host: str = "127.0.0.1", pool_threads: int = POOL_THREADS,
               pool_queue: int = POOL_QUEUE) -> FastAPI:
    """The FastAPI application serving the model folder ``model_dir``.

    Parameters
    ----------
    model_dir
        A folder written by ``cfrec train`` / :meth:`Recommender.save`; its current version is
        served and can be reloaded while serving (``POST /v1/admin/reload``).
    preload
        Load and check the model now, so a bad folder raises
        :class:`~cfrec.errors.CfrecError` here. With ``False`` the model is loaded in the
        background when the application starts: ``/healthz`` answers at once and ``/readyz``
        says 503 until the model is ready.
    handle_sighup
        Reload on ``SIGHUP`` (what ``cfrec serve`` does). Needs the event loop to run in the main
        thread; leave it off when embedding.
    inline
        Force model calls onto the event loop (True) or the thread pool (False); ``None``
        decides per model from the load check's timings (see :data:`INLINE_SECONDS`).
    max_body_bytes
        Largest request body accepted; larger ones get 413.
    admin_token
        The token admin endpoints need (``Authorization: Bearer <token>``); None turns them off
        (403; ``SIGHUP`` still reloads).
    allowed_hosts
        ``Host`` names answered besides the loopback ones and ``bind_host`` (``"*"``: any);
        None answers any name (for an application that checks names itself), as an empty list
        answers loopback names and ``bind_host`` only (what ``cfrec serve`` does by default).
        Requests that change something are also refused from a foreign ``Origin``.
    bind_host
        The address the service listens on (a name it answers to).
    pool_threads, pool_queue
        Large requests run at most ``pool_threads`` at once with ``pool_queue`` more waiting;
        beyond that, 429 with ``Retry-After``.
    """
    path = Path(model_dir)
    holder = ModelHolder(path, inline=inline)
    if preload:
        holder.reload()
    else:
        read_meta(path)  # fail now on a folder that is not a model at all
    service = Service(holder, BoundedPool(pool_threads, pool_queue))
    background: set[asyncio.Task[Any]] = set()

    async def reload_now(source: str, force: bool = False) -> tuple[ServedModel, str | None, bool]:
        start = time.perf_counter()
        served, previous, changed = await anyio.to_thread.run_sync(
            lambda: holder.reload(force=force))
        if changed:
            logger.info("%s: now serving %s (was %s), loaded in %.2f s", source, served.version,
                        previous, time.perf_counter() - start)
        return served, previous, changed

    async def reload_in_background(source: str) -> None:
        try:
            await reload_now(source)
        except CfrecError as exc:  # the holder words every loading failure as one
            still = holder.current.version if holder.current else "nothing"
            logger.error("%s: reload failed, still serving %s: %s", source, still, exc)
        except Exception:  # never "Task exception was never retrieved"
            logger.exception("%s: reload failed", source)

    def spawn(coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        background.add(task)
        task.add_done_callback(background.discard)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        if not preload:
            spawn(reload_in_background("startup"))
        sighup = False
        if handle_sighup and hasattr(signal, "SIGHUP"):
            try:
                loop.add_signal_handler(signal.SIGHUP, lambda: spawn(reload_in_background("SIGHUP")))
                sighup = True
                if preload:  # a SIGHUP sent while this process was loading went unheard (it
                    # was ignored until now): catch up with a version saved meanwhile
                    spawn(reload_in_background("SIGHUP during start-up"))
            except (RuntimeError, ValueError, NotImplementedError):  # not the main thread
                logger.warning("SIGHUP reload unavailable (the event loop is not in the main thread)")
        try:
            yield
        finally:
            if sighup:
                loop.remove_signal_handler(signal.SIGHUP)
            for task in list(background):
                task.cancel()
            logger.info("service stopped")

    app = FastAPI(
        title="cfrec",
        version=__version__,
        summary="Recommendations from a cfrec model folder: top-k lists, new users folded in "
                "from a few ratings, similar items, title search.",
        lifespan=lifespan,
        default_response_class=JSONResponse,
    )
    app.state.holder = holder
    app.state.service = service

    add_error_handlers(app)
    add_routes(app, service, reload_now, max_body_bytes)
    add_item_routes(app, service, reload_now)

    # -------------------------------------------------------------- the page
    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html",
                            headers={"Content-Security-Policy": PAGE_CSP,
                                     "Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    hosts = None if allowed_hosts is None else allowed_host_names(bind_host, allowed_hosts)
    app.add_middleware(RequestGuard, admin_token=admin_token, allowed_hosts=hosts)
    app.add_middleware(AccessLog)
    return app
