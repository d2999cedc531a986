def ui_command() -> None:
    """Start the chat app."""
