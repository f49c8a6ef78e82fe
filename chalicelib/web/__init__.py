"""The HTTP edge: Chalice glue (request parsing, responses, CORS, access logs, the error table),
rate limits, Idempotency-Key, the JWT authorizer and the retired routes. The only package that
knows HTTP status codes; business packages raise `core.errors` and never import chalice.
"""
