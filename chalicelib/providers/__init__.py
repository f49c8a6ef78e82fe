"""One small client per external API (AssemblyAI, OpenAI, Twitch).

A provider client knows the provider's wire format and nothing about credits or HTTP
routes. Every failure leaves as an `UpstreamError` (502) or `ServiceUnavailable` (503)
with a safe message: the provider's own body never reaches a client. The modules import
`requests` lazily (chalicelib.providers.http), so importing this package costs nothing
at a cold start.
"""
