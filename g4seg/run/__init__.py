"""A run: the LightningModule, the run folder that owns it (a plain object) and the
Lightning hooks around it, the writer, the scoring and the CLI. The top of the core: it may
use everything below it."""
