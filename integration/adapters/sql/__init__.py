"""The audit store on SQLite and PostgreSQL."""
