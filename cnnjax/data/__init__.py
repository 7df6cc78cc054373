"""Data sets by name, served as Grain pipelines (see sources.py and pipeline.py)."""
from cnnjax.data.pipeline import eval_dataset, on_device, train_dataset
from cnnjax.data.sources import (DATASETS, BadExampleError, DatasetInfo, NotPreparedError, eval_source, get_info,
                                 get_source, known_names)

__all__ = ["DATASETS", "BadExampleError", "DatasetInfo", "NotPreparedError", "eval_source", "get_info",
           "get_source", "known_names", "on_device", "train_dataset", "eval_dataset"]
