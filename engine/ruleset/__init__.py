"""Rule files to a compiled rule set: the schema (schema.py), the YAML reader with positions
(source.py), the compiler (compile.py), the compiled set (compiled.py), which files apply (load.py)
and the cache of compiled sets (cache.py).
"""
