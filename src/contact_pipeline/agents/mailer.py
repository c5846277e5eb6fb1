"""Mailer agent: sends double opt-in confirmation e-mails for pending memberships."""

from __future__ import annotations

import faust

from contact_pipeline.settings import Settings


def register(app: faust.App, settings: Settings) -> None:
    """Add the confirmation mailer agent to the worker's app."""
