"""The page tests share the local identity provider of tests/adapters."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "adapters"))
