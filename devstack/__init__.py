"""Local development stack: embedded AWS, fake providers and the `make run` orchestrator."""
