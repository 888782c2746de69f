"""The rule author's tools: lint, audit, explain and rule cases.
"""
