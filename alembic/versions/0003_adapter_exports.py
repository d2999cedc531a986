"""adapter_exports: GGUF (and later other) files an adapter was exported to

Revision ID: 7d2a9c4e1f60
Revises: 5c1e2f0a7b31
Create Date: 2026-12-03 17:20:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '7d2a9c4e1f60'
down_revision: str | None = '5c1e2f0a7b31'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('adapter_exports',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('adapter_id', sa.Integer(), nullable=False),
    sa.Column('format', sa.String(length=16), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('quantization', sa.String(length=16), nullable=False),
    sa.Column('path', sa.String(length=2000), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('size_bytes >= 0', name=op.f('ck_adapter_exports_size_non_negative')),
    sa.ForeignKeyConstraint(['adapter_id'], ['adapters.id'], name=op.f('fk_adapter_exports_adapter_id_adapters'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_adapter_exports'))
    )
    with op.batch_alter_table('adapter_exports', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_adapter_exports_adapter_id'), ['adapter_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('adapter_exports', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_adapter_exports_adapter_id'))
    op.drop_table('adapter_exports')
