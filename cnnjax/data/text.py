"""Sentence-classification data: Kim's tokenizer, a vocabulary from the training split, splits and folds, word
vectors, and random-access sources of token ids.

Data sets (`dataset.name`):
- `sentences/<x>`: one `label sentence` line per example (labels from 0) in `dataset.data_dir`, the format the
  field shares (Kim 2014, Table 1): mr (rt-polarity.all), subj (subj.all), cr (custrev.all), mpqa (mpqa.all),
  trec (TREC.train.all, TREC.test.all), sst2 (stsa.binary.train/dev/test), sst1 (stsa.fine.train/dev/test).
- TFDS `glue/sst2` and `trec`, read with `tfds.data_source` from prepared files (never downloaded).

Splits are 'train', 'dev' and 'test'. A data set with one file has no test split and is evaluated by
`dataset.num_folds`-fold cross-validation: the lines are permuted with `numpy.random.default_rng(split_seed)`
and fold k holds positions k, k + num_folds, k + 2 num_folds, ... of that permutation (sizes differ by at most
one); 'test' is fold `dataset.fold`, the other folds are the training part. Wherever a data set has no dev file,
'dev' is `dataset.dev_fraction` of the training part, drawn with `default_rng((split_seed, fold))`, and
'train' is the rest. (Kim's code draws each sentence's fold independently at random; equal folds are the
usual reading of "10-fold CV".)

The vocabulary and the maximum length come from the 'train' split only (`build_vocab`); words seen only in
other splits map to `<unk>`. Ids: 0 is padding, 1 is `<unk>`. Sentences longer than the maximum length are
truncated and counted in the logs; a line with a label and no words is kept (all padding) and counted.
"""
import collections
import dataclasses
import functools
import logging
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from cnnjax import workdir as workdir_lib
from cnnjax.data import registry
from cnnjax.data.base import DatasetInfo, default_data_dir, not_prepared
from cnnjax.errors import BadFileError, ConfigError

log = logging.getLogger("cnnjax")

PAD, UNK = 0, 1
PAD_WORD, UNK_WORD = "<pad>", "<unk>"
FAMILY = "sentences"


# --- Kim's tokenizer --------------------------------------------------------------------------------------------
_NOT_KEPT = re.compile(r"[^A-Za-z0-9(),!?'`]")
_CLITIC = re.compile(r"(n't|'s|'ve|'re|'d|'ll)")
_PUNCT = re.compile(r"([,!?()])")


def clean_str(text: str, lowercase: bool = True) -> str:
  """Kim's `clean_str` (CNN_sentence, process_data.py): every character other than letters, digits and
  ( ) , ! ? ' ` becomes a space; the clitics 's 've n't 're 'd 'll are split off; , ! ( ) ? become tokens;
  runs of spaces collapse; lower-cased unless `lowercase=False` (Kim keeps TREC's case).

  Kim's code writes the parentheses as `\\(` and `\\)` (a regular-expression replacement quirk); here they
  stay `(` and `)`.
  """
  text = _NOT_KEPT.sub(" ", text)
  text = _CLITIC.sub(r" \1", text)
  text = _PUNCT.sub(r" \1 ", text)
  text = " ".join(text.split())
  return text.lower() if lowercase else text


def tokenize(text: str, lowercase: bool = True) -> List[str]:
  return clean_str(text, lowercase).split()


# --- vocabulary -------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Vocab:
  """Words by id (0 `<pad>`, 1 `<unk>`, then the training words by falling count, ties alphabetical) and the
  length every sentence is padded or truncated to."""
  words: Tuple[str, ...]
  max_len: int
  lowercase: bool

  @functools.cached_property
  def index(self) -> Dict[str, int]:
    return {w: i for i, w in enumerate(self.words)}

  def __len__(self):
    return len(self.words)

  def encode(self, tokens: Sequence[str]) -> np.ndarray:
    """int32 ids of length max_len: the tokens' ids (unknown words -> UNK), cut or padded with PAD."""
    ids = np.full(self.max_len, PAD, np.int32)
    kept = [self.index.get(t, UNK) for t in tokens[:self.max_len]]
    ids[:len(kept)] = kept
    return ids


