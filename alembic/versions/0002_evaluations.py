"""evaluations: held-out answers of a base alone and with adapters

Revision ID: 5c1e2f0a7b31
Revises: 9f605f656ca9
Create Date: 2026-12-03 10:40:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '5c1e2f0a7b31'
down_revision: str | None = '9f605f656ca9'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('evaluations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('batch_id', sa.String(length=64), nullable=False),
    sa.Column('base_model_id', sa.Integer(), nullable=False),
    sa.Column('adapter_id', sa.Integer(), nullable=True),
    sa.Column('snapshot_id', sa.Integer(), nullable=False),
    sa.Column('split', sa.Enum('train', 'validation', 'test', name='split', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('examples_count', sa.Integer(), nullable=False),
    sa.Column('settings', sa.JSON(), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('examples', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('examples_count >= 0', name=op.f('ck_evaluations_examples_non_negative')),
    sa.ForeignKeyConstraint(['adapter_id'], ['adapters.id'], name=op.f('fk_evaluations_adapter_id_adapters'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['base_model_id'], ['base_models.id'], name=op.f('fk_evaluations_base_model_id_base_models'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['snapshot_id'], ['dataset_snapshots.id'], name=op.f('fk_evaluations_snapshot_id_dataset_snapshots'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_evaluations'))
    )
    with op.batch_alter_table('evaluations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_evaluations_adapter_id'), ['adapter_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_evaluations_batch_id'), ['batch_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('evaluations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_evaluations_batch_id'))
        batch_op.drop_index(batch_op.f('ix_evaluations_adapter_id'))
    op.drop_table('evaluations')
