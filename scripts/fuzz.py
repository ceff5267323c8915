#!/usr/bin/env python
"""A long fuzz run, outside CI: the properties of tests/test_fuzz.py, many more examples.

    python scripts/fuzz.py                    # 20,000 examples per property, fresh randomness
    python scripts/fuzz.py --examples 100000  # longer
    python scripts/fuzz.py --seed 1234        # repeatable

CI runs the same properties with 200 derandomized examples each.  A failure
prints the smallest file found and a ``@reproduce_failure`` line; add the bytes
to tests/corpus.py as a case once the bug is fixed.  Exit status is pytest's:
0 when every property held.
"""

from __future__ import annotations

import argparse
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=20_000,
                    help="examples per property (default 20000)")
    ap.add_argument("--seed", type=int, default=None, help="hypothesis seed, for a repeatable run")
    ap.add_argument("-k", default=None, help="only properties matching this pytest -k expression")
    args = ap.parse_args()
    os.environ["FUZZ_EXAMPLES"] = str(args.examples)
    os.environ["FUZZ_RANDOM"] = "1"
    argv = [os.path.join(ROOT, "tests", "test_fuzz.py"), "-q", "-x", "-p", "no:cacheprovider",
            "--hypothesis-show-statistics"]
    if args.seed is not None:
        argv.append(f"--hypothesis-seed={args.seed}")
    if args.k:
        argv += ["-k", args.k]
    return pytest.main(argv)


if __name__ == "__main__":
    sys.exit(main())
