"""Model loading: one hub (`hub.py`: one cache, one key rule, one download hint), loaders by
path or hub id, and every random test model in `tiny.py`."""
