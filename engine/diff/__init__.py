"""The differ: two objects in, a livepatch object and a report out. pipeline.py lists the stages
and runs them, one module per stage.
"""
