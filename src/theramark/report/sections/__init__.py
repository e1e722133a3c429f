"""Section builders, one module per stage. Each takes result tables and returns Section objects."""
