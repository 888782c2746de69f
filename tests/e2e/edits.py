#!/usr/bin/env python3
"""The source fixes the end-to-end test livepatches, as small edits applied to a kernel tree.

usage: edits.py apply|revert KERNEL_SRC [NAME...]  — prints the files it touched
(all edits, or only the named ones).
Each edit names one anchor line of the kernel source and what follows it, so the
test carries no copy of kernel code beyond that anchor.
"""

from __future__ import annotations

import sys
from pathlib import Path

# name: (file, anchor, replacement) — one anchor per fix; the expected effect is checked in the guest
EDITS = {
    # a string change in cmdline_proc_show; references saved_command_line (global, not exported)
    "cmdline": ("fs/proc/cmdline.c",
     "\tseq_puts(m, saved_command_line);\n",
     "\tseq_puts(m, saved_command_line);\n\tseq_puts(m, \" klpdiff-e2e-patched\");\n"),
    # a change in a function that uses a static local (iunique's `counter`, counter.0 in kallsyms)
    "static-local": ("fs/inode.c",
     "counter = max_reserved + 1;",
     "counter = max_reserved + 2;"),
    # a new call to a static, unexported function (show_val_kb): a klp relocation to it
    "static-function": ("fs/proc/meminfo.c",
     "\tshow_val_kb(m, \"MemTotal:       \", i.totalram);\n",
     "\tshow_val_kb(m, \"MemTotal:       \", i.totalram);\n\tshow_val_kb(m, \"KlpdiffE2E:     \", 1);\n"),
    # a new error path in vfs_read, after its access_ok(): on x86_64 that check reads USER_PTR_MAX
    # through a boot-time runtime constant, which klpdiff rewrites into a load of USER_PTR_MAX
    "user-access": ("fs/read_write.c",
     "\t\treturn -EFAULT;\n\n\tret = rw_verify_area(READ, file, pos, count);\n",
     "\t\treturn -EFAULT;\n\tif (unlikely(count == 0x7ffff001))\n\t\treturn -ENOTTY;\n\n"
     "\tret = rw_verify_area(READ, file, pos, count);\n"),
}


def main() -> int:
    action, src, names = sys.argv[1], Path(sys.argv[2]), sys.argv[3:] or list(EDITS)
    for name in names:
        rel, anchor, replacement = EDITS[name]
        path = src / rel
        text = path.read_text()
        old, new = (anchor, replacement) if action == "apply" else (replacement, anchor)
        if old not in text:
            print(f"edits.py: {rel}: anchor not found for {action}", file=sys.stderr)
            return 1
        path.write_text(text.replace(old, new, 1))
        print(rel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
