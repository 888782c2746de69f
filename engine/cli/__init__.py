"""The command line: parsing, the commands, and the mapping of results to text and exit codes.
"""
