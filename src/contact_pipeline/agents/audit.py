"""Audit agents: chain change events into the audit log and project it into the store."""

from __future__ import annotations

import faust

from contact_pipeline.settings import Settings


def register(app: faust.App, settings: Settings) -> None:
    """Add the audit agents to the worker's app."""
