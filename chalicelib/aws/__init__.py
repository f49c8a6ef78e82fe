"""Everything that talks to AWS: the lazily created clients, the one definition of every table,
bucket and queue, the DynamoDB item layer, and secrets from SSM. Imports only `core`.
"""
