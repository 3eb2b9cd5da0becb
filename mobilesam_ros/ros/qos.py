"""The node's QoS profiles, and ``qos.reliability: auto`` for its camera inputs
(images and depth alike)."""

from __future__ import annotations

from typing import Callable

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

#: the timer period of the auto matching; it looks every tick until a publisher
#: appears, then every CHECK_EVERY ticks (2 s)
TICK_S = 0.2
CHECK_EVERY = 10


def qos_profile(reliability: str, depth: int) -> QoSProfile:
    """Keep-last ``depth``, volatile; ``reliability`` "reliable" or "best_effort"."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.VOLATILE,
    )


class ReliabilityMatcher:
    """``qos.reliability: auto`` for one input topic: best effort when any publisher is
    best effort (the only compatible choice), else reliable (large frames from a
    reliable publisher are then repaired instead of lost).

    :meth:`start` checks on a timer (every 0.2 s until a publisher appears, then every
    2 s); when the wanted reliability is not ``current()`` (None: not subscribed yet) it
    calls ``subscribe(reliability)``, then ``announce(reliability, publishers)``.
    """

    def __init__(self, node, topic: str, current: Callable[[], str | None], subscribe: Callable[[str], None],
                 announce: Callable[[str, int], None]) -> None:
        self._node, self._topic = node, topic
        self._current, self._subscribe, self._announce = current, subscribe, announce
        self._ticks = 0

    def start(self) -> None:
        self._node.create_timer(TICK_S, self.tick)

    def tick(self) -> None:
        self._ticks += 1
        if self._current() is not None and self._ticks % CHECK_EVERY:
            return
        try:
            infos = self._node.get_publishers_info_by_topic(self._topic)
        except Exception:  # noqa: BLE001 - graph queries can fail during shutdown
            return
        if not infos:
            return
        best_effort = any(i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for i in infos)
        wanted = "best_effort" if best_effort else "reliable"
        if wanted != self._current():
            self._subscribe(wanted)
            self._announce(wanted, len(infos))
