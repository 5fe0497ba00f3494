"""Server-side store backends (PostgreSQL); SQLite and memory live in `agentspan.stores`."""
