"""Catch-up: audio uploads and their length, accepting a job (reserve, store, enqueue), the worker
that transcribes, summarises and settles, and the user's history.
"""
