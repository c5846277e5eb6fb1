"""Session-wide test fixtures: the real Kafka broker, the document store and a worker.

Integration tests use ``KAFKA_BOOTSTRAP_SERVERS`` and ``MONGODB_URI`` when both
are set; otherwise they start the project's local servers. Locally a server
that cannot start skips them with the reason; with ``CI=true`` it fails them.
"""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.integration)
