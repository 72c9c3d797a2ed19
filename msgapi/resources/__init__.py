"""HTTP resources: one module per endpoint family."""
