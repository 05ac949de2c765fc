"""CLI commands (tune)."""

from __future__ import annotations

from cfrec.cli._app import app  # noqa: F401
