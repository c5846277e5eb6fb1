"""A busy worker stops promptly on SIGTERM and leaves nothing half done."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid

import pytest

from contact_pipeline.kafka import topics as topic_names
from contact_pipeline.kafka.client import ResultCollector, command_topic, produce_commands
from tests.factories import command, create, new_id
from tests.integration.conftest import ROOT, Pipeline, _start_worker

pytestmark = pytest.mark.asyncio(loop_scope="session")

ACME = {"logic": "and", "conditions": [{"field": "company", "operator": "equals", "value": "Acme"}]}


async def test_worker_stops_on_sigterm_while_busy(pipeline_config: Pipeline):
    # A worker of its own, so stopping it leaves the session's worker alone.
    run_id = uuid.uuid4().hex[:8]
    prefix = f"test-stop-{run_id}-"
    env = {
        **pipeline_config.env,
        "CONTACT_PIPELINE_TOPIC_PREFIX": prefix,
        "CONTACT_PIPELINE_APP_ID": f"contact-pipeline-stop-{run_id}",
        "CONTACT_PIPELINE_BACKFILL_GRACE_SECONDS": "0.5",
    }
    kafka = pipeline_config.servers.kafka
    specs = topic_names.load_topics(ROOT / "topics.yaml", prefix)
    await topic_names.apply_topics(kafka, specs, replication_factor=1)
    log_path = pipeline_config.log_path.with_name(f"worker-stop-{run_id}.log")
    worker = _start_worker(env, log_path)
    collector = ResultCollector(kafka, topic_names.topic_name(topic_names.RESULTS, prefix))
    await collector.start()
    try:
        tenant = f"stop{run_id}"
        commands = [
            command(
                "list.create",
                {"listId": "acme", "name": "Acme", "type": "dynamic", "criteria": ACME},
                tenant=tenant,
            ),
            *[
                command(
                    "contact.create",
                    create(new_id(), f"c{n}@example.com", company="Acme"),
                    tenant=tenant,
                )
                for n in range(600)
            ],
        ]
        await produce_commands(kafka, lambda c: command_topic(c, prefix), commands)
        first = {c["commandId"] for c in commands[:50]}
        results = await collector.wait_for(first, 120)
        assert set(results) == first, f"worker applied nothing; see {log_path}"

        # Stop while batches, membership events, audit entries and mails are in flight.
        started = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        exit_code = await asyncio.to_thread(worker.wait, 60)
        assert exit_code == 0, f"worker exited with {exit_code}; see {log_path}"
        assert time.monotonic() - started < 30, f"worker took long to stop; see {log_path}"
    finally:
        await collector.stop()
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=30)
    assert "wait_empty" not in log_path.read_text(errors="replace")
