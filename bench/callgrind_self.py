#!/usr/bin/env python3
"""Self cost per function of an uncompressed callgrind file (callgrind
--compress-strings=no --compress-pos=no), summed over the files its inlined
code came from, which callgrind_annotate lists apart. Usage:
callgrind_self.py FILE [N] [DIVISOR]: the top N (20) functions, with their
cost divided by DIVISOR (1; give the query count for cost per query)."""
import re
import sys
from collections import Counter


def main():
    path = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    per = float(sys.argv[3]) if len(sys.argv) > 3 else 1.0
    cost, fn, skip, total = Counter(), "?", False, 0
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("fn="):
                fn = line[3:].strip()
            elif line.startswith("calls="):
                skip = True  # the next cost line is the call's inclusive cost
            elif line[:1].isdigit() or line[:1] in "+-*":
                parts = line.split()
                if len(parts) >= 2 and not skip:
                    cost[fn] += int(parts[1])
                    total += int(parts[1])
                skip = False
    print(f"total {total:,} ({total / per:,.0f} per unit)")
    for name, c in cost.most_common(top):
        name = re.sub(r"::h[0-9a-f]{16}$", "", name)
        print(f"{c / per:10,.0f} {100 * c / total:5.1f}%  {name[:150]}")


main()
