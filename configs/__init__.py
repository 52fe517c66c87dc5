"""Training configurations (ml_collections). Each file's docstring holds the command that runs it."""
