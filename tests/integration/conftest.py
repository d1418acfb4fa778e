"""Fixtures for the integration tests: start the identity provider process
(see realidp.py) and stop every one started."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest

from processes import stop_process, tail, wait_until
from realidp import (
    IDP_CLIENT_ID,
    IDP_CLIENT_SECRET,
    IDP_DIR,
    STARTUP_DEADLINE,
    IdP,
    ensure_installed,
)


StartIdP = Callable[..., IdP]


@pytest.fixture(scope="session")
def start_idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartIdP]:
    """A function that starts an identity provider process and returns it
    once it serves its discovery document. Every process started is stopped
    at the end of the session (or earlier by ``IdP.stop``)."""
    ensure_installed()
    node = shutil.which("node")
    assert node is not None
    started: list[IdP] = []
    logs = tmp_path_factory.mktemp("idp-logs")

    def start(redirect_uris: tuple[str, ...] | list[str], mode: str = "oidc", access_token_ttl: int = 3600,
              client_id: str = IDP_CLIENT_ID, client_secret: str = IDP_CLIENT_SECRET) -> IdP:
        log = Path(tempfile.mkstemp(prefix=f"idp-{mode}-", suffix=".log", dir=logs)[1])
        cmd = [node, str(IDP_DIR / "server.mjs"), "--mode", mode, "--client-id", client_id,
               "--client-secret", client_secret, "--access-token-ttl", str(access_token_ttl)]
        for uri in redirect_uris:
            cmd += ["--redirect-uri", uri]
        with log.open("wb") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                                    cwd=IDP_DIR, env={**os.environ, "NODE_ENV": "test"})
        assert proc.stdout is not None
        # The process prints `READY <issuer>` once it listens; read that line
        # in a thread so the wait has a deadline.
        line: list[bytes] = []
        reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(STARTUP_DEADLINE)
        if not line or not line[0].startswith(b"READY "):
            stop_process(proc)
            raise RuntimeError(f"the identity provider did not start:\n{tail(log)}")
        issuer = line[0].decode().split()[1]
        idp = IdP(issuer, mode, client_id, client_secret, tuple(redirect_uris), proc, log)
        started.append(idp)
        wait_until(
            lambda: httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=2).status_code == 200,
            STARTUP_DEADLINE, "the identity provider", proc, log,
        )
        return idp

    yield start
    for idp in started:
        idp.stop()
        if idp.process.stdout is not None:
            idp.process.stdout.close()
