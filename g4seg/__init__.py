"""g4seg: compare mask-refinement strategies on coarse segmentation masks (see README)."""

__all__ = ["load_strategy", "refine"]


def __getattr__(name: str):
    # lazy: `import g4seg.run.cli` (every command) does not pay for the API's imports
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(name)
