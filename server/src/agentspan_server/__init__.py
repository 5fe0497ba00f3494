"""Agentspan server: the HTTP API (``/api``) over an embedded SQLite file or PostgreSQL.

Start it with ``agentspan server start [--db URL] [--host H] [--port P] [--api-key KEY[:ROLE]]``.
App processes reach it by setting ``AGENTSPAN_SERVER_URL`` (and ``AGENTSPAN_API_KEY``).
"""
