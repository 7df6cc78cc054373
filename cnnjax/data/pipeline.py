"""Grain pipelines: an endless shuffled training stream and a padded, masked evaluation pass.

Training: source -> seed -> shuffle -> repeat (a fresh order every epoch) -> per-example augmentation ->
this process's shard -> batch. Augmentation is applied before sharding, so an example's augmentation depends
only on the seed and its position in the global stream: one process and N processes see the same global
batches. The iterator's state can be checkpointed (`get_state`/`set_state`; see cnnjax.checkpoint).

Evaluation: the source is padded to a multiple of (processes x batch) with masked copies of example 0, so
every example is visited exactly once and every process runs the same number of batches.
"""
import math

import grain
import numpy as np

from cnnjax.data.transforms import Preprocess


class PaddedSource:
  """`source` followed by masked filler examples up to `length`; adds 'mask' to every record."""

  def __init__(self, source, length: int):
    self.source, self.length = source, length

  def __len__(self):
    return self.length

  def __getitem__(self, i):
    n = len(self.source)
    record = dict(self.source[i if i < n else 0])
    record["mask"] = i < n
    return record


def _read_options(dataset_config):
  return grain.ReadOptions(num_threads=dataset_config.num_threads, prefetch_buffer_size=dataset_config.prefetch)


def train_dataset(config, source, info, *, process_index: int = 0, process_count: int = 1) -> grain.IterDataset:
  """The endless training stream of this process's local batches (global batch / process count)."""
  d = config.dataset
  local_batch = config.batch_size // process_count
  ds = grain.MapDataset.source(source).seed(config.seed).shuffle().repeat()
  ds = ds.random_map(Preprocess(d.image_size, info.mean, info.std, augment=d.augment))
  ds = ds[process_index::process_count].batch(local_batch, drop_remainder=True)
  it = ds.to_iter_dataset(_read_options(d))
  if d.num_workers > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=d.num_workers))
  return it


def eval_dataset(config, source, info, *, process_index: int = 0, process_count: int = 1) -> grain.MapDataset:
  """All examples of `source` once, in local batches with a 'mask' (False on padding)."""
  d = config.dataset
  local_batch = config.eval_batch_size // process_count
  padded_len = math.ceil(len(source) / config.eval_batch_size) * config.eval_batch_size
  ds = grain.MapDataset.source(PaddedSource(source, padded_len))[process_index::process_count]
  ds = ds.random_map(Preprocess(d.image_size, info.mean, info.std, augment="none"), seed=0)
  return ds.batch(local_batch, drop_remainder=False)


def num_eval_examples(source) -> int:
  return len(source)
