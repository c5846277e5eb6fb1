"""Time to evaluate one changed contact against every dynamic list of its tenant.

Builds 100 lists of 2 to 8 conditions (mixed operators, some nested groups) and
10,000 varied contact documents, then times ``matches`` of each contact against
all 100 lists with ``time.perf_counter_ns``. Prints p50, p99 and max per change
in microseconds (wall clock, and the thread's CPU time, which leaves out waiting
for a core on a busy machine) and one JSON line with the numbers. The target is a p99 below
1 ms. Run with ``python -m benchmarks.criteria_eval``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
from datetime import UTC, datetime, timedelta
from time import perf_counter_ns, thread_time_ns
from typing import Any

from contact_pipeline.domain.criteria import Group, matches, parse_criteria

COMPANIES = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark Industries", "Wayne Ent"]
FIRST_NAMES = ["Anna", "Ben", "Chloé", "Dmitri", "Emre", "Fatima", "Giulia", "Hiroshi", "Ines"]
TAGS = ["vip", "newsletter", "webinar-2026", "trial", "churn-risk", "partner", "beta", "event"]
PLANS = ["free", "starter", "pro", "enterprise"]
REGIONS = ["EMEA", "APAC", "NA", "LATAM"]
STATUSES = ["active", "active", "active", "inactive", "unsubscribed"]
FREQUENCIES = ["daily", "weekly", "monthly", "quarterly"]
SOURCES = ["manual", "import", "form", "integration"]
TIMEZONES = ["Europe/Berlin", "America/New_York", "Asia/Tokyo", "UTC"]
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def build_contact(rng: random.Random, index: int) -> dict[str, Any]:
    """Return a stored contact document with a random subset of the optional fields."""
    first = rng.choice(FIRST_NAMES)
    company = rng.choice(COMPANIES)
    created = NOW - timedelta(days=rng.randint(0, 900), milliseconds=rng.randint(0, 86_400_000))
    contact: dict[str, Any] = {
        "_id": f"bench:c{index}",
        "id": f"c{index}",
        "tenantId": "bench",
        "firstName": first,
        "lastName": f"Name{index % 97}",
        "email": f"{first.lower()}.{index}@{company.split()[0].lower()}.example",
        "status": rng.choice(STATUSES),
        "preferences": {
            "communicationChannels": {
                "email": rng.random() < 0.9,
                "sms": rng.random() < 0.3,
                "social": rng.random() < 0.2,
            },
            "frequency": rng.choice(FREQUENCIES),
            "timezone": rng.choice(TIMEZONES),
        },
        "metadata": {
            "createdAt": created,
            "updatedAt": created + timedelta(days=rng.randint(0, 60)),
            "source": rng.choice(SOURCES),
            "tags": rng.sample(TAGS, rng.randint(0, 4)),
        },
        "customFields": build_custom_fields(rng),
        "version": rng.randint(1, 12),
    }

    if rng.random() < 0.7:
        contact["company"] = company
    if rng.random() < 0.5:
        contact["phone"] = f"+4930{rng.randint(1_000_000, 9_999_999)}"
    if rng.random() < 0.4:
        contact["title"] = rng.choice(["CTO", "Head of Marketing", "Engineer", "CEO"])
    if rng.random() < 0.6:
        contact["metadata"]["lastEngagement"] = NOW - timedelta(days=rng.randint(0, 365))
    return contact


def build_custom_fields(rng: random.Random) -> dict[str, Any]:
    """Return custom fields whose score is a number in some contacts and a string in others."""
    custom: dict[str, Any] = {}
    if rng.random() < 0.8:
        custom["score"] = rng.choice(
            [rng.randint(0, 100), rng.random() * 100, str(rng.randint(0, 99))]
        )
    if rng.random() < 0.6:
        custom["plan"] = rng.choice(PLANS)
    if rng.random() < 0.5:
        custom["regions"] = rng.sample(REGIONS, rng.randint(1, 2))
    if rng.random() < 0.3:
        custom["beta"] = rng.random() < 0.5
    return custom


def random_condition(rng: random.Random) -> dict[str, Any]:
    """Return one condition JSON of a kind that marketing lists typically use."""
    days_ago = (NOW - timedelta(days=rng.randint(7, 400))).date().isoformat()
    choices: list[tuple[str, str, Any]] = [
        ("company", "equals", rng.choice(COMPANIES)),
        ("company", "contains", rng.choice(["acme", "corp", "ind", "glob"])),
        ("email", "contains", rng.choice(["@acme.", "example", ".1"])),
        ("tags", "contains", rng.choice(TAGS)),
        ("tags", "in", rng.sample(TAGS, 2)),
        ("metadata.tags", "notIn", rng.sample(TAGS, 1)),
        ("status", "equals", "active"),
        ("status", "notIn", ["unsubscribed"]),
        ("preferences.communicationChannels.email", "equals", True),
        ("preferences.frequency", "in", rng.sample(FREQUENCIES, 2)),
        ("metadata.source", "equals", rng.choice(SOURCES)),
        ("metadata.createdAt", "greaterThan", days_ago),
        ("metadata.lastEngagement", "lessThan", f"{days_ago}T12:00:00+01:00"),
        ("customFields.score", "greaterThan", rng.randint(10, 90)),
        ("customFields.score", "lessThan", rng.randint(10, 90)),
        ("customFields.plan", "in", rng.sample(PLANS, 2)),
        ("customFields.regions", "equals", rng.choice(REGIONS)),
        ("customFields.beta", "equals", True),
        ("phone", "exists", rng.random() < 0.5),
        ("version", "greaterThan", rng.randint(1, 5)),
        ("firstName", "in", rng.sample(FIRST_NAMES, 3)),
    ]
    field, operator, value = rng.choice(choices)
    return {"field": field, "operator": operator, "value": value}


def build_list(rng: random.Random) -> Group:
    """Return the criteria of one list: 2 to 8 conditions, a third of them with a nested group."""
    total = rng.randint(2, 8)
    conditions: list[dict[str, Any]] = []
    while total > 0:
        if total >= 3 and rng.random() < 0.35:
            size = rng.randint(2, min(3, total - 1))
            nested = [random_condition(rng) for _ in range(size)]
            conditions.append({"logic": rng.choice(["and", "or"]), "conditions": nested})
            total -= size
        else:
            conditions.append(random_condition(rng))
            total -= 1
    return parse_criteria({"logic": rng.choice(["and", "and", "or"]), "conditions": conditions})


def percentile(sorted_values: list[int], fraction: float) -> int:
    index = min(len(sorted_values) - 1, int(round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lists", type=int, default=100, help="Dynamic lists (default 100).")
    parser.add_argument("--contacts", type=int, default=10_000, help="Contacts (default 10000).")
    parser.add_argument("--seed", type=int, default=7, help="Random seed (default 7).")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    lists = [build_list(rng) for _ in range(args.lists)]
    contacts = [build_contact(rng, index) for index in range(args.contacts)]

    # Warm up the compiled predicates and the CPU caches before timing.
    for contact in contacts[:200]:
        for criteria in lists:
            matches(criteria, contact)

    # A worker keeps its lists for a long time. Frozen objects are left out of the
    # cyclic garbage collector's scans, which would otherwise pause measurements.
    gc.collect()
    gc.freeze()

    timings: list[int] = []
    cpu_timings: list[int] = []
    memberships = 0
    for contact in contacts:
        started, cpu_started = perf_counter_ns(), thread_time_ns()
        matched = [criteria for criteria in lists if matches(criteria, contact)]
        cpu_timings.append(thread_time_ns() - cpu_started)
        timings.append(perf_counter_ns() - started)
        memberships += len(matched)
    timings.sort()
    cpu_timings.sort()

    result = {
        "benchmark": "criteria_eval",
        "lists": args.lists,
        "contacts": args.contacts,
        "p50_us": percentile(timings, 0.50) / 1000,
        "p99_us": percentile(timings, 0.99) / 1000,
        "max_us": timings[-1] / 1000,
        "mean_us": statistics.fmean(timings) / 1000,
        "cpu_p50_us": percentile(cpu_timings, 0.50) / 1000,
        "cpu_p99_us": percentile(cpu_timings, 0.99) / 1000,
        "memberships_per_contact": memberships / args.contacts,
        "python": platform.python_version(),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}",
    }
    print(f"{args.contacts} contacts x {args.lists} lists, per change:")
    print(f"  p50 {result['p50_us']:8.1f} us")
    print(f"  p99 {result['p99_us']:8.1f} us  (target below 1000 us)")
    print(f"  max {result['max_us']:8.1f} us")
    print(
        f"  thread CPU time: p50 {result['cpu_p50_us']:.1f} us, p99 {result['cpu_p99_us']:.1f} us"
    )
    print(f"  lists matched per contact: {result['memberships_per_contact']:.1f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
