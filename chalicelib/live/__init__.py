"""Live captions and questions: the paid chain of streaming tokens, asking about what was said,
and the Twitch stream lookup.
"""
