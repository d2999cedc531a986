"""What every package may import: settings, the base error, device selection. Imports none of
the project's other packages."""
