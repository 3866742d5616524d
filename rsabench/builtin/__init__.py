"""Built-in plugins. They register through the ``rsabench`` entry-point group exactly like external ones."""
