"""Make `stack` mean the project's package, not the test directory tests/stack of the same name.

Run as `.venv/bin/pytest` (not `python -m pytest`), the project root is not on sys.path but tests/ is (it
holds the root conftest), so `import stack` would find tests/stack as a namespace package first. Putting the
root in front fixes that for these tests; `pythonpath = ["."]` in pyproject's pytest options would for all.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROJECT_ROOT = str(Path(__file__).resolve().parents[3])
if sys.path[0] != PROJECT_ROOT:
    sys.path.insert(0, PROJECT_ROOT)
