"""The topics declared in ``topics.yaml`` and their creation on a cluster."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

logger = logging.getLogger(__name__)

COMMANDS = "contact-commands"
RESULTS = "contact-command-results"
EVENTS = "contact-events"
DEAD_LETTERS = "contact-commands-dlq"
LIST_COMMANDS = "list-commands"
LIST_EVENTS = "list-events"
MEMBERSHIP_EVENTS = "membership-events"
CONSENT_EVENTS = "consent-events"
CONFIRMATION_REQUESTS = "confirmation-requests"
AUDIT_LOG = "audit-log"
CONTACTABILITY_REQUESTS = "contactability-requests"
CONTACTABILITY_REPLIES = "contactability-replies"


@dataclass(frozen=True)
class TopicSpec:
    """One topic as declared in topics.yaml."""

    name: str
    partitions: int
    replication_factor: int
    key: str
    purpose: str
    config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TopicDrift:
    """A setting of an existing topic that differs from topics.yaml."""

    topic: str
    setting: str
    declared: str
    actual: str


def load_topics(path: Path, prefix: str = "") -> list[TopicSpec]:
    """Read topics.yaml; ``prefix`` is prepended to every name."""
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    specs = []
    for name, entry in document["topics"].items():
        config = {str(k): str(v) for k, v in (entry.get("config") or {}).items()}
        specs.append(
            TopicSpec(
                name=prefix + name,
                partitions=int(entry["partitions"]),
                replication_factor=int(entry.get("replication_factor", 1)),
                key=entry["key"],
                purpose=entry["purpose"].strip(),
                config=config,
            )
        )
    return specs


def topic_name(base: str, prefix: str = "") -> str:
    """Return the name of a declared topic with the deployment's prefix."""
    return prefix + base


async def apply_topics(
    bootstrap_servers: str, specs: list[TopicSpec], *, replication_factor: int | None = None
) -> tuple[list[str], list[TopicDrift]]:
    """Create missing topics and report existing ones whose settings differ.

    ``replication_factor`` overrides the declared factor, for single-broker
    development clusters. Returns the created topic names and the drifts. An
    existing topic is never altered, because partitions can only grow and a
    changed retention may drop data.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=15_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(
                        name=spec.name,
                        num_partitions=spec.partitions,
                        replication_factor=replication_factor or spec.replication_factor,
                        topic_configs=spec.config,
                    )
                    for spec in missing
                ]
            )
            failures = [
                f"{name}: {(message or f'error code {code}').rstrip('.')}"
                for name, code, *rest in response.topic_errors
                for message in [rest[0] if rest else None]
                if code != 0
            ]
            if failures:
                raise RuntimeError(
                    "Kafka rejected some topics: " + "; ".join(failures) + ". On a single local "
                    "broker pass --replication-factor 1"
                )
        present = [spec for spec in specs if spec.name in existing]
        drifts = await _drifts(admin, present, replication_factor) if present else []
    except KafkaError as exc:
        raise RuntimeError(f"applying topics on {bootstrap_servers} failed: {exc}") from exc
    finally:
        await admin.close()
    return [spec.name for spec in missing], drifts


async def _drifts(
    admin: AIOKafkaAdminClient, specs: list[TopicSpec], replication_factor: int | None
) -> list[TopicDrift]:
    drifts: list[TopicDrift] = []
    described = await admin.describe_topics([spec.name for spec in specs])
    partitions = {entry["topic"]: len(entry["partitions"]) for entry in described}
    replicas = {
        entry["topic"]: len(entry["partitions"][0]["replicas"]) if entry["partitions"] else 0
        for entry in described
    }
    resources = [ConfigResource(ConfigResourceType.TOPIC, spec.name) for spec in specs]
    responses = await admin.describe_configs(resources)
    actual_configs: dict[str, dict[str, str]] = {}
    for response in responses:
        for resource in response.resources:
            _, _, _, name, entries = resource[:5]
            actual_configs[name] = {entry[0]: entry[1] for entry in entries}

    for spec in specs:
        if partitions.get(spec.name) != spec.partitions:
            drifts.append(
                TopicDrift(
                    spec.name, "partitions", str(spec.partitions), str(partitions.get(spec.name))
                )
            )
        if replication_factor is None and replicas.get(spec.name) != spec.replication_factor:
            drifts.append(
                TopicDrift(
                    spec.name,
                    "replication factor",
                    str(spec.replication_factor),
                    str(replicas.get(spec.name)),
                )
            )
        actual = actual_configs.get(spec.name, {})
        for setting, declared in spec.config.items():
            if actual.get(setting) != declared:
                drifts.append(TopicDrift(spec.name, setting, declared, str(actual.get(setting))))
    return drifts


def describe(specs: list[TopicSpec]) -> list[dict[str, Any]]:
    """Return the specs as plain dicts for printing."""
    return [spec.__dict__ for spec in specs]
