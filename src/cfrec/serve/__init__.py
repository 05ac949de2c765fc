"""Serve a saved model over HTTP: a versioned JSON API and a web page (``cfrec serve``).

:func:`create_app` builds the FastAPI application for one model folder, for ``cfrec serve`` or
for mounting inside another ASGI application. FastAPI and uvicorn come with the ``serve`` extra
(``pip install 'cfrec[serve]'``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cfrec.errors import CfrecError

if TYPE_CHECKING:
    from cfrec.serve.app import ModelHolder, ServedModel, create_app

__all__ = ["ModelHolder", "ServedModel", "create_app"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        try:
            from cfrec.serve import app
        except ImportError as exc:  # fastapi missing: say which extra brings it
            raise CfrecError(f"serving needs FastAPI and uvicorn ({exc.name} is not installed); "
                             "install them with: pip install 'cfrec[serve]'") from None
        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
