"""Data sets by name, served as Grain pipelines (see registry.py, sources.py and pipeline.py)."""
from cnnjax.data.pipeline import eval_dataset, on_device, train_dataset
from cnnjax.data.registry import is_text, register
from cnnjax.data.sources import (BadExampleError, DatasetInfo, NotPreparedError, eval_source, get_info, get_source,
                                 known_names)

__all__ = ["BadExampleError", "DatasetInfo", "NotPreparedError", "eval_source", "get_info", "get_source", "is_text",
           "known_names", "on_device", "register", "train_dataset", "eval_dataset"]
