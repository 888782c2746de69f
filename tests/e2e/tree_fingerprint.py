#!/usr/bin/env python3
"""Fingerprint a kernel tree: every path with its type, mode, size, mtime and content hash.

usage: tree_fingerprint.py TREE   -- prints one line: the digest and the number of entries.
Two equal lines mean the tree is byte-identical, timestamps included (so make rebuilds nothing).
"""

from __future__ import annotations

import hashlib
import os
import sys


def fingerprint(root: str) -> tuple[str, int]:
    total = hashlib.sha256()
    count = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames + dirnames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            total.update(f"{os.path.relpath(path, root)}\0{st.st_mode}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as fh:
                    total.update(hashlib.file_digest(fh, "sha256").digest())
            elif os.path.islink(path):
                total.update(os.readlink(path).encode())
            count += 1
    return total.hexdigest(), count


if __name__ == "__main__":
    digest, count = fingerprint(sys.argv[1])
    print(f"{digest} {count}")
