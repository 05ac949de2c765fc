"""CLI commands (models)."""

from __future__ import annotations

from cfrec.cli._app import app  # noqa: F401
