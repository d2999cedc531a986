"""Curation tests build snapshots from the bundled MedQuAD pairs, as the trainer tests do."""

from tests.trainers.conftest import qa_store  # noqa: F401 (fixture)
