"""Fails unless a JUnit report shows PostgreSQL tests that ran and passed.

CI uses it after the test command: a PostgreSQL half that was skipped or
deselected must fail the run, not pass it quietly.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET


def main(report: str) -> int:
    ran = failed = skipped = expected_failures = 0
    for case in ET.parse(report).iter("testcase"):
        if "postgres" not in case.get("name", "") and "postgres" not in case.get("classname", ""):
            continue
        skip = case.find("skipped")
        if skip is not None and skip.get("type") == "pytest.xfail":
            # A documented known bug that showed up: it ran, and is
            # reported, but neither passes nor silently skips.
            expected_failures += 1
        elif skip is not None:
            skipped += 1
        elif case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        else:
            ran += 1
    print(
        f"PostgreSQL tests: {ran} passed, {failed} failed, {skipped} skipped,"
        f" {expected_failures} known failures (xfail)"
    )
    return 0 if ran > 0 and failed == 0 and skipped == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
