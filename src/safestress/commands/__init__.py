"""Command groups whose code sits below the report layer (see each module's docstring)."""
