"""One pending re-evaluation timer per Snakemake scheduler, instead of one more at every round.

Snakemake 9's job scheduler (snakemake.scheduling.job_scheduler.JobScheduler, up to 9.27.1 at
least) applies its job-rate limit (`--max-jobs-per-timespan`, default 100/1s, on in every
non-dry run) by starting, at the end of every scheduling round, a `threading.Timer` that wakes the
scheduler for one more round a timespan later. That round starts another timer, so every round
that a finished job triggers leaves a chain of timers that never ends: the rounds per second grow
with the jobs finished, and each round re-reads the sizes of every ready job's inputs. On the
default experiment (752 jobs, 2 cores), measured back to back: 71,163 rounds and 59.2 s of
Snakemake's own CPU without this module, 956 rounds and 9.9 s with it, wall 252 -> 217 s
(docs/benchmarks.md, docs/config.md "How jobs run").

`bound_rescheduling()` (called by the Snakefile, so in every Snakemake process that parses this
workflow: a local run, the Slurm executor's main process and its jobs) replaces the scheduler's
`_schedule_reevalutation` with one that starts a timer only when none of that scheduler is
pending: the rate limit still gets its round a timespan after the last one, job events still get
theirs at once. The timer is a daemon thread (Snakemake's kept the process alive up to a timespan
after the run had ended). It changes which rounds happen, never what a job does. It patches only
the method it knows (name and signature); anything else leaves Snakemake as it is.
"""

from __future__ import annotations

import inspect
import threading

_LOCK = threading.Lock()
_PENDING = "_diffroar_reevaluation_pending"


def _schedule_reevaluation(scheduler, delay: float) -> None:
    """Wake `scheduler` for one round after `delay` seconds, unless a wake-up is pending."""
    with _LOCK:
        if scheduler.__dict__.get(_PENDING):
            return
        scheduler.__dict__[_PENDING] = True

    def wake() -> None:
        with _LOCK:
            scheduler.__dict__[_PENDING] = False
        scheduler._open_jobs.release()

    timer = threading.Timer(delay, wake)
    timer.daemon = True
    timer.start()


_schedule_reevaluation.bounded = True


def bound_rescheduling() -> bool:
    """Install `_schedule_reevaluation` on Snakemake's JobScheduler; True when it is installed
    (now or before), False when this Snakemake has no such method to replace."""
    try:
        from snakemake.scheduling.job_scheduler import JobScheduler
    except ImportError:
        return False
    current = getattr(JobScheduler, "_schedule_reevalutation", None)  # Snakemake's spelling
    if current is None:
        return False
    if getattr(current, "bounded", False):
        return True
    if list(inspect.signature(current).parameters) != ["self", "delay"]:
        return False
    JobScheduler._schedule_reevalutation = _schedule_reevaluation
    return True
