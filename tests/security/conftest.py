"""The attack tests reuse the servers, identity provider and walks the
adapter tests start (tests/adapters/)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "adapters"))
