"""Cheap readings of a process tree's CPU time and memory, and of the whole machine's CPU time (what the
hypervisor took included), for samplers that run inside measured phases; and pinning a running tree to
CPUs.

A sampler shares the machine with what it measures. psutil's ``children(recursive=True)`` reads the
``stat`` file of every process on the machine to find one tree, and ``cpu_times()`` costs a few more
reads per process: sampled 20 times a second over the stack's twenty-odd processes, that took a fifth of
a core or more of this 2-core machine, out of the very phases whose CPU and latency it reported. Here a
process costs one read of ``/proc/<pid>/stat``, and its children come from
``/proc/<pid>/task/<tid>/children`` (one small file per thread), so a sample of the whole stack costs
about a millisecond. Where the kernel has no ``children`` files (no ``CONFIG_PROC_CHILDREN``), psutil
finds them instead.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import psutil

_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def children(pid: int) -> list[int]:
    """The living children of ``pid`` (empty if it is gone)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found: list[int] = []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                found += [int(x) for x in f.read().split()]
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{pid}/task/{tid}"):
                continue  # the thread ended between the listing and the read
            with contextlib.suppress(psutil.Error):  # a kernel without the children files
                return [c.pid for c in psutil.Process(pid).children()]
            return []
        except OSError:
            continue
    return found


def tree(pid: int) -> list[int]:
    """``pid`` and all its living descendants."""
    out = [pid]
    i = 0
    while i < len(out):
        out += children(out[i])
        i += 1
    return out


@dataclass(frozen=True, slots=True)
class Times:
    """CPU seconds of one process: its own, and its reaped children's (waited-for ones only)."""

    own: float
    reaped: float


def times(pid: int) -> Times | None:
    """The CPU times of ``pid``; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields start after the last ')'.
    fields = data[data.rfind(b")") + 2 :].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return Times((utime + stime) * _TICK_S, (cutime + cstime) * _TICK_S)


def tree_cpu_s(pid: int) -> float:
    """CPU seconds used so far by ``pid`` and its descendants, living or reaped (a reaped process counts in
    the living ancestor that waited for it)."""
    total = 0.0
    for p in tree(pid):
        t = times(p)
        if t is not None:
            total += t.own + t.reaped
    return total


@dataclass(frozen=True, slots=True)
class MachineTimes:
    """CPU seconds of the whole machine, summed over its CPUs (``/proc/stat``): all of them, idle ones (idle
    and waiting for I/O) and stolen ones (a virtual CPU ready to run while the hypervisor ran something
    else). A reading holds the times so far; the difference of two readings, those between them."""

    total: float
    idle: float
    steal: float

    def __sub__(self, earlier: MachineTimes) -> MachineTimes:
        return MachineTimes(self.total - earlier.total, self.idle - earlier.idle, self.steal - earlier.steal)

    def __add__(self, other: MachineTimes) -> MachineTimes:
        return MachineTimes(self.total + other.total, self.idle + other.idle, self.steal + other.steal)

    def shares(self) -> dict[str, float]:
        """Of a difference: the share of the machine's CPU time that was busy (stolen time included) and the
        share that was stolen, 0..1 (NaN for an empty span)."""
        if self.total <= 0:
            return {"busy": float("nan"), "steal": float("nan")}
        return {"busy": round(1 - self.idle / self.total, 3), "steal": round(self.steal / self.total, 3)}


def machine_times() -> MachineTimes:
    """The machine's CPU times now. The first line of ``/proc/stat`` is user, nice, system, idle, iowait,
    irq, softirq, steal, then guest and guest_nice, which are already counted in user and nice."""
    with open("/proc/stat", "rb") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    fields += [0] * (8 - len(fields))  # an old kernel without the steal column
    return MachineTimes(sum(fields) * _TICK_S, (fields[3] + fields[4]) * _TICK_S, fields[7] * _TICK_S)


def rss(pid: int) -> int:
    """Resident memory of ``pid`` in bytes (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def pin(pids: list[int], cpus: set[int]) -> int:
    """Restrict every thread of ``pids`` and of all their descendants to ``cpus``; returns how many threads
    were pinned. Linux sets a CPU mask per thread (``sched_setaffinity`` of a pid is its main thread's
    only; psutil's ``cpu_affinity`` too), and a new thread or child takes its creator's mask: pin a server
    whose threads and workers are already running, and what it starts later follows."""
    pinned = 0
    for root in pids:
        for p in tree(root):
            try:
                tids = os.listdir(f"/proc/{p}/task")
            except OSError:
                continue  # gone
            for tid in tids:
                with contextlib.suppress(OSError):  # the thread ended meanwhile
                    os.sched_setaffinity(int(tid), cpus)
                    pinned += 1
    return pinned
