"""sidecar (not yet built; see the issues)."""

__all__: list[str] = []
