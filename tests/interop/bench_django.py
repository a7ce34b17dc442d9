"""Times django-pglock's advisory locks in-process, for comparison with pglock.

    python bench_django.py <database URL> <iterations>

Measures, with time.perf_counter_ns around each operation on one held Django connection:

- floor: `SELECT 1` (one round trip: the least any lock operation can cost);
- one acquire + release of `with pglock.advisory(key, ...)` per mode:
    wait         timeout unset: pg_advisory_lock, then pg_advisory_unlock
    timeout0     timeout=0: pg_try_advisory_lock, then pg_advisory_unlock
    timeout5s    timeout=5: lock_timeout set and restored around pg_advisory_lock, then unlock
    timeout_none timeout=None: lock_timeout set to 0 and restored around the lock, then unlock
    shared       shared=True: pg_advisory_lock_shared, then pg_advisory_unlock_shared
    xact         `with transaction.atomic(): pglock.advisory(key, xact=True).acquire()`:
                 BEGIN, pg_advisory_xact_lock, COMMIT (which releases it)

The operations take turns, a round at a time, after a warm-up of max(10, iterations // 10)
rounds (not counted). The lock is never contended. Prints one JSON object on stdout (microseconds per operation):

    {"floor_us": <mean>, "modes": {"wait": <mean>, ...},
     "medians": {"floor_us": <median>, "wait": <median>, ...},
     "iterations": <n>, "versions": {"django": ..., "django_pglock": ..., "psycopg": ...,
     "python": ...}}
"""

import json
import platform
import statistics
import sys
import time

import djangoenv

djangoenv.configure(sys.argv[1])

import django  # noqa: E402 (needs Django configured first)
import pglock  # noqa: E402
import psycopg  # noqa: E402
from django.db import connection, transaction  # noqa: E402

# Any key: every operation takes and gives back the same uncontended lock.
KEY = "pglock-bench-django"


def lock_mode(**kwargs):
    def op():
        with pglock.advisory(KEY, **kwargs) as acquired:
            assert acquired

    return op


def xact_mode():
    def op():
        with transaction.atomic():
            assert pglock.advisory(KEY, xact=True).acquire()

    return op


def measure(ops, iterations):
    """The time of each of `iterations` calls of each op, in nanoseconds, after a warm-up.

    The ops take turns (one call of each per round), so that a busy spell of the machine
    slows every op alike rather than whichever ran at the time.
    """
    for _ in range(max(10, iterations // 10)):
        for op in ops.values():
            op()
    clock = time.perf_counter_ns
    samples = {name: [] for name in ops}
    for _ in range(iterations):
        for name, op in ops.items():
            start = clock()
            op()
            samples[name].append(clock() - start)
    return samples


def main():
    iterations = int(sys.argv[2])
    if iterations < 1:
        raise SystemExit("iterations must be at least 1")

    cursor = connection.cursor()  # opens the connection; kept for the whole run

    def select_1():
        cursor.execute("SELECT 1")
        cursor.fetchone()

    ops = {
        "floor": select_1,
        "wait": lock_mode(),
        "timeout0": lock_mode(timeout=0),
        "timeout5s": lock_mode(timeout=5),
        "timeout_none": lock_mode(timeout=None),
        "shared": lock_mode(shared=True),
        "xact": xact_mode(),
    }

    samples = measure(ops, iterations)
    floor = samples.pop("floor")

    def us(ns):
        return ns / 1000

    result = {
        "floor_us": us(statistics.fmean(floor)),
        "modes": {name: us(statistics.fmean(s)) for name, s in samples.items()},
        "medians": {
            "floor_us": us(statistics.median(floor)),
            **{name: us(statistics.median(s)) for name, s in samples.items()},
        },
        "iterations": iterations,
        "versions": {
            "django": django.__version__,
            "django_pglock": pglock.__version__,
            "psycopg": psycopg.__version__,
            "python": platform.python_version(),
        },
    }
    cursor.close()
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
