"""JSON Schemas of the documents rsabench writes (``cell-2.schema.json``: a cell record)."""
