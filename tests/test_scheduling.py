"""diffroar.scheduling: one pending re-evaluation timer per Snakemake scheduler."""

from __future__ import annotations

import threading
import time

from diffroar.scheduling import _schedule_reevaluation, bound_rescheduling
from snakemake.scheduling.job_scheduler import JobScheduler


class FakeScheduler:
    """What the replacement touches of a JobScheduler: its semaphore of open rounds."""

    def __init__(self):
        self._open_jobs = threading.Semaphore(0)


def rounds(scheduler: FakeScheduler, settle: float = 0.3) -> int:
    """How many rounds the scheduler's semaphore grants: the first waited for up to 10 s (a loaded
    machine may wake a timer late), then any others released within `settle` seconds after it."""
    if not scheduler._open_jobs.acquire(timeout=10):
        return 0
    time.sleep(settle)
    count = 1
    while scheduler._open_jobs.acquire(blocking=False):
        count += 1
    return count


def test_bound_rescheduling_installs_it_on_snakemakes_scheduler():
    assert bound_rescheduling()
    assert JobScheduler._schedule_reevalutation is _schedule_reevaluation
    assert bound_rescheduling()  # idempotent


def test_many_rounds_leave_one_pending_timer_and_one_wake_up():
    scheduler = FakeScheduler()
    before = threading.active_count()
    for _ in range(50):  # fifty rounds within one timespan
        _schedule_reevaluation(scheduler, 0.2)
    assert threading.active_count() - before <= 1
    assert rounds(scheduler) == 1  # Snakemake's timers would have granted 50, each with a chain


def test_after_the_wake_up_the_next_round_schedules_again():
    scheduler = FakeScheduler()
    _schedule_reevaluation(scheduler, 0.05)
    assert rounds(scheduler) == 1
    _schedule_reevaluation(scheduler, 0.05)
    assert rounds(scheduler) == 1


def test_two_schedulers_each_get_their_wake_up():
    first, second = FakeScheduler(), FakeScheduler()
    _schedule_reevaluation(first, 0.05)
    _schedule_reevaluation(second, 0.05)
    assert rounds(first) == rounds(second) == 1


def test_the_timer_does_not_keep_the_process_alive():
    scheduler = FakeScheduler()
    _schedule_reevaluation(scheduler, 60)
    (timer,) = [thread for thread in threading.enumerate() if isinstance(thread, threading.Timer)
                and thread.is_alive() and thread.interval == 60]  # fmt: skip
    assert timer.daemon
    timer.cancel()


def test_a_snakemake_without_the_method_is_left_as_it_is(monkeypatch):
    monkeypatch.delattr(JobScheduler, "_schedule_reevalutation")
    assert not bound_rescheduling()
    assert not hasattr(JobScheduler, "_schedule_reevalutation")
