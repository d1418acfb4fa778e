"""Clients without a browser: a client's public keys (private_key_jwt), grants
with no code and no upstream tokens (client credentials, ID-JAG), how an
access token's grant was obtained, and the ID-JAG issuers a server trusts.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_LONG_TEXT = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")  # also schema.Json's column


def upgrade() -> None:
    with op.batch_alter_table("clients") as batch:
        batch.add_column(sa.Column("jwks", _LONG_TEXT, nullable=True))
        batch.add_column(sa.Column("jwks_uri", _LONG_TEXT, nullable=True))
    with op.batch_alter_table("grants") as batch:
        batch.alter_column("code_hash", existing_type=sa.String(64), nullable=True)
        batch.alter_column("upstream", existing_type=_LONG_TEXT, nullable=True)
    with op.batch_alter_table("access_tokens") as batch:
        batch.add_column(sa.Column("grant_type", sa.String(64), nullable=False,
                                   server_default="authorization_code"))
    # Added empty, filled, then required: a TEXT column takes no default on every database.
    with op.batch_alter_table("servers") as batch:
        batch.add_column(sa.Column("id_jag_issuers", _LONG_TEXT, nullable=True))
    op.execute("UPDATE servers SET id_jag_issuers = '[]'")
    with op.batch_alter_table("servers") as batch:
        batch.alter_column("id_jag_issuers", existing_type=_LONG_TEXT, nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("servers") as batch:
        batch.drop_column("id_jag_issuers")
    with op.batch_alter_table("access_tokens") as batch:
        batch.drop_column("grant_type")
    # Grants made without a browser cannot be kept by the older schema.
    op.execute("DELETE FROM access_tokens WHERE grant_id IN "
               "(SELECT grant_id FROM grants WHERE code_hash IS NULL OR upstream IS NULL)")
    op.execute("DELETE FROM grants WHERE code_hash IS NULL OR upstream IS NULL")
    with op.batch_alter_table("grants") as batch:
        batch.alter_column("code_hash", existing_type=sa.String(64), nullable=False)
        batch.alter_column("upstream", existing_type=_LONG_TEXT, nullable=False)
    with op.batch_alter_table("clients") as batch:
        batch.drop_column("jwks_uri")
        batch.drop_column("jwks")