def build_vocab(sentences: Sequence[Sequence[str]], lowercase: bool, max_len: int = -1) -> Vocab:
  """The vocabulary of tokenised training sentences; `max_len` <= 0: the longest of them."""
  counts = collections.Counter(t for s in sentences for t in s)
  words = sorted(counts, key=lambda w: (-counts[w], w))
  longest = max((len(s) for s in sentences), default=1)
  return Vocab((PAD_WORD, UNK_WORD, *words), max_len if max_len > 0 else max(longest, 1), lowercase)


def save_vocab(vocab: Vocab, workdir) -> None:
  """Writes workdir/vocab.json (replaced whole; the workdir may be a bucket URL)."""
  workdir_lib.write_json(workdir_lib.path(workdir) / workdir_lib.VOCAB,
                         {"words": list(vocab.words), "max_len": vocab.max_len, "lowercase": vocab.lowercase})


def load_vocab(workdir) -> Optional[Vocab]:
  """The vocabulary saved in `workdir`, or None if there is none."""
  d = workdir_lib.read_json(workdir_lib.path(workdir) / workdir_lib.VOCAB)
  return None if d is None else Vocab(tuple(d["words"]), int(d["max_len"]), bool(d["lowercase"]))


# --- line files -------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LineDataset:
  num_classes: int
  files: Dict[str, str]         # 'all' (cross-validation), or 'train' and 'test', with or without 'dev'
  lowercase: bool = True


LINE_DATASETS: Dict[str, LineDataset] = {
    "mr": LineDataset(2, {"all": "rt-polarity.all"}),
    "subj": LineDataset(2, {"all": "subj.all"}),
    "cr": LineDataset(2, {"all": "custrev.all"}),
    "mpqa": LineDataset(2, {"all": "mpqa.all"}),
    "trec": LineDataset(6, {"train": "TREC.train.all", "test": "TREC.test.all"}, lowercase=False),
    "sst2": LineDataset(2, {s: f"stsa.binary.{s}" for s in ("train", "dev", "test")}),
    "sst1": LineDataset(5, {s: f"stsa.fine.{s}" for s in ("train", "dev", "test")}),
}
SPLITS = ("train", "dev", "test")


def read_lines(path: str, num_classes: int) -> Tuple[List[str], np.ndarray]:
  """(sentences, labels) of a `label sentence` file; a bad line raises ValueError naming the file and line.
  `tokenize` later drops non-ASCII characters, so the encoding matters only for ASCII (UTF-8 or Latin-1)."""
  sentences, labels = [], []
  with open(path, "rb") as f:
    for n, raw in enumerate(f, 1):
      where = f"{path}, line {n}"
      # MR is Latin-1, SST UTF-8: clean_str turns every non-ASCII character into a space, so undecodable bytes
      # can be replaced without changing a token.
      line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
      if not line.strip():
        raise BadFileError(f"{where}: empty line; every line is '<label> <sentence>'")
      label, _, sentence = line.strip().partition(" ")
      if not re.fullmatch(r"[0-9]+", label):
        raise BadFileError(f"{where}: label {label!r} is not a non-negative integer")
      if int(label) >= num_classes:
        raise BadFileError(f"{where}: label {int(label)} is outside [0, {num_classes})")
      sentences.append(sentence)
      labels.append(int(label))
  return sentences, np.asarray(labels, np.int32)


def cv_folds(n: int, num_folds: int, seed: int) -> List[np.ndarray]:
  """The sorted indices of each of `num_folds` folds of n examples (see the module docstring)."""
  perm = np.random.default_rng(seed).permutation(n)
  return [np.sort(perm[k::num_folds]) for k in range(num_folds)]


