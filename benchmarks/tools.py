"""Find the external tools (wrk, nginx) or install them with apt-get, non-interactively."""
from __future__ import annotations

import os
import shutil
import subprocess

from benchmarks.procs import log

APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


def find(binary: str) -> str | None:
    return shutil.which(binary) or next(
        (p for p in (f"/usr/sbin/{binary}", f"/usr/bin/{binary}") if os.access(p, os.X_OK)), None)


def _apt(args: list[str]) -> bool:
    cmd = ["apt-get", *args]
    log(f"  $ {' '.join(cmd)}")
    done = subprocess.run(cmd, env=APT_ENV, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=600)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()
        log(f"    failed (exit {done.returncode}): {tail[-1] if tail else ''}")
    return done.returncode == 0


def ensure(binary: str, packages: list[str]) -> str:
    """The path of ``binary``, installing the first of ``packages`` apt can find if needed."""
    path = find(binary)
    if path:
        log(f"{binary}: {path}")
        return path
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError(f"{binary} is missing and apt-get cannot run here: install "
                           f"{' or '.join(packages)} by hand")
    log(f"{binary}: not found; installing with apt-get")
    install = ["install", "-y", "-q", "--no-install-recommends"]
    updated = False
    for _ in range(2):
        for pkg in packages:
            if _apt(install + [pkg]) and find(binary):
                path = find(binary)
                log(f"{binary}: installed {pkg} → {path}")
                return path
        if not updated:
            updated = _apt(["update", "-q"])
    raise RuntimeError(f"could not install {binary} (tried {', '.join(packages)})")


def version(binary: str, flag: str = "-v") -> str:
    try:
        done = subprocess.run([binary, flag], capture_output=True, text=True, timeout=10)
    except OSError:
        return "?"
    text = (done.stdout + done.stderr).strip().splitlines()
    first = text[0] if text else "?"
    # "wrk debian/4.1.0-3+b2 [epoll] Copyright (C) ...", "nginx version: nginx/1.22.1"
    return first.split(" Copyright")[0].replace("nginx version: ", "").strip()
