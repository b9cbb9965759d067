"""The synthetic safety lab: a tiny safety-aligned model with exactly known harm and answers."""