def split_dev(indices: np.ndarray, fraction: float, seed) -> Tuple[np.ndarray, np.ndarray]:
  """(train, dev): `fraction` of `indices`, drawn with default_rng(seed), is dev."""
  perm = np.random.default_rng(seed).permutation(indices)
  n_dev = int(round(fraction * len(indices)))
  return np.sort(perm[n_dev:]), np.sort(perm[:n_dev])


def line_split(d, name: str, split: str) -> Tuple[List[str], np.ndarray]:
  """The raw sentences and labels of `split` of line data set `name` (e.g. 'mr') in config.dataset `d`."""
  spec = LINE_DATASETS[name]
  if split not in SPLITS:
    raise ConfigError(f"split {split!r} of data set {FAMILY}/{name} is invalid: one of {SPLITS}")
  if not d.data_dir:
    raise ConfigError(f"config.dataset.data_dir is not set: the folder with {sorted(spec.files.values())}")
  path = lambda key: os.path.join(os.path.expanduser(d.data_dir), spec.files[key])
  missing = [path(key) for key in spec.files if not os.path.exists(path(key))]
  if missing:
    raise not_prepared(f"{FAMILY}/{name}", [f"config.dataset.data_dir={d.data_dir!r}: {m} does not exist"
                                            for m in missing],
                       [f"put {sorted(spec.files.values())} ('label sentence' lines, docs/guide/text_cnn.md) in a "
                        f"directory and set config.dataset.data_dir to it"])
  seed, fraction = int(d.split_seed), float(d.dev_fraction)
  if not 0 <= fraction < 1:
    raise ConfigError(f"config.dataset.dev_fraction={fraction} is invalid: in [0, 1)")
  if split in spec.files and (split != "train" or "dev" in spec.files):
    return read_lines(path(split), spec.num_classes)
  if "all" in spec.files:
    num_folds, fold = int(d.num_folds), int(d.fold)
    if num_folds < 2:
      raise ConfigError(f"config.dataset.num_folds={num_folds} is invalid: >= 2")
    if not 0 <= fold < num_folds:
      raise ConfigError(f"config.dataset.fold={fold} is invalid: in 0..{num_folds - 1} (num_folds={num_folds})")
    sentences, labels = read_lines(path("all"), spec.num_classes)
    folds = cv_folds(len(labels), num_folds, seed)
    if split == "test":
      idx = folds[fold]
    else:
      rest = np.sort(np.concatenate([f for k, f in enumerate(folds) if k != fold]))
      idx = split_dev(rest, fraction, (seed, fold))[split == "dev"]
  else:  # a train file and a test file: dev is part of the train file
    sentences, labels = read_lines(path("train"), spec.num_classes)
    idx = split_dev(np.arange(len(labels)), fraction, (seed, 0))[split == "dev"]
  return [sentences[i] for i in idx], labels[idx]


# --- TFDS -------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TfdsText:
  num_classes: int
  text: str                  # feature names
  label: str
  module: str                # importing it registers the builder (TFDS imports text builders lazily)
  splits: Tuple[str, ...]
  lowercase: bool = True


TFDS_TEXT: Dict[str, TfdsText] = {
    "glue/sst2": TfdsText(2, "sentence", "label", "tensorflow_datasets.text.glue", ("train", "validation", "test")),
    "trec": TfdsText(6, "text", "label-coarse", "tensorflow_datasets.datasets.trec.trec_dataset_builder",
                     ("train", "test"), lowercase=False),
}


