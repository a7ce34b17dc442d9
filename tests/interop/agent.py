"""One Django session that takes and releases a django-pglock advisory lock on command.

    python agent.py <database URL> <lock id as JSON: "name" or 42>

It prints "pid <backend pid>" once connected, then reads one command per line on stdin and
answers each on stdout (flushed at once), so the Rust test drives it step by step:

    hold [shared] [xact] [timeout=<seconds>]
        `with pglock.advisory(id, ...)` is entered and kept open. Prints "held" once acquired
        (after waiting as long as the options say), or "not acquired" (side effect Return).
    release
        Leaves that `with` block: django-pglock unlocks a session lock, and commits the durable
        transaction it opened for an xact lock. Prints "released".
    try [shared] [xact] [raise] [timeout=<seconds>]
        Enters and leaves `with pglock.advisory(id, ...)` at once. timeout defaults to 0
        (pg_try_advisory_*). Prints "acquired", "not acquired" (Return: the `with` gave False),
        or with `raise`, "error: <message>" for the django.db.utils.OperationalError raised.

Any other failure ends the script with a traceback on stderr and a non-zero status. EOF on
stdin ends it too (a held lock is released as the `with` block exits).
"""

import contextlib
import json
import sys

import djangoenv

djangoenv.configure(sys.argv[1])

import pglock  # noqa: E402 (needs Django configured first)
from django.db import connection  # noqa: E402
from django.db.utils import OperationalError  # noqa: E402


def say(line):
    print(line, flush=True)


def options(words):
    """Keyword arguments for pglock.advisory from the words after a command."""
    kwargs = {}
    for word in words:
        if word in ("shared", "xact"):
            kwargs[word] = True
        elif word == "raise":
            kwargs["side_effect"] = pglock.Raise
        elif word.startswith("timeout="):
            kwargs["timeout"] = float(word.removeprefix("timeout="))
        else:
            raise ValueError(f"unknown option {word!r}")
    return kwargs


def main():
    lock_id = json.loads(sys.argv[2])
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        say(f"pid {cursor.fetchone()[0]}")

    held = None  # the ExitStack of a `hold` not yet released
    for line in sys.stdin:
        command, *words = line.split()
        if command == "hold":
            assert held is None, "already holding"
            held = contextlib.ExitStack()
            acquired = held.enter_context(pglock.advisory(lock_id, **options(words)))
            say("held" if acquired else "not acquired")
        elif command == "release":
            assert held is not None, "nothing held"
            held.close()
            held = None
            say("released")
        elif command == "try":
            kwargs = {"timeout": 0, **options(words)}
            try:
                with pglock.advisory(lock_id, **kwargs) as acquired:
                    pass
                say("acquired" if acquired else "not acquired")
            except OperationalError as error:
                if kwargs.get("side_effect") is not pglock.Raise:
                    raise
                say("error: " + " ".join(str(error).split()))
        else:
            raise ValueError(f"unknown command {command!r}")
    if held is not None:
        held.close()


if __name__ == "__main__":
    main()
