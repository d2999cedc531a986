"""LoRAForge: crawl → store → curate → train → register/publish → chat."""

__version__ = "0.1.0"
