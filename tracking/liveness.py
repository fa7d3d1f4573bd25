"""Whether the process that ran a trial is gone: the one check behind every 'killed process' recovery."""
import os
import socket

HOST = socket.gethostname()


def dead_here(host, pid) -> bool:
    """True only when (host, pid) names a process on this machine that no longer exists.

    A pid we cannot read is never declared dead: failing a live trial is worse than waiting for
    the storage heartbeat to notice a dead one.
    """
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    if host != HOST or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
