"""`python scripts/release.py --version X.Y.Z STEP…`: release the action.

The release is the package next to this file, scripts/releasing/: its docstring lists the steps
and what each one checks or makes. This file is the command, and the names the release's tests
use.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The action's own package from this checkout (its workflow-command writer and step state): the
# jobs that release install its dependencies (requirements.txt), not the package itself.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from releasing.cli import STEPS, main, parse_args
from releasing.commit import commit_message, pin_image, trailers
from releasing.config import DRY_DIGEST
from releasing.errors import ReleaseError
from releasing.registry import _parse_challenge
from releasing.versions import Version, changelog_sections

__all__ = [
    "DRY_DIGEST",
    "STEPS",
    "ReleaseError",
    "Version",
    "_parse_challenge",
    "changelog_sections",
    "commit_message",
    "main",
    "parse_args",
    "pin_image",
    "trailers",
]

if __name__ == "__main__":
    raise SystemExit(main())
