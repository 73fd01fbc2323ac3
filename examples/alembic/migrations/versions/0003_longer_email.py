"""Widen customers.email; needs the phone plan done (its index must exist before we go on)."""

import os

import sqlalchemy as sa

from alembic import context, op

from zdm.frameworks import require_completed

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    if not context.is_offline_mode():
        require_completed("add_phone", os.environ["ZDM_DSN"])
    op.execute("SET LOCAL lock_timeout = '2s'")
    op.alter_column("customers", "email", type_=sa.String(320))


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '2s'")
    op.alter_column("customers", "email", type_=sa.String(255))
