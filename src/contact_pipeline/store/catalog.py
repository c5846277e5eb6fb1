"""A per-worker cache of each tenant's lists, read from the store and never older than a bound.

Every worker evaluates contact changes against the dynamic lists of the
contact's tenant, so every worker needs every list. Faust's GlobalTable has
open reports of workers missing entries, and a changelog consumer gives no
bound on how stale a worker's copy may be. This cache reloads a tenant's lists
from the store when its copy is older than ``max_age_seconds``, and at once
when a command names a list it does not know. The backfill of a new or
changed list relies on that bound: it waits longer than the bound before it
reads the contacts, so every contact write after its scan started saw the
new criteria.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from contact_pipeline.handlers.memberships import ListDef, TenantLists
from contact_pipeline.store.mongo import Store

logger = logging.getLogger(__name__)

LIST_CACHE_MAX_AGE_SECONDS = 1.0


class ListCatalog:
    """The lists of each tenant, reloaded from the store when older than the bound."""

    def __init__(
        self,
        store: Store,
        max_age_seconds: float = LIST_CACHE_MAX_AGE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.max_age_seconds = max_age_seconds
        self.clock = clock
        self._cache: dict[str, tuple[float, TenantLists]] = {}

    async def tenant_lists(self, tenant_id: str, needed: Iterable[str] = ()) -> TenantLists:
        """Return the tenant's lists; reload them if stale or if a needed list is missing."""
        cached = self._cache.get(tenant_id)
        now = self.clock()
        if cached is not None:
            loaded_at, lists = cached
            fresh = now - loaded_at < self.max_age_seconds
            if fresh and all(list_id in lists.lists for list_id in needed):
                return lists
        documents = await self.store.load_tenant_lists(tenant_id)
        known = cached[1].lists if cached is not None else {}
        lists = TenantLists({doc["id"]: _reuse_or_parse(known, doc) for doc in documents})
        self._cache[tenant_id] = (now, lists)
        return lists


def _reuse_or_parse(known: dict[str, ListDef], doc: dict[str, Any]) -> ListDef:
    # Parsing compiles every condition, so an unchanged list keeps its compiled copy.
    previous = known.get(doc["id"])
    if previous is not None and previous.version == doc["version"]:
        return previous
    return ListDef.from_doc(doc)