def tfds_split(d, name: str, split: str) -> Tuple[List[str], np.ndarray]:
  """Sentences and labels of a prepared TFDS text data set (`split` in TFDS syntax, e.g. 'train[:90%]')."""
  import importlib

  import tensorflow_datasets as tfds

  spec = TFDS_TEXT[name]
  importlib.import_module(spec.module)
  data_dir = os.path.expanduser(d.data_dir) if d.data_dir else default_data_dir()
  builder = tfds.builder(name, data_dir=data_dir)
  if not builder.is_prepared():
    raise not_prepared(name, [f"TFDS-prepared files in {data_dir} (no dataset_info.json in {builder.data_dir})"],
                       [f"tfds build {name} --file_format=array_record --data_dir={data_dir}"])
  source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  sentences, labels = [], []
  for i in range(len(source)):
    r = source[i]
    text = r[spec.text]
    sentences.append(text.decode("utf-8") if isinstance(text, bytes) else str(text))
    label = int(r[spec.label])
    if not 0 <= label < spec.num_classes:
      raise BadFileError(f"example {i} of data set {name!r} split {split!r}: label {label} is outside "
                         f"[0, {spec.num_classes}) (GLUE's test labels are hidden: evaluate on 'validation')")
    labels.append(label)
  return sentences, np.asarray(labels, np.int32)


# --- sources ----------------------------------------------------------------------------------------------------
class TextSource:
  """Random-access records {'tokens': int32 (max_len,), 'label': int}, encoded once with `vocab`."""

  def __init__(self, tokens: np.ndarray, labels: np.ndarray):
    self.tokens, self.labels = tokens, labels

  def __len__(self):
    return len(self.labels)

  def __getitem__(self, i):
    return {"tokens": self.tokens[i], "label": np.int32(self.labels[i])}

  def __repr__(self):
    return f"TextSource(n={len(self)}, max_len={self.tokens.shape[1]})"


def _spec(name: str):
  """(num_classes, lowercase, splits) of text data set `name` (a registered one)."""
  if name.startswith(FAMILY + "/"):
    spec = LINE_DATASETS[name[len(FAMILY) + 1:]]
    return spec.num_classes, spec.lowercase, SPLITS
  spec = TFDS_TEXT[name]
  return spec.num_classes, spec.lowercase, spec.splits


def _split(d, name: str, split: str) -> Tuple[List[str], np.ndarray]:
  """(sentences, labels) of `split` of text data set `name`."""
  if name.startswith(FAMILY + "/"):
    return line_split(d, name[len(FAMILY) + 1:], split)
  return tfds_split(d, name, split)


def vocab_of(d, name: str) -> Vocab:
  """The vocabulary of `name`'s training split (`dataset.train_split`), its maximum length capped by
  `dataset.max_len` when that is > 0."""
  sentences, _ = _split(d, name, d.train_split)
  lowercase = _spec(name)[1]
  return build_vocab([tokenize(s, lowercase) for s in sentences], lowercase, int(d.max_len))


def text_info(d, name: str, vocab: Optional[Vocab] = None) -> DatasetInfo:
  """The DatasetInfo of text data set `name` encoded with `vocab`, by default its training split's (read)."""
  vocab = vocab or vocab_of(d, name)
  num_classes, _, splits = _spec(name)
  options = {"vocab_size": len(vocab)}
  if d.vectors:
    options["embedding_init"] = pretrained_init(d.vectors, vocab)
  return DatasetInfo(name, num_classes, image_shape=(), mean=(), std=(), splits=splits,
                     input_shape=(vocab.max_len,), input_dtype="int32", model_options=options)


def text_source(d, split: str, name: str, vocab: Optional[Vocab] = None):
  """(TextSource, DatasetInfo) of `split`; `vocab` (e.g. restored from the workdir) or the training split's."""
  vocab = vocab or vocab_of(d, name)
  sentences, labels = _split(d, name, split)
  tokens = [tokenize(s, _spec(name)[1]) for s in sentences]
  truncated = sum(len(t) > vocab.max_len for t in tokens)
  empty = sum(not t for t in tokens)
  if truncated or empty:
    log.info("data set %s split %s: %d of %d sentences truncated to %d tokens, %d without words (all padding)",
             name, split, truncated, len(tokens), vocab.max_len, empty)
  ids = np.stack([vocab.encode(t) for t in tokens]) if tokens else np.zeros((0, vocab.max_len), np.int32)
  return TextSource(ids, labels), text_info(d, name, vocab)


