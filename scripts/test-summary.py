#!/usr/bin/env python3
"""Print one closing line for a meson test run: 'LABEL: N passed, N failed, N skipped'."""
import json
import sys

path, label = sys.argv[1], sys.argv[2]
counts = {"passed": 0, "failed": 0, "skipped": 0}
with open(path) as f:
    for line in f:
        line = line.strip()
        if not line:
            continue
        result = json.loads(line).get("result", "")
        if result in ("OK", "EXPECTEDFAIL"):
            counts["passed"] += 1
        elif result == "SKIP":
            counts["skipped"] += 1
        else:
            counts["failed"] += 1
print(f"{label}: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped")
