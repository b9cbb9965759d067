"""A watchdog for the local Ray a sweep starts: nothing of Ray outlives its driver.

A driver that ends normally shuts Ray down and removes its folder. One that is killed (SIGKILL,
an out-of-memory kill, a closed terminal) cannot, and Ray's agents ignore SIGTERM, so its
processes and its session folder (logs included) would stay behind. So before ``ray.init`` the
driver starts this watchdog in its own session. While the driver lives, the watchdog records the
driver's descendants (Ray's head processes, agents and workers); when the driver is gone, it kills
them and any process still naming the folder on its command line, then removes the folder.

Run as ``python -m safestress.ray_guard DRIVER_PID FOLDER``; it needs ``psutil`` (a dependency of
Ray) and exits by itself once it has cleaned up.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

POLL_SECONDS = 0.25


def private_folder(folder: str | Path) -> None:
    """Make ``folder`` reachable by its owner only (Ray makes its folders world-writable)."""
    os.chmod(folder, stat.S_IRWXU)


def start_guard(folder: str | Path) -> subprocess.Popen[bytes]:
    """Start the watchdog for this process and ``folder``; it outlives this process on purpose."""
    return subprocess.Popen(
        [sys.executable, "-m", "safestress.ray_guard", str(os.getpid()), str(folder)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a signal to the driver's process group does not reach it
        close_fds=True,
    )


def _alive(proc: Any) -> bool:
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _is_ray(proc: Any) -> bool:
    """One of Ray's processes (raylet, gcs_server, agents, ``ray::`` workers), not another guard
    nor anything else the driver happens to have started."""
    import psutil

    try:
        cmdline = " ".join(proc.cmdline())
    except psutil.Error:
        return False
    return "ray" in cmdline.lower() and "safestress.ray_guard" not in cmdline


def _naming(folder: str) -> list[Any]:
    """Processes whose command line names ``folder`` (Ray's head processes and agents do)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        guard = any("safestress.ray_guard" in part for part in cmdline)
        if proc.pid != os.getpid() and not guard and any(folder in part for part in cmdline):
            found.append(proc)
    return found


def _kill(procs: list[Any]) -> None:
    import psutil

    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(procs, timeout=5)


def watch(driver_pid: int, folder: str) -> None:
    """Wait for the driver to end, then kill what it left of Ray and remove ``folder``."""
    import psutil

    try:
        driver = psutil.Process(driver_pid)
    except psutil.NoSuchProcess:
        driver = None
    seen: dict[tuple[int, float], Any] = {}
    while driver is not None and _alive(driver):
        try:
            for child in driver.children(recursive=True):
                if _is_ray(child):
                    seen[(child.pid, child.create_time())] = child  # (pid, start) survives pid reuse
        except psutil.Error:
            pass
        time.sleep(POLL_SECONDS)
    for _ in range(3):  # a dying raylet may still start a worker: sweep until nothing is left
        left = [p for p in seen.values() if _alive(p)] + _naming(folder)
        if not left:
            break
        _kill(left)
    shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit("usage: python -m safestress.ray_guard DRIVER_PID FOLDER")
    watch(int(argv[0]), argv[1])


if __name__ == "__main__":
    main(sys.argv[1:])
