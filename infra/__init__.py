"""Infrastructure tooling: create the stack locally (bootstrap) or render it for AWS (template)."""
