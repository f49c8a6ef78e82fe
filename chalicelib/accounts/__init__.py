"""Who a user is: registration, login, tokens, passwords, brute-force lockout, the account's
standing as the authorizer checks it, and the user's own data (export and delete).
"""
