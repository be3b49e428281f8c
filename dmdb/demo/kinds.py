"""The demo's model kinds, torch-free so the CLI can offer them without loading torch."""

KINDS = ("linear", "mlp")
