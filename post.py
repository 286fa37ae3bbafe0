#!/usr/local/bin/python
"""Container post step: `/post.py`, run by the Actions runner at the end of the job.

action.yml names it as `runs.post-entrypoint`; it only acts for `lifetime: job` (see
fly_pg_external/post.py). In the image the package is on PYTHONPATH; in a checkout it is
found under src/ next to this file.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from fly_pg_external.post import main
except ModuleNotFoundError:  # a checkout that was not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
    from fly_pg_external.post import main

if __name__ == "__main__":
    raise SystemExit(main())
