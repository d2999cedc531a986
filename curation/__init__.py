"""Dataset building in pieces: selection, examples, splits, diversity, templates, export."""
