"""What the tests that start real services share: Debian packages installed when missing, and free loopback ports."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess


def apt_install(*packages: str, recommends: bool = False) -> None:
    """Install Debian packages with apt-get, quietly; with their recommended extras only when `recommends`.

    Raises:
        RuntimeError: apt-get is missing or this process is not root, so nothing can be installed here.
    """
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise RuntimeError(f"{', '.join(packages)} missing; apt-get cannot install it here (needs root, apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True, timeout=600)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", *([] if recommends else ["--no-install-recommends"]), *packages],
        check=True,
        env=env,
        capture_output=True,
        timeout=900,
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
