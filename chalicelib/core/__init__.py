"""The foundations every other package uses: typed settings, domain errors, structured logs,
JSON helpers and request validation. Imports nothing else from chalicelib and no web framework.
"""
