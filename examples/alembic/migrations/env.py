"""Alembic environment: the database comes from ZDM_DSN, connected with psycopg 3."""

import os

import psycopg
from alembic import context
from sqlalchemy import create_engine, pool

# zdm.frameworks.run_plan works on its own connections: one transaction per revision keeps the
# revisions that run zdm plans free of a transaction held open across them.
OPTIONS = {"transaction_per_migration": True}

if context.is_offline_mode():
    # `alembic upgrade … --sql`: print the SQL (for `zdm lint -` or `zdm convert -`).
    context.configure(dialect_name="postgresql", literal_binds=True, **OPTIONS)
    with context.begin_transaction():
        context.run_migrations()
else:
    dsn = os.environ["ZDM_DSN"]
    engine = create_engine(
        "postgresql+psycopg://", creator=lambda: psycopg.connect(dsn), poolclass=pool.NullPool
    )
    with engine.connect() as connection:
        context.configure(connection=connection, **OPTIONS)
        with context.begin_transaction():
            context.run_migrations()
