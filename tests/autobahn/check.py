#!/usr/bin/env python3
"""Gate on an Autobahn|Testsuite fuzzingclient report (index.json).

Prints the count of each result and fails unless every case is OK, NON-STRICT
or INFORMATIONAL (for both the behaviour and the close behaviour) and the
report holds exactly the expected number of cases: wstest exits 0 even when the
server was down or a case set matched nothing.
"""
import json
import sys
from collections import Counter

# Cases 1-7 and 10 of autobahntestsuite 25.10.1 (see run.sh).
EXPECTED_CASES = int(sys.argv[2]) if len(sys.argv) > 2 else 247
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}


def case_key(case_id):
    return tuple(int(p) for p in case_id.split("."))


def main():
    path = sys.argv[1]
    try:
        with open(path) as f:
            report = json.load(f)
    except (OSError, ValueError) as e:
        print(f"autobahn: cannot read the report {path}: {e}", file=sys.stderr)
        return 1
    if len(report) != 1:
        print(f"autobahn: expected one agent in the report, got {list(report)}", file=sys.stderr)
        return 1
    (agent, cases), = report.items()
    behaviours = Counter(c["behavior"] for c in cases.values())
    closes = Counter(c["behaviorClose"] for c in cases.values())
    print(f"autobahn: {agent}: {len(cases)} cases (expected {EXPECTED_CASES})")
    print("  behavior:      " + ", ".join(f"{k} {v}" for k, v in sorted(behaviours.items())))
    print("  behaviorClose: " + ", ".join(f"{k} {v}" for k, v in sorted(closes.items())))
    bad = sorted(
        (cid for cid, c in cases.items() if c["behavior"] not in PASSING or c["behaviorClose"] not in PASSING),
        key=case_key,
    )
    for cid in bad:
        c = cases[cid]
        print(f"  FAILED {cid}: behavior {c['behavior']}, close {c['behaviorClose']}, "
              f"remote close code {c.get('remoteCloseCode')} ({c.get('reportfile')})")
    if bad:
        print(f"autobahn: {len(bad)} case(s) failed", file=sys.stderr)
        return 1
    if len(cases) != EXPECTED_CASES:
        print(f"autobahn: {len(cases)} cases ran, expected {EXPECTED_CASES}", file=sys.stderr)
        return 1
    print("autobahn: all cases passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
