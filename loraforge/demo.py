def demo_command() -> None:
    """Run the end-to-end demo."""
