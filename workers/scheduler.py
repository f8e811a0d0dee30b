"""Priority order with a share for lower priorities, so none starves.

Each slot of a batch goes to the highest priority with work waiting, except that every
lower priority with work waiting earns ``share`` credit per slot handed out, and one
holding a full credit takes the next slot. With ``share=0.2`` and all three priorities
backed up, standard and batch each get about a fifth of the slots and interactive the
rest; when only one priority has work it gets every slot.
"""

from __future__ import annotations

from collections.abc import Mapping

from switchyard.broker.schemas import PRIORITIES, Priority

__all__ = ["PriorityScheduler"]


class PriorityScheduler:
    def __init__(self, share: float) -> None:
        if not 0.0 <= share <= 0.5:
            raise ValueError(f"share must be within [0, 0.5]: {share}")
        self.share = share
        self.credit: dict[Priority, float] = dict.fromkeys(PRIORITIES, 0.0)

    def choose(self, waiting: Mapping[Priority, int]) -> Priority | None:
        """The priority the next slot goes to, or None when nothing waits. No side effects."""
        present = [p for p in PRIORITIES if waiting.get(p, 0) > 0]
        if not present:
            return None
        for p in present[1:]:
            if self.credit[p] >= 1.0:
                return p
        return present[0]

    def commit(self, chosen: Priority, waiting: Mapping[Priority, int]) -> None:
        """Record that ``chosen`` took a slot while ``waiting`` was waiting."""
        present = [p for p in PRIORITIES if waiting.get(p, 0) > 0]
        if chosen != present[0] and self.credit[chosen] >= 1.0:
            self.credit[chosen] -= 1.0
        for p in present[1:]:
            self.credit[p] += self.share
