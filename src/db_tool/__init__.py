"""db-tool: per-project throw-away PostgreSQL clusters, the hectic SQL bundle and a migrator."""

__version__ = "0.1.0"
