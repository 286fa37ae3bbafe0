"""`make bench`: the action against the manual flyctl call sequence, on the local Fly simulator.

`python -m bench --help` lists the knobs; the results go to docs/benchmarks.md and
docs/benchmarks.png.
"""

from __future__ import annotations
