"""klpdiff: a declarative, rule-driven differ that turns a kernel source fix into livepatch objects.

The engine is in layers; a module imports only from its own layer and those below it (tests/test_layers.py
checks this). From the bottom:

  core/       records, errors and exit codes, what may be read (inputs) and written (outputs), the cache
  elf/        the object model, the ELF64 structures the one reader and the one writer share, module
              rewriting, DWARF, line tables, layouts
  lang/       the rule language at run time: expressions over views of objects, instruction templates
  ruleset/    rule files to a compiled rule set: schema, YAML source, compiler, loading, cache
  klp/        the kernel's livepatch format: klp symbols and relocations, post-link, building the module
  diff/       the differ: pipeline.py lists its stages (read, classify, correlate, compare, include, sites,
              refuse, emit, report), one module each, and the parts of compare and include beside them
  build/      `klpdiff build`: patches, a shadow of the kernel tree, kbuild's records, diffs in parallel,
              a distribution's stock kernel
  authoring/  the rule author's tools: lint, audit, explain, rule cases
  cli/        the command line: parsing, commands, text and exit codes

Everything architecture- or section-specific lives in the rule files (rules/), never here.
"""

__version__ = "0.1.0"
