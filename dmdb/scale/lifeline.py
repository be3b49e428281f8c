"""Processes that the local engine starts die with the process that started them.

The collecting process starts a forkserver, which forks the pool's workers. When the collector
is killed outright (SIGKILL, the OOM killer), nothing of Python's runs in it, and its workers
would wait forever on their task pipe, holding their memory (and GPU). On Linux each of them
asks the kernel for SIGKILL when its parent exits (PR_SET_PDEATHSIG): the forkserver with the
collector, each worker with the forkserver. Elsewhere this is a no-op.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """SIGKILL this process when its parent exits; exit at once if it already has."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:  # the parent exited before the request was in place
        os._exit(1)
