"""Alembic environment: depmesh runs migrations programmatically, on the
connection it hands over in config.attributes["connection"]."""

from alembic import context

from depmesh.registry.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, version_table="depmesh_alembic_version")
with context.begin_transaction():
    context.run_migrations()
