"""perfdeck collectors: everything that gathers and writes (SDK, integrations, samplers, store, daemon)."""
