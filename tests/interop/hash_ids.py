"""Prints django-pglock's own hashing of lock ids, for the Rust test to compare with.

stdin: a JSON array of lock ids, each a string or an integer.
stdout: one line per id, "<key> <classid> <objid>", where key is the bigint django-pglock passes
to pg_advisory_lock (`pglock.advisory(id).int_lock_id`) and (classid, objid) is
`pglock.advisory_id(id)`, both computed by the installed django-pglock itself.
"""

import json
import sys

import djangoenv

djangoenv.configure()

import pglock  # noqa: E402 (needs Django configured first)


def main():
    ids = json.load(sys.stdin)
    out = []
    for lock_id in ids:
        key = pglock.advisory(lock_id).int_lock_id
        classid, objid = pglock.advisory_id(lock_id)
        out.append(f"{key} {classid} {objid}\n")
    sys.stdout.write("".join(out))


if __name__ == "__main__":
    main()
