"""The database and everything recorded in it: articles, datasets, runs, adapters."""
