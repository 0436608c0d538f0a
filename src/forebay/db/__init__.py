"""Storage: one schema, migrations, engines for SQLite and PostgreSQL."""
