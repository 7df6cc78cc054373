"""Kim (2014), "Convolutional Neural Networks for Sentence Classification" (EMNLP), Sec. 2 and 3.

Token ids (N, L) -> word embeddings (L x k, k = 300 in the paper) -> for each filter window h in (3, 4, 5),
100 filters of h words x the full embedding width, ReLU, max over time -> the 300 features, dropout 0.5 ->
dense to the classes (softmax in the loss). Before the convolutions the sentence is padded with max(h) - 1
padding words on each side, as Kim's code does, so every word is seen by every window position.

A filter spanning h words and the full embedding width k is a 1-D convolution over the words with the k
embedding dimensions as input channels (kernel (h, k, 100), the same numbers as Kim's h x k filter on a
one-channel "image"). It is computed so: XLA's CPU convolution of a one-channel input with a kernel 300 wide
did not finish a batch-50 gradient in 200 s, against 0.18 s for the 1-D form (2 cores, loaded machine).

Variants (`variant`, Sec. 3.2, Table 2):
- `rand`: embeddings drawn from U[-0.25, 0.25] and trained;
- `static`: pretrained vectors (unknown words U[-0.25, 0.25]), kept fixed;
- `non-static`: pretrained vectors fine-tuned;
- `multichannel`: two channels initialised from the same vectors, one fine-tuned and one fixed; each filter is
  applied to both channels and the results are added. A filter is linear, so this is computed as one
  convolution of the sum of the two channels' embeddings (the same numbers, half the work).
The fixed channels are frozen inside the model with `jax.lax.stop_gradient`: the frozenness belongs to the
architecture variant, so the training loop and the optimizer need no per-variant masks. Their gradient is
exactly zero, so Adadelta, SGD and Adam leave them unchanged; weight decay would still shrink them (Kim uses
none).

Token ids outside the vocabulary (negative, or >= vocab_size: data encoded with another vocabulary) are read
as `<unk>` (id 1), like a word the vocabulary does not hold; a jitted lookup cannot raise, and without this
`jnp.take` would silently use the last row.

The padding word (id 0) is the zero vector: its row is initialised to zero and the lookup multiplies by
(id != 0), so its gradient is zero and it stays zero under training. Pretrained vectors come from the data
(`embedding_init`, see cnnjax.data.text.pretrained_init), as does `vocab_size`.

Parameters of the paper's MR network (|V| = 18,765 words + the padding row, k = 300, CNN-rand):
(18,765 + 1) x 300 embedding + sum over h of (h x 300 x 100 + 100) + 300 x 2 + 2 = 5,990,702.
"""
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax.errors import ConfigError
from cnnjax.layers import Conv
from cnnjax.models.registry import register

UNK = 1  # the id of `<unk>` (cnnjax.data.text's vocabularies)
VARIANTS = ("rand", "static", "non-static", "multichannel")


def uniform_embedding_init(key, shape, dtype=jnp.float32):
  """U[-0.25, 0.25] (Kim 2014, Sec. 3.2, chosen so the variance matches pretrained vectors), padding row 0."""
  return jax.random.uniform(key, shape, dtype, -0.25, 0.25).at[0].set(0.0)


class KimCNN(nn.Module):
  """Kim (2014)'s CNN for sentence classification; see the module docstring."""
  num_classes: int = 2
  vocab_size: int = 0                   # rows of the embedding, the padding row included (from the data)
  embed_dim: int = 300
  variant: str = "rand"
  windows: Sequence[int] = (3, 4, 5)
  features: int = 100                   # feature maps per window
  dropout_rate: float = 0.5
  embedding_init: Optional[Callable] = None   # pretrained vectors (from the data); None: U[-0.25, 0.25]
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  conv_impl: str = "xla"

  def check(self):
    """Raises ConfigError for option values that cannot build the network (config.validate calls it, before the
    data gives vocab_size and the vectors; `check_data` checks those at build time)."""
    if self.variant not in VARIANTS:
      raise ConfigError(f"config.model.variant={self.variant!r} is invalid: one of {VARIANTS}")
    if not self.windows or min(self.windows) < 1:
      raise ConfigError(f"config.model.windows={tuple(self.windows)!r} is invalid: positive window sizes")

  def check_data(self):
    """Raises ConfigError for options that do not fit what the data gave (vocab_size, embedding_init)."""
    if self.variant != "rand" and self.embedding_init is None:
      raise ConfigError(f"config.model.variant={self.variant!r} needs pretrained word vectors: set "
                        f"config.dataset.vectors (a GloVe text or word2vec .bin file)")
    if self.vocab_size < 2:
      raise ConfigError(f"vocab_size={self.vocab_size} is invalid: the data set's vocabulary size (>= 2)")
    if self.embedding_init is None and self.embed_dim < 1:
      raise ConfigError(f"config.model.embed_dim={self.embed_dim} is invalid: a positive width")

  @nn.compact
  def __call__(self, ids, *, train: bool):
    self.check()
    self.check_data()
    init = self.embedding_init or uniform_embedding_init
    shape = (self.vocab_size, self.embed_dim)
    table = self.param("embedding", init, shape, self.param_dtype)
    if self.variant == "static":
      table = jax.lax.stop_gradient(table)
    pad = max(self.windows) - 1
    ids = ids.astype(jnp.int32)
    ids = jnp.where((ids < 0) | (ids >= self.vocab_size), UNK, ids)  # outside the vocabulary: <unk>
    ids = jnp.pad(ids, ((0, 0), (pad, pad)))
    keep = (ids != 0)[..., None].astype(self.dtype)
    lookup = lambda t: jnp.take(t.astype(self.dtype), ids, axis=0) * keep
    x = lookup(table)
    if self.variant == "multichannel":
      frozen = self.param("embedding_static", lambda rng, *_: table, shape, self.param_dtype)  # a copy at init
      x = x + lookup(jax.lax.stop_gradient(frozen))
    pooled = []
    for h in self.windows:   # (N, words, embedding) -> (N, words - h + 1, features)
      y = Conv(self.features, (h,), padding="VALID", dtype=self.dtype, param_dtype=self.param_dtype,
               impl=self.conv_impl, name=f"conv{h}")(x)
      pooled.append(jnp.max(nn.relu(y), axis=1))           # max over time
    x = jnp.concatenate(pooled, axis=-1)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype,
                    name="output")(x).astype(jnp.float32)


register("kim_cnn", KimCNN)
