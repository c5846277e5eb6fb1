"""Every worker of a consumer group evaluates contact changes against every list.

Lists kept in a Faust GlobalTable have been reported missing on some workers
when several run, so each worker reads them from the store instead. This test
runs a second worker and checks that contacts on both workers join a list that
only one list partition carried.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.factories import command, create, new_id
from tests.integration.test_lists import ACME, applied, assert_count_exact, new_list

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_two_workers_both_apply_dynamic_lists(pipeline, tenant):
    second = pipeline.start_worker("second")
    pipeline.extra_workers.append(second)
    log = pipeline.log_path.with_name(f"{pipeline.log_path.stem}-second.log")

    # Wait until the group has rebalanced and the second worker applies commands.
    deadline = time.monotonic() + 90
    while "batch applied" not in (log.read_text(errors="replace") if log.exists() else ""):
        assert second.poll() is None, f"second worker stopped; see {log}"
        assert time.monotonic() < deadline, f"second worker applied nothing; see {log}"
        probe = new_id()
        await pipeline.send(
            [command("contact.create", create(probe, f"{probe}@example.com"), tenant=f"{tenant}p")],
            timeout=90,
        )
        await asyncio.sleep(1)

    await applied(pipeline, new_list(tenant, "acme", "dynamic", criteria=ACME))
    contacts = [new_id() for _ in range(36)]
    results = await applied(
        pipeline,
        *[
            command(
                "contact.create", create(cid, f"{cid}@example.com", company="Acme"), tenant=tenant
            )
            for cid in contacts
        ],
    )
    for result in results:
        assert result.get("membershipChanges") == [
            {"listId": "acme", "type": "membership.added", "reason": "rule_matched"}
        ], result
    await assert_count_exact(pipeline, tenant, "acme", len(contacts))
    assert second.poll() is None, f"second worker stopped; see {log}"
