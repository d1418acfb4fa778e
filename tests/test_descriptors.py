"""serve raises its soft limit on open files to the hard one (serving.more_descriptors):
each forwarded request holds two descriptors, and the usual soft limit of
1024 would run out at some 500 event streams."""

from __future__ import annotations

import pytest

from mcp_oauth_proxy.serving import more_descriptors

resource = pytest.importorskip("resource", reason="no resource limits on this platform")


def test_the_soft_limit_on_open_files_is_raised_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"the hard limit ({hard}) leaves nothing to raise")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        more_descriptors()
        raised, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        assert raised == hard or (hard == resource.RLIM_INFINITY and raised > 256)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, resource.getrlimit(resource.RLIMIT_NOFILE)[0]), hard))
