"""The kernel's livepatch format: livepatch symbol names and relocation tables, the running
kernel's symbols (symbols.py), post-link, and building livepatch-NAME.ko with kbuild (module.py).
"""
