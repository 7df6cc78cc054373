"""Grain pipelines: an endless shuffled training stream and a padded, masked evaluation pass.

Training: source -> seed -> shuffle -> repeat (a fresh order every epoch) -> per-example augmentation ->
this process's shard -> batch -> read threads -> worker processes (`dataset.num_workers`, optional).
Augmentation is applied before sharding, so an example's augmentation depends only on the seed and its position
in the global stream, and global batch k is the same set of examples for one process or N: process p takes
positions p, p+N, p+2N, ... of the stream, reading (lazily) only those. Batch k is therefore a function of the
seed and k alone: a run resumed at step k starts the stream at batch k (`start_step`), whatever its number of
worker processes, and nothing about the iterator needs to be checkpointed.

Sources whose records are ready model inputs (`info.input_shape` set: text token ids) skip the image
preprocessing. Image batches leave the workers as uint8 (`dataset.normalize_on_device`, 4x less data through
the workers' shared memory and the host-to-device copy) and `on_device`, run inside the jitted steps, normalises
them with the data set's (or the pretrained init's) mean and std; training JPEGs are decoded at reduced scale
where the random crop allows it (`dataset.jpeg_draft`, transforms.py).

Evaluation: the source is padded to a multiple of the global eval batch with masked copies of example 0, so
every example is visited exactly once and every process runs the same number of batches.
"""
import math
from typing import Any, Callable, Dict

import grain
import jax.numpy as jnp
import numpy as np

from cnnjax.data.transforms import Preprocess
from cnnjax.errors import ConfigError


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


def _read_options(d):
  return grain.ReadOptions(num_threads=d.num_threads, prefetch_buffer_size=d.prefetch)


def _local_batch(global_batch: int, field: str, process_count: int) -> int:
  if global_batch % process_count:
    raise ConfigError(f"config.{field}={global_batch} is invalid: a multiple of the process count "
                      f"{process_count}")
  return global_batch // process_count


def _check_shard(process_index: int, process_count: int) -> None:
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} is invalid: in [0, process_count={process_count})")


def preprocess(d, info, augment: str, train: bool = False, *, normalize: bool = True,
               draft: bool = False) -> Preprocess:
  """The per-example transform for `augment`, with the crop options of config.dataset `d` (and, for training,
  TrivialAugmentWide and random erasing); `normalize` False leaves uint8 images for `on_device`, `draft`
  decodes JPEGs at reduced scale where the crop allows it."""
  return Preprocess(d.image_size, info.mean, info.std, augment=augment, pad=d.pad,
                    area_range=tuple(d.crop_area_range), aspect_range=tuple(d.crop_aspect_range),
                    crop_fraction=d.eval_crop_fraction, fit=d.fit, channels=info.image_shape[-1],
                    trivial_augment=train and d.trivial_augment, random_erasing=d.random_erasing if train else 0.0,
                    normalize=normalize, draft=draft)


def on_device(config, info) -> Callable[[Dict[str, Any]], Dict[str, Any]]:
  """The last preprocessing stage, for inside the jitted steps: a batch's uint8 images to float32
  (x / 255 - mean) / std, the host's arithmetic (`Preprocess`) in the same order. The identity for text and
  when `dataset.normalize_on_device` is False (the workers normalised)."""
  if info.input_shape is not None or not config.dataset.normalize_on_device:
    return lambda batch: batch
  mean, std = np.asarray(info.mean, np.float32), np.asarray(info.std, np.float32)

  def normalize(batch):
    return {**batch, "image": (batch["image"].astype(jnp.float32) / 255.0 - mean) / std}
  return normalize


def _mark_flags_parsed() -> None:
  """Grain's worker processes read absl flags; outside `absl.app.run` they are unparsed, so mark them parsed
  (a no-op under app.run) rather than let every worker fail with UnparsedFlagAccessError."""
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def train_dataset(config, source, info, *, process_index: int = 0, process_count: int = 1,
                  start_step: int = 0) -> grain.IterDataset:
  """The endless training stream of this process's local batches (global batch / process count), from global
  batch `start_step` on."""
  d = config.dataset
  _check_shard(process_index, process_count)
  local_batch = _local_batch(config.batch_size, "batch_size", process_count)
  if info.input_shape is None and d.jpeg_draft and hasattr(source, "lazy"):
    source = source.lazy()   # encoded images decoded by the transform, which knows the crop
  ds = grain.MapDataset.source(source).seed(config.seed).shuffle().repeat()
  if info.input_shape is None:
    ds = ds.random_map(preprocess(d, info, d.augment, train=True, normalize=not d.normalize_on_device,
                                  draft=d.jpeg_draft))
  ds = ds[process_index::process_count].batch(local_batch, drop_remainder=True)[start_step:]
  it = ds.to_iter_dataset(_read_options(d))
  if d.num_workers > 0:
    _mark_flags_parsed()
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=d.num_workers,
                                                     per_worker_buffer_size=d.worker_buffer_size))
  return it


def eval_dataset(config, source, info, *, process_index: int = 0, process_count: int = 1) -> grain.IterDataset:
  """All examples of `source` once, in local batches with a 'mask' (False on padding). Iterable many times."""
  d = config.dataset
  _check_shard(process_index, process_count)
  local_batch = _local_batch(config.eval_batch_size, "eval_batch_size", process_count)
  padded_len = math.ceil(len(source) / config.eval_batch_size) * config.eval_batch_size
  ds = grain.MapDataset.source(PaddedSource(source, padded_len))[process_index::process_count]
  if info.input_shape is None:
    ds = ds.random_map(preprocess(d, info, d.eval_augment, normalize=not d.normalize_on_device),
                       seed=0)
  return ds.batch(local_batch, drop_remainder=False).to_iter_dataset(_read_options(d))


def num_eval_examples(source) -> int:
  return len(source)
