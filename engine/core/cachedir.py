"""Where klpdiff keeps what it can rebuild: compiled rule sets (ruleset/cache.py) and the expression
parser's tables (expr).

In: the environment. Out: the cache folder of the running user, or None (caching off).

`$KLPDIFF_CACHE_DIR`, else `$XDG_CACHE_HOME/klpdiff`, else `~/.cache/klpdiff`; an empty
`KLPDIFF_CACHE_DIR` turns caching off. Never a shared folder such as /tmp: what is cached there is
unpickled, so only a folder of the running user's own is used.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path | None:
    """The cache folder, or None when caching is off."""
    configured = os.environ.get("KLPDIFF_CACHE_DIR")
    if configured is not None:
        return Path(configured) if configured else None
    home = os.path.expanduser("~")
    base = os.environ.get("XDG_CACHE_HOME") or (os.path.join(home, ".cache") if os.path.isabs(home) else "")
    return Path(base) / "klpdiff" if os.path.isabs(base) else None  # no home of our own: no cache
