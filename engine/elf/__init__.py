"""ELF objects: the object model, the one reader (read.py) and writer (write.py), the rewriter of
linked modules, and the debug information (DWARF units, line tables, type layouts). Kernel-agnostic.
"""
