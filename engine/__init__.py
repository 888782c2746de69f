"""klpdiff: a declarative, rule-driven differ that turns a kernel source fix into livepatch objects.

The differ's pipeline, one module per stage: load → correlate → compare → include → sites → refuse →
emit → report (pipeline.py runs them). Everything architecture- or section-specific lives in the rule
files: ruleload.py finds them and returns the compiled rule set (ruleset.py), from the rule cache
(rulecache.py) or compiled by rulecompile.py; rulemodels.py is their schema (one dataclass per kind,
checked by pydantic), ruleyaml.py reads them with positions (expressions: expr.py over the views of
views.py; instruction templates for rewritten sites: template.py).
Livepatch relocations, post-link and module building are in klp.py, postlink.py and module.py.
`klpdiff build` (build.py) goes from source patches to a module: kbuild.py reads the tree's records,
patches.py reads and applies patches, shadow.py gives the private views in which objects are compiled.
The rule author's tools are lint.py, audit.py, explain.py, ruletest.py and tools.py (args.py: the
argument parser cli.py and tools.py share). Every record class is made by records.py: a dataclass
that the type checker keeps immutable unless it says `frozen=False`.
"""

__version__ = "0.1.0"