# --- word vectors -----------------------------------------------------------------------------------------------
def read_glove(path: str, words=None) -> Tuple[Dict[str, np.ndarray], int]:
  """(vectors, dimension) of a GloVe text file (`word v1 ... vD` a line), vectors only for `words` if given."""
  out, dim = {}, None
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      parts = line.rstrip("\n").split(" ")
      if dim is None:
        dim = len(parts) - 1
      if len(parts) - 1 != dim:
        raise BadFileError(f"{path}, line {n}: {len(parts) - 1} values, the first line has {dim}")
      if words is None or parts[0] in words:
        out[parts[0]] = np.asarray(parts[1:], np.float32)
  return out, dim or 0


def read_word2vec_binary(path: str, words=None) -> Tuple[Dict[str, np.ndarray], int]:
  """(vectors, dimension) of a word2vec binary file: a `count dim` header line, then per word its bytes, a space and dim
  little-endian float32 (optionally followed by a newline)."""
  out = {}
  with open(path, "rb") as f:
    count, dim = (int(v) for v in f.readline().split())
    for k in range(count):
      chars = bytearray()
      while (c := f.read(1)) != b" ":
        if not c:
          raise BadFileError(f"{path}: ends inside word {k + 1} of {count}")
        if c != b"\n":
          chars += c
      vec = np.frombuffer(f.read(4 * dim), "<f4")
      if len(vec) != dim:
        raise BadFileError(f"{path}: ends inside the vector of word {bytes(chars)!r}")
      word = chars.decode("utf-8", errors="replace")
      if words is None or word in words:
        out[word] = vec.astype(np.float32)
  return out, dim


def read_vectors(path: str, words=None) -> Tuple[Dict[str, np.ndarray], int]:
  """GloVe text or word2vec binary, told apart by the extension (.bin is word2vec binary)."""
  return read_word2vec_binary(path, words) if path.endswith(".bin") else read_glove(path, words)


@functools.lru_cache(maxsize=4)
def _pretrained(path: str, vocab: Vocab) -> Tuple[np.ndarray, np.ndarray]:
  words = vocab.words[2:]
  found, dim = read_vectors(os.path.expanduser(path), {*words, *(w.lower() for w in words)})
  matrix = np.zeros((len(vocab), dim), np.float32)
  has = np.zeros(len(vocab), bool)
  for i, w in enumerate(words, 2):
    v = found.get(w, found.get(w.lower()))   # a cased vocabulary (TREC) with lower-case vectors (GloVe)
    if v is not None:
      matrix[i], has[i] = v, True
  log.info("%s: vectors for %d of %d words; the others drawn from U[-0.25, 0.25]", path, has.sum(), len(vocab) - 2)
  return matrix, has


def pretrained_init(path: str, vocab: Vocab):
  """An embedding initializer: the vectors of `path` for the words that have one (the word itself, else its
  lower-case form), U[-0.25, 0.25] from the init key for the others (Kim 2014, Sec. 3.2), row PAD zero. Shape
  (len(vocab), model.embed_dim)."""
  import jax
  import jax.numpy as jnp

  def init(key, shape, dtype=jnp.float32):
    matrix, has = _pretrained(path, vocab)
    if matrix.shape[1] != shape[1] or matrix.shape[0] != shape[0]:
      raise ConfigError(f"word vectors {path} have dimension {matrix.shape[1]} for a vocabulary of {len(vocab)}; "
                        f"the model wants {shape} (config.model.embed_dim={shape[1]})")
    rand = jax.random.uniform(key, shape, jnp.float32, -0.25, 0.25)
    out = jnp.where(jnp.asarray(has)[:, None], jnp.asarray(matrix), rand)
    return out.at[PAD].set(0.0).astype(dtype)

  return init


# --- the text data sets in the registry -------------------------------------------------------------------------
for _name in [f"{FAMILY}/{n}" for n in LINE_DATASETS] + list(TFDS_TEXT):
  registry.register(_name, text_source, text_info, kind="text")
