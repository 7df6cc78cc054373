"""Kim (2014)'s CNN for sentence classification (cnnjax/models/kim_cnn.py) on the sentence benchmarks.

  python -m experiments.main --config configs/kim_cnn.py:trec --workdir runs/kim-trec --config.dataset.data_dir=DIR
  python -m experiments.sweep --config configs/kim_cnn.py:table2_rand --workdir runs/kim_rand \
      --config.dataset.data_dir=DIR

Measured (test top-1 at the best dev accuracy; docs/text_cnn.md): CNN-rand MR 76.1 (10-fold mean, 10 epochs per
fold), TREC 90.8, SST-2 79.0 (sentences only); `:table2_vectors` with 50-d GloVe, non-static: TREC 91.2,
SST-2 79.8.

Presets, one per data set of Kim's Table 1: `:mr` (default), `:subj`, `:cr`, `:mpqa` (10-fold cross-validation:
choose the fold with --config.dataset.fold=k), `:trec`, `:sst2`, `:sst1` (given test splits). The line files
are read from --config.dataset.data_dir (cnnjax/data/text.py); `--config.dataset.name=glue/sst2` (with
`--config.dataset.eval_split=validation`) or `trec` read prepared TFDS copies instead.

Paper recipe (Sec. 3.1): windows 3, 4, 5 with 100 maps each, ReLU, dropout 0.5, l2 max-norm s = 3 on the
output layer's weight columns, mini-batches of 50, Adadelta (rho 0.95, eps 1e-6), 25 epochs, the paper's early
stopping as model selection on a dev split (`model_selection`; 10% of the training data where there is none).
Variants: --config.model.variant=rand (default) | static | non-static | multichannel, the last three with
--config.dataset.vectors=<GloVe .txt or word2vec .bin> (the paper: 300-d word2vec trained on Google News;
--config.model.embed_dim must match the file).
Table 2, CNN-rand: MR 76.1, SST-1 45.0, SST-2 82.7, Subj 89.6, TREC 91.2, CR 79.8, MPQA 83.4.
"""

from cnnjax.errors import ConfigError
from configs import default

PRESETS = {
    "mr": "sentences/mr", "subj": "sentences/subj", "cr": "sentences/cr", "mpqa": "sentences/mpqa",
    "trec": "sentences/trec", "sst2": "sentences/sst2", "sst1": "sentences/sst1",
}


def get_config(preset: str = "mr"):
  if preset in SWEEPS:
    return SWEEPS[preset]()
  if preset not in PRESETS:
    raise ConfigError(f"unknown preset {preset!r} for configs/kim_cnn.py; known: {[*PRESETS, *SWEEPS]}")
  c = default.get_config()
  c.model.name = "kim_cnn"
  c.model.variant = "rand"
  c.model.embed_dim = 300
  c.model.windows = (3, 4, 5)
  c.model.features = 100
  c.model.dropout_rate = 0.5
  c.dataset.name = PRESETS[preset]
  c.dataset.train_split = "train"
  c.dataset.eval_split = "test"
  # dataset.num_folds, fold, split_seed, dev_fraction, max_len, vectors: the base config's text fields.
  c.model_selection.split = "dev"    # model selection on dev (Kim's early stopping), evaluated every epoch
  c.batch_size = 50
  c.eval_batch_size = 100
  c.num_epochs = 25
  c.optimizer = "adadelta"
  c.learning_rate = 1.0
  c.lr_schedule = "constant"
  c.adadelta_rho = 0.95
  c.adadelta_eps = 1e-6
  c.weight_decay = 0.0
  c.max_norm = 3.0
  c.max_norm_pattern = "output/kernel"
  c.log_every_steps = 50
  return c


def _table2_rand():
  """Kim's Table 2, CNN-rand: TREC and SST-2 (given test splits, 25 epochs), then MR's ten folds. MR runs 10
  epochs per fold (the paper: 25) so that ten folds fit this machine's CPU (docs/text_cnn.md)."""
  c = get_config("mr")
  fields = ("dataset.name", "dataset.fold", "num_epochs")
  c.sweep = ((fields, (("sentences/trec", 0, 25), ("sentences/sst2", 0, 25),
                       *(("sentences/mr", k, 10) for k in range(10)))),)
  return c


def _table2_vectors():
  """Kim's Table 2, the pretrained-vector variants, with --config.dataset.vectors=<50-d GloVe text file>."""
  c = get_config("mr")
  c.model.embed_dim = 50
  c.sweep = (("model.variant", ("static", "non-static", "multichannel")),
             (("dataset.name", "dataset.fold", "num_epochs"),
              (("sentences/trec", 0, 25), ("sentences/sst2", 0, 25), ("sentences/mr", 0, 10))))
  return c


SWEEPS = {"table2_rand": _table2_rand, "table2_vectors": _table2_vectors}
