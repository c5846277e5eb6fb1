"""Integration test for the local development servers in contact_pipeline.dev.services."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from contact_pipeline.dev import services
from tests.conftest import IN_CI

# Ports other than the defaults (9092/27017), so a developer's running servers
# are neither reused nor disturbed. The broker's controller uses KAFKA_PORT + 1.
KAFKA_PORT = 19092
MONGO_PORT = 27117


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


@pytest.mark.integration
def test_up_status_down_separate_ports(tmp_path: Path) -> None:
    busy = [port for port in (KAFKA_PORT, KAFKA_PORT + 1, MONGO_PORT) if _port_in_use(port)]
    if busy:
        message = f"ports {busy} on 127.0.0.1 are taken by another process"
        if IN_CI:
            pytest.fail(f"CI=true and {message}", pytrace=False)
        pytest.skip(message)

    try:
        endpoints = services.up(tmp_path, kafka_port=KAFKA_PORT, mongo_port=MONGO_PORT)
        assert endpoints == services.ServiceEndpoints(
            kafka_bootstrap_servers=f"127.0.0.1:{KAFKA_PORT}",
            mongodb_uri=f"mongodb://127.0.0.1:{MONGO_PORT}/",
        )

        report = services.status(tmp_path)
        assert set(report) == {"kafka", "ferretdb"}
        expected_addresses = {"kafka": KAFKA_PORT, "ferretdb": MONGO_PORT}
        for name, port in expected_addresses.items():
            info = report[name]
            assert info["running"] is True, info
            assert isinstance(info["pid"], int)
            assert info["address"] == f"127.0.0.1:{port}"
            log_path = Path(info["log"])
            assert log_path.is_relative_to(tmp_path / ".local" / "run" / name)
            assert log_path.is_file()
        assert (tmp_path / ".local" / "run" / "kafka.pid").read_text().strip() == str(
            report["kafka"]["pid"]
        )
    finally:
        services.down(tmp_path, wipe=True)

    stopped = services.status(tmp_path)
    for info in stopped.values():
        assert info["running"] is False
        assert info["pid"] is None
    assert not (tmp_path / ".local" / "run" / "kafka.pid").exists()
    assert not (tmp_path / ".local" / "run" / "kafka" / "data").exists()
