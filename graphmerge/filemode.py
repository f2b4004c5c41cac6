"""Permissions for files graphmerge creates: what `open()` would give (0666 / 0777 minus the umask).

`tempfile.mkstemp` / `mkdtemp` create 0600 / 0700 whatever the umask, so outputs, cache blobs and
search reports written through them would be unreadable to the other users of a shared server.
"""

from __future__ import annotations

import os
from functools import lru_cache

__all__ = ["dir_mode", "file_mode", "umask"]


@lru_cache(maxsize=1)
def umask() -> int:
    try:  # Linux reports it without changing it (os.umask can only read it by setting it)
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


def file_mode() -> int:
    return 0o666 & ~umask()


def dir_mode() -> int:
    return 0o777 & ~umask()
