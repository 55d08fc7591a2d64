"""The SQLite store: schema, migrations, batch encoding and read queries."""
