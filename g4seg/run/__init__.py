"""A run: the LightningModule, the run folder that owns it, the writer, the scoring
callback and the CLI. The top of the core: it may use everything below it."""
