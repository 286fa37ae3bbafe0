"""Container entry point: `python /app/entrypoint.py`, run by the Actions runner.

It works from any working directory (the runner sets /github/workspace): the package is found
where pip installed it, or, in a plain checkout, under src/ next to this file.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from fly_pg_external.main import main
except ModuleNotFoundError:  # a checkout that was not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
    from fly_pg_external.main import main

if __name__ == "__main__":
    raise SystemExit(main())
