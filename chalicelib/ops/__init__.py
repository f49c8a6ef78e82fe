"""Running the business: analytics, the scheduled janitor, health, the operator's admin command,
support actions, the audit log and the operator console.
"""
