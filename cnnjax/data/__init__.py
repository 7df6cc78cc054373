"""Data sets by name, served as Grain pipelines (see sources.py and pipeline.py)."""
from cnnjax.data.pipeline import eval_dataset, train_dataset
from cnnjax.data.sources import DATASETS, DatasetInfo, get_source

__all__ = ["DATASETS", "DatasetInfo", "get_source", "train_dataset", "eval_dataset"]
