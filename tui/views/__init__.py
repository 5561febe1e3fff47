"""The five views of ``prof tui`` and its help screen."""
