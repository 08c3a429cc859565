#!/usr/bin/python3
"""Reads meson's testlog.json of each build directory given and prints one
line per build and the final line `N passed, N failed` that CI reads.
Exit status: 0 only if every test passed and at least one ran.  A skipped
test counts as failed: nothing here is allowed to skip."""
import json
import sys

passed = failed = 0
for build in sys.argv[1:]:
    path = f"{build}/meson-logs/testlog.json"
    p = f = 0
    bad = []
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                rec = json.loads(line)
                if rec.get("result") in ("OK", "EXPECTEDFAIL"):
                    p += 1
                else:
                    f += 1
                    bad.append(f"{rec.get('name')} ({rec.get('result')})")
    except OSError as e:
        print(f"{build}: no test log ({e.strerror})")
        f += 1
    print(f"{build}: {p} passed, {f} failed" + (": " + ", ".join(bad) if bad else ""))
    passed += p
    failed += f
print(f"{passed} passed, {failed} failed")
sys.exit(0 if failed == 0 and passed > 0 else 1)
