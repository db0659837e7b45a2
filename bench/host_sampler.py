"""What the host sampler costs the collector: CPU per collect, against the budget of 1 % of a core at
the default 10 s interval (100 ms of CPU per 10 s), and against one plain psutil sweep of every
process's name and command line measured in the same run (the floor any process matching pays).

    .venv/bin/python bench/host_sampler.py [ROUNDS]
"""
from __future__ import annotations

import sys
import time

import psutil

from collectors.samplers import utcnow
from collectors.samplers.system import HostSampler


def cpu_per_call(fn, rounds: int) -> float:
    fn()
    start = time.process_time()
    for _ in range(rounds):
        fn()
    return (time.process_time() - start) / rounds


def main(rounds: int = 100) -> None:
    sampler = HostSampler(interval=10, processes=["cmd:celery .* worker", "gunicorn"])   # specs that scan all
    collect = cpu_per_call(lambda: sampler.collect(utcnow()), rounds)
    sweep = cpu_per_call(lambda: [p.info for p in psutil.process_iter(["name", "cmdline"])], rounds)
    print(f"host sampler: {collect * 1000:.2f} ms CPU per collect = {collect / 10 * 100:.3f} % of a core at 10 s "
          f"({collect / 0.1:.0%} of the 1 % budget); one psutil process sweep {sweep * 1000:.2f} ms "
          f"(collect = {collect / sweep:.1f}× the sweep)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
