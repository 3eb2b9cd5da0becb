"""What one start-up step of the node created, so that the reverse step removes
exactly that: ``with scope:`` marks the start of the step; ``scope.destroy()``
destroys every publisher, subscription, timer and service created since then that
still exists (the lifecycle's deactivate and cleanup). That includes what is created
later while running (an image subscription re-made for another QoS) and what parts of
the node create on their own (the 3D outputs): none of them needs teardown code."""

from __future__ import annotations

_KINDS = (("timers", "destroy_timer"), ("subscriptions", "destroy_subscription"),
          ("publishers", "destroy_publisher"), ("services", "destroy_service"))


class EntityScope:
    def __init__(self, node) -> None:
        self._node = node
        self._before: dict[str, list] | None = None

    def __enter__(self) -> "EntityScope":
        # the objects, not their ids: an id may come back for a new object
        self._before = {kind: list(getattr(self._node, kind)) for kind, _ in _KINDS}
        return self

    def __exit__(self, *exc) -> None:
        pass

    def destroy(self) -> None:
        """Destroy what was created since ``with`` (timers first: they may publish)."""
        before, self._before = self._before, None
        if before is None:
            return
        for kind, destroy in _KINDS:
            old = {id(e) for e in before[kind]}  # held alive by ``before``: ids stay unique
            for entity in [e for e in getattr(self._node, kind) if id(e) not in old]:
                getattr(self._node, destroy)(entity)
