"""How many cores the learner may use: torch's intra-op threads from the cores actually free.

A learner shares its computer with collectors, ROS and whatever else runs there. With torch's
threads fixed at the core count, one other CPU-bound process made an iteration 15-30x slower
(OpenMP threads spin-waiting for a core that is busy). Two measures:

- ``OMP_WAIT_POLICY=PASSIVE`` (set in ``mbrl_ros/__init__.py`` before torch loads OpenMP):
  a thread that waits sleeps instead of spinning, so an oversubscribed core is not burnt.
- :class:`CoreBudget` re-chooses the thread count before every phase of the game from the CPU
  time the *other* processes used since the last choice (``/proc/stat`` minus this process's
  own CPU time): ``threads = free cores``, at least 1, at most ``max_threads``.
  ``choose(fresh=True)`` measures only a short probe right before the phase: in the ROS graph
  the nodes take turns (the collector, then the fit, then NPG), so the interval since this
  node's last phase is mostly the other nodes' phases, which are over when this one starts.
- The policy player's phase runs on at most :data:`POLICY_PLAYER_MAX_THREADS` (``choose(cap=...)``).
"""

from __future__ import annotations

import os
import time
from typing import Optional

# The policy player's work (rollouts of 4 x 50 start states, conjugate gradient on an MLP(64, 64)
# policy, value refits of an MLP(128, 128) on batches of 512) runs on tensors too small for
# intra-op threads to pay for waking them: passive OpenMP threads sleep between parallel regions,
# and each of the thousands of small operations of an NPG step wakes them. Measured on 2 cores
# (bench_wallclock, nothing else running): PAL dclaw-turn-fixed NPG 2.07 s per iteration at 2
# threads, 1.10 s at 1; MAL's 25 steps 8.4 s vs 4.1 s; D'Kitty 3.3 s vs 1.4 s. The model fit
# (batches of 200 through 4 x MLP(512, 512)) does gain from a second thread (1.44 -> 1.00 s), so
# only this phase is capped.
POLICY_PLAYER_MAX_THREADS = 1


def cpu_count() -> int:
    """Cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def _system_busy_s() -> Optional[float]:
    """CPU seconds all cores spent busy since boot (``/proc/stat``); None where unavailable."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(x) for x in fields[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    steal = ticks[7] if len(ticks) > 7 else 0  # another VM had the core: not free for us either
    busy = sum(ticks[:8]) - idle - steal if len(ticks) >= 8 else sum(ticks) - idle
    return (busy + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


class CoreBudget:
    """Picks torch's thread count from the cores other processes leave free.

    ``choose()`` measures the other processes' CPU use since the previous call (the first call
    samples for ``probe_s``), sets ``torch.set_num_threads`` and returns the count. ``fixed``
    pins the count (``--threads N``).
    """

    def __init__(self, max_threads: Optional[int] = None, fixed: Optional[int] = None, probe_s: float = 0.2) -> None:
        if fixed is not None and fixed <= 0:
            raise ValueError(f"threads must be positive, got {fixed}")
        self.cores = cpu_count()
        self.max_threads = max(1, min(max_threads or self.cores, self.cores))
        self.fixed = fixed
        self.probe_s = float(probe_s)
        self.threads = fixed or self.max_threads
        self.others_cores = 0.0  # cores the other processes used over the last interval
        self._last: Optional[tuple[float, float, float]] = None  # (wall, system busy, own cpu)

    def _sample(self) -> Optional[tuple[float, float, float]]:
        busy = _system_busy_s()
        return None if busy is None else (time.monotonic(), busy, _own_cpu_s())

    def others(self) -> Optional[float]:
        """Cores used by other processes since the last call (None where /proc/stat is missing)."""
        if self._last is None:
            self._last = self._sample()
            if self._last is None:
                return None
            time.sleep(self.probe_s)
        now = self._sample()
        if now is None or self._last is None:
            return None
        wall = now[0] - self._last[0]
        if wall < 0.05:  # too short to measure: keep the last figure
            return self.others_cores
        used = (now[1] - self._last[1]) - (now[2] - self._last[2])
        self._last = now
        self.others_cores = min(float(self.cores), max(0.0, used / wall))
        return self.others_cores

    def choose(self, fresh: bool = False, cap: Optional[int] = None) -> int:
        """Set and return torch's thread count for the next stretch of work.

        ``fresh``: measure the other processes over a new ``probe_s`` window instead of the
        interval since the previous call. ``cap``: at most this many threads for work that does
        not gain from more (e.g. :data:`POLICY_PLAYER_MAX_THREADS`); a pinned count (``fixed``)
        is kept as the user asked.
        """
        if cap is not None and cap <= 0:
            raise ValueError(f"cap must be positive, got {cap}")
        import torch

        if self.fixed is not None:
            n = self.fixed
        else:
            if fresh:
                self._last = None  # others() samples a new window of probe_s
            others = self.others()
            free = self.cores - (others if others is not None else 0.0)
            # a core counts as free when others use less than 30% of it. In the PAL graph at 10 Hz
            # (bench_graph --duty-cycle, 2 cores) a 70% rule gave the fit and NPG the second core
            # beside the coordinator's 0.5-0.8 cores of bookkeeping: fit / NPG 7.9 / 4.0 s against
            # 8.3 / 2.9 and 10.1 / 3.9 s on one thread, no gain beyond the run-to-run noise.
            n = max(1, min(self.max_threads, int(free + 0.3)))
            if cap is not None:
                n = min(n, cap)
        if n != torch.get_num_threads():
            torch.set_num_threads(n)
        self.threads = n
        return n


def lower_priority(niceness: int) -> int:
    """Raise every thread of this process to at least ``niceness`` (0-19); returns the calling
    thread's nice value afterwards.

    On Linux the nice value belongs to each thread, and a new thread inherits its creator's, so
    every thread that exists now is reniced (``/proc/self/task``); OpenMP and ROS threads created
    later follow. Learning is batch work: at a lower priority the scheduler runs the control path
    (collector, coordinator, e-stop) first when all share two cores. Raising a nice value needs no
    privilege; a thread already nicer is left alone. ``ValueError`` outside 0-19.
    """
    niceness = int(niceness)
    if not 0 <= niceness <= 19:
        raise ValueError(f"niceness must be in 0..19, got {niceness}")
    if not hasattr(os, "setpriority"):
        return 0
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:  # not Linux: the process as a whole
        tids = [0]
    for tid in tids:
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < niceness:
                os.setpriority(os.PRIO_PROCESS, tid, niceness)
        except (ProcessLookupError, PermissionError):  # the thread ended meanwhile
            continue
    return os.getpriority(os.PRIO_PROCESS, 0)
