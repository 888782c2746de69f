"""The rule language's runtime: the expression grammar and compiler (expr.py over the views of
views.py that rules read objects through) and the instruction templates of rewritten sites.
"""
