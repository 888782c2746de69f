"""The ground floor: typed records, errors and exit codes, what may be read (inputs) and written
(outputs), and where the cache and the installation's data are. Imports nothing of klpdiff.
"""
