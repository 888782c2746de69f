"""klpdiff: a declarative, rule-driven differ that turns a kernel source fix into livepatch objects.

The pipeline, one module per stage: load → correlate → compare → include → refuse → emit → report
(pipeline.py runs them). Everything architecture- or section-specific lives in the rule files
(rules/, loaded by ruleset.py); livepatch relocations, post-link and module building are in klp.py,
postlink.py and module.py; the rule author's tools in lint.py, explain.py, ruletest.py and tools.py.
"""

__version__ = "0.1.0"
