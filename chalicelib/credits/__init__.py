"""Credits: the ledger (the only code that changes a balance), the read side (balance and
statement) and the daily counters kept as the money moves.
"""
