"""Where steps run: the router, the shared transformer pool, or a named transformer pool.

A pool's name is part of its queue's name (:meth:`esb.topology.QueueNames.steps`), so the
bus (permissions, teardown, the runtime) and the route files agree on it here.
"""

from __future__ import annotations

import re

#: The pool of steps run by the router itself; a transformer pool is any other name.
ROUTER = "router"
#: The shared transformer pool, where a route's steps run unless it says otherwise.
TRANSFORMER = "transformer"
#: Where steps run: ``router``, ``transformer`` (the shared pool) or a transformer pool's name.
POOL = r"^[a-z0-9][a-z0-9_-]{0,62}$"
#: Not pool names: the suffixes of a queue's parking lot and delay queues.
RESERVED_POOLS = frozenset({"dlq", "retry"})


def is_pool_name(name: str) -> bool:
    """Whether ``name`` can name a pool (route files, ``esb run transformer``, users files)."""
    return re.match(POOL, name) is not None and name not in RESERVED_POOLS
