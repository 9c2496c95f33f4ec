"""Per-sample counts, records, the one definition of every metric, the bootstrap, and the
metrics document. Depends only on the ground floor (`types`, `errors`, `files`)."""
