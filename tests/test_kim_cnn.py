"""Kim (2014)'s sentence CNN against a numpy float64 forward pass, its frozen channels and padding row under
training, its parameter count, Adadelta and the max-norm constraint by hand, and a small end-to-end training."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnnjax import config as config_lib
from cnnjax import data, models
from cnnjax.errors import ConfigError
from cnnjax.train import optim, state as state_lib, steps
from configs import kim_cnn

TINY = dict(vocab_size=11, embed_dim=4, windows=(2, 3), features=3)


def numpy_forward(params, ids, windows, channels=("embedding",)):
  """Kim's network in float64: embeddings (padding row as zero), max(h)-1 zero words each side, for each window
  the sum over channels of sum_{i<h, j<k} E[t+i, j] K[i, j, f] plus the bias, ReLU, max over t, dense."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  pad = max(windows) - 1
  ids = np.pad(ids, ((0, 0), (pad, pad)))
  feats = []
  for h in windows:
    kernel, bias = p[f"conv{h}"]["kernel"], p[f"conv{h}"]["bias"]     # (h, k, features): h words x k dims
    n, length = ids.shape
    out = np.zeros((n, length - h + 1, len(bias)))
    for c in channels:
      emb = p[c][ids] * (ids != 0)[..., None]
      for t in range(length - h + 1):
        out[:, t] += np.einsum("nij,ijf->nf", emb[:, t:t + h], kernel)
    feats.append(np.maximum(out + bias, 0).max(axis=1))
  x = np.concatenate(feats, axis=-1)
  return x @ p["output"]["kernel"] + p["output"]["bias"]


def init(model, ids, seed=0):
  return model.init({"params": jax.random.PRNGKey(seed)}, ids, train=False)["params"]


IDS = np.array([[3, 7, 1, 9, 0, 0, 0], [5, 0, 0, 0, 0, 0, 0], [10, 2, 2, 4, 8, 6, 1]], np.int32)


@pytest.mark.parametrize("impl", ["xla", "direct", "im2col", "fft"])
def test_forward_matches_numpy_float64(impl):
  model = models.create("kim_cnn", num_classes=3, conv_impl=impl, **TINY)
  params = init(model, IDS)
  np.testing.assert_array_equal(params["embedding"][0], 0.0)
  got = model.apply({"params": params}, IDS, train=False)
  np.testing.assert_allclose(got, numpy_forward(params, IDS, TINY["windows"]), rtol=1e-5, atol=1e-5)


def test_winograd_runs_lax_on_the_sentence_windows():
  """winograd computes kernels of 3 (per spatial axis) at stride 1 only: a 3-word window runs winograd, other
  windows fall back to lax with the reason recorded, and the logits are the numpy reference's."""
  from cnnjax import layers
  model = models.create("kim_cnn", num_classes=3, conv_impl="winograd", **TINY)
  with layers.record_conv_impls() as plan:
    params = init(model, IDS)
  assert [r.used for r in plan] == ["winograd" if h == 3 else "xla" for h in TINY["windows"]]
  assert all(bool(r.reason) == (r.used == "xla") for r in plan)
  got = model.apply({"params": params}, IDS, train=False)
  np.testing.assert_allclose(got, numpy_forward(params, IDS, TINY["windows"]), rtol=1e-5, atol=1e-5)


def test_multichannel_is_the_sum_of_both_channels_convolutions():
  vectors = lambda key, shape, dtype=jnp.float32: jax.random.normal(jax.random.PRNGKey(5), shape).at[0].set(0)
  model = models.create("kim_cnn", num_classes=2, variant="multichannel", embedding_init=vectors, **TINY)
  params = init(model, IDS)
  np.testing.assert_array_equal(params["embedding"], params["embedding_static"])   # same vectors at init
  params = {**params, "embedding": params["embedding"] + 0.3}                     # the channels now differ
  params["embedding"] = params["embedding"].at[0].set(0.0)
  got = model.apply({"params": params}, IDS, train=False)
  want = numpy_forward(params, IDS, TINY["windows"], channels=("embedding", "embedding_static"))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  one = numpy_forward(params, IDS, TINY["windows"])
  assert np.abs(want - one).max() > 1e-2   # the static channel matters


def _grads(variant):
  vectors = lambda key, shape, dtype=jnp.float32: jax.random.normal(key, shape).at[0].set(0)
  model = models.create("kim_cnn", num_classes=2, variant=variant, embedding_init=vectors, dropout_rate=0.0,
                        **TINY)
  params = init(model, IDS)
  loss = lambda p: jnp.sum(model.apply({"params": p}, IDS, train=False) * jnp.array([1.0, -2.0]))
  return jax.grad(loss)(params)


def test_frozen_channels_get_zero_gradient():
  g = _grads("static")
  np.testing.assert_array_equal(g["embedding"], 0.0)
  assert np.abs(g["conv2"]["kernel"]).max() > 0
  g = _grads("multichannel")
  np.testing.assert_array_equal(g["embedding_static"], 0.0)
  assert np.abs(g["embedding"][IDS[IDS > 0]]).max() > 0
  g = _grads("non-static")
  assert np.abs(g["embedding"][IDS[IDS > 0]]).max() > 0


def kim_tx(**overrides):
  c = kim_cnn.get_config("mr")
  for k, v in overrides.items():
    c[k] = v
  return optim.build(c, steps_per_epoch=10, total_steps=100)


@pytest.mark.parametrize("variant", ["rand", "multichannel"])   # multichannel's static channel is 'static'

@pytest.mark.slow
def test_padding_row_and_frozen_channel_stay_exact_under_training(variant):
  vectors = lambda key, shape, dtype=jnp.float32: jax.random.normal(key, shape).at[0].set(0)
  model = models.create("kim_cnn", num_classes=2, variant=variant,
                        embedding_init=None if variant == "rand" else vectors, **TINY)
  tx, schedule = kim_tx()
  state = state_lib.create(jax.random.PRNGKey(0), model, tx, (7,), "int32")
  before = state.params
  step = jax.jit(steps.make_train_step(model, tx, schedule))
  for k in range(4):
    batch = {"tokens": jnp.asarray(np.roll(IDS, k, axis=1)), "label": jnp.array([0, 1, 1])}
    state, metrics = step(state, batch)
  emb = np.asarray(state.params["embedding"])
  np.testing.assert_array_equal(emb[0], 0.0)
  assert np.abs(emb[IDS[IDS > 0]] - np.asarray(before["embedding"])[IDS[IDS > 0]]).max() > 0
  if variant == "multichannel":
    np.testing.assert_array_equal(state.params["embedding_static"], before["embedding_static"])
  assert np.abs(state.params["conv3"]["kernel"] - before["conv3"]["kernel"]).max() > 0


def test_parameter_count_of_the_papers_mr_network():
  # |V| = 18,765 (Kim 2014, Table 1, MR) + the padding row, k = 300, windows 3, 4, 5 x 100 maps, 2 classes.
  embedding = (18765 + 1) * 300
  convs = sum(h * 300 * 100 + 100 for h in (3, 4, 5))
  want = embedding + convs + 300 * 2 + 2
  assert want == 5_990_702
  for variant, extra in [("rand", 0), ("multichannel", embedding)]:
    c = kim_cnn.get_config("mr")
    c.model.variant = variant
    opts = config_lib.model_options(c, dtype=False)
    if variant != "rand":
      opts["embedding_init"] = jax.nn.initializers.zeros
    model = models.create("kim_cnn", num_classes=2, vocab_size=18766, **opts)
    shapes = jax.eval_shape(lambda: init(model, jnp.zeros((1, 56), jnp.int32)))
    assert sum(x.size for x in jax.tree.leaves(shapes)) == want + extra


def test_bad_options_are_config_errors():
  with pytest.raises(ConfigError, match="config.model.variant='dynamic' is invalid"):
    init(models.create("kim_cnn", num_classes=2, variant="dynamic", **TINY), IDS)
  with pytest.raises(ConfigError, match="variant='static' needs pretrained word vectors: set config.dataset.vectors"):
    init(models.create("kim_cnn", num_classes=2, variant="static", **TINY), IDS)


@pytest.mark.parametrize("opts, message", [
    ({"vocab_size": 1}, r"vocab_size=1 is invalid: the data set's vocabulary size \(>= 2\)"),
    ({"windows": ()}, r"config.model.windows=\(\) is invalid: positive window sizes"),
    ({"windows": (3, 0)}, r"config.model.windows=\(3, 0\) is invalid: positive window sizes"),
])
def test_vocabulary_and_window_errors_name_the_field(opts, message):
  with pytest.raises(ConfigError, match=message):
    init(models.create("kim_cnn", num_classes=2, **{**TINY, **opts}), IDS)


def test_ids_outside_the_vocabulary_are_read_as_unk():
  """An id >= vocab_size or < 0 gives the logits of <unk> (id 1) in its place, not those of the last row (what
  an unchecked jnp.take under jit gives) nor an error."""
  model = models.create("kim_cnn", num_classes=2, **TINY)
  params = init(model, IDS)
  vocab = params["embedding"].shape[0]
  logits = lambda ids: np.asarray(model.apply({"params": params}, np.asarray(ids, np.int32), train=False))
  outside = IDS.copy()
  outside[0, 1], outside[2, 0] = vocab + 5, -3
  as_unk = IDS.copy()
  as_unk[0, 1], as_unk[2, 0] = 1, 1
  as_last = IDS.copy()
  as_last[0, 1], as_last[2, 0] = vocab - 1, vocab - 1
  np.testing.assert_array_equal(logits(outside), logits(as_unk))
  assert np.abs(logits(outside) - logits(as_last)).max() > 1e-4


def test_max_norm_against_numpy():
  rng = np.random.default_rng(0)
  params = {"output": {"kernel": rng.normal(size=(5, 3)).astype(np.float32), "bias": np.ones(3, np.float32)},
            "conv3": {"kernel": rng.normal(size=(3, 4, 1, 2)).astype(np.float32)}}
  updates = jax.tree.map(lambda p: np.float32(0.7) * p + 0.1, params)
  new = (params["output"]["kernel"] + updates["output"]["kernel"]).astype(np.float64)
  norms = np.sqrt((new ** 2).sum(axis=0))
  assert (norms > 3).any() and (norms <= 3).any()       # both cases occur
  want = np.where(norms > 3, new * 3 / norms, new)
  tx = optim.max_norm(3.0, "output/kernel")
  got, _ = tx.update(updates, tx.init(params), params)
  np.testing.assert_allclose(params["output"]["kernel"] + got["output"]["kernel"], want, rtol=1e-6)
  np.testing.assert_array_equal(got["output"]["bias"], updates["output"]["bias"])     # not matched
  np.testing.assert_array_equal(got["conv3"]["kernel"], updates["conv3"]["kernel"])
  with pytest.raises(ConfigError, match="config.max_norm_pattern='Dense_0/kernel' matches no parameter"):
    optim.max_norm(3.0, "Dense_0/kernel").update(updates, optax.EmptyState(), params)


def test_adadelta_with_max_norm_two_steps_by_hand():
  rho, eps = 0.95, 1e-6
  w = np.array([[2.0, 0.1], [2.5, -0.2]])          # column 0 has norm 3.2 > 3 after any small step
  params = {"output": {"kernel": jnp.asarray(w, jnp.float32)}}
  grads = [np.array([[0.5, -1.0], [2.0, 0.25]]), np.array([[-0.1, 0.3], [0.2, 0.05]])]
  tx, _ = kim_tx()
  opt = tx.init(params)
  eg, ex, p = np.zeros_like(w), np.zeros_like(w), w.copy()
  for g in grads:
    eg = rho * eg + (1 - rho) * g ** 2
    d = np.sqrt(ex + eps) / np.sqrt(eg + eps) * g
    ex = rho * ex + (1 - rho) * d ** 2
    p = p - 1.0 * d
    n = np.sqrt((p ** 2).sum(axis=0))
    p = np.where(n > 3, p * 3 / n, p)
    upd, opt = tx.update({"output": {"kernel": jnp.asarray(g, jnp.float32)}}, opt, params)
    params = optax.apply_updates(params, upd)
    np.testing.assert_allclose(params["output"]["kernel"], p, rtol=1e-5)
  np.testing.assert_allclose(np.sqrt((p ** 2).sum(axis=0))[0], 3.0, rtol=1e-12)


def _toy_sst(tmp_path, **fields):
  """Sentences whose class is told by one word among shared filler words (test sentences are new combinations
  of the words), as SST-2's line files in tmp_path; a small kim_cnn config for them."""
  from tests.helpers import tiny_config
  rng = np.random.default_rng(0)
  filler = ["the", "a", "film", "was", "quite", "and", "plot", "it"]
  cue = {0: ["dull", "boring"], 1: ["great", "superb"]}

  def lines(n):
    out = []
    for i in range(n):
      label = i % 2
      words = list(rng.choice(filler, rng.integers(2, 7))) + [rng.choice(cue[label])]
      rng.shuffle(words)
      out.append(f"{label} " + " ".join(words))
    return out

  for split, n in [("train", 200), ("dev", 20), ("test", 40)]:
    (tmp_path / f"stsa.binary.{split}").write_text("\n".join(lines(n)) + "\n")
  c = kim_cnn.get_config("sst2")
  c.dataset.data_dir = str(tmp_path)
  c.model.embed_dim, c.model.features = 16, 8
  c.batch_size, c.progress_bar = 20, False
  c.compilation_cache_dir = tiny_config().compilation_cache_dir
  for k, v in fields.items():
    c[k] = v
  return c


@pytest.mark.slow
def test_end_to_end_tiny_separable_text(tmp_path):
  """Through the training loop: every held-out test sentence of a separable toy task is right."""
  from cnnjax.train import loop
  c = _toy_sst(tmp_path, num_train_steps=300, eval_every_steps=300, checkpoint_every_steps=300,
               log_every_steps=20)
  last = loop.run(c, str(tmp_path / "w"))
  assert last["eval"]["count"] == 40 and last["eval"]["top1"] == 1.0


@pytest.mark.slow
def test_text_run_resumes_exactly_with_its_saved_vocabulary(tmp_path):
  """A stopped text run resumes bit for bit; it keeps the vocabulary saved in its workdir (vocab.json) even
  after the training file gained new words (recomputing it would change the embedding's size)."""
  from cnnjax import checkpoint
  from cnnjax.train import loop
  from tests.helpers import assert_resume_is_exact
  c = _toy_sst(tmp_path, num_train_steps=8, checkpoint_every_steps=4, eval_every_steps=8, log_every_steps=4)
  a = assert_resume_is_exact(c, tmp_path, stop_after=4)
  with open(tmp_path / "stsa.binary.train", "a") as f:
    f.write("1 brand new words appear\n")
  c.num_train_steps = 10
  loop.run(c, str(tmp_path / "resumed"))  # restores step 8: the embedding kept its size
  b, step = checkpoint.load_numpy(str(tmp_path / "resumed"))
  assert step == 10 and jax.tree.map(np.shape, b["params"]) == jax.tree.map(np.shape, a["params"])


def test_restarted_text_run_builds_its_vocabulary_from_its_own_data(tmp_path):
  """--restart on other data: the new vocabulary is the new training file's words (counted here by hand: by
  falling count, ties alphabetical, after <pad> and <unk>); the old vocab.json is kept under previous/0/."""
  import collections
  import json
  from cnnjax.train import loop
  old_dir, new_dir = tmp_path / "old", tmp_path / "new"
  old_dir.mkdir()
  new_dir.mkdir()
  c = _toy_sst(old_dir, num_train_steps=2, checkpoint_every_steps=2, eval_every_steps=2, log_every_steps=2)
  loop.run(c, str(tmp_path / "w"))
  old_vocab = json.loads((tmp_path / "w" / "vocab.json").read_text())
  lines = [f"{i % 2} {'zebra ' * (i % 3)}{['yak', 'gnu'][i % 2]} okapi" for i in range(40)]
  for split in ("train", "dev", "test"):
    (new_dir / f"stsa.binary.{split}").write_text("\n".join(lines) + "\n")
  c.dataset.data_dir = str(new_dir)
  loop.run(c, str(tmp_path / "w"), restart=True)
  counts = collections.Counter(w for line in lines for w in line.split()[1:])
  want = ["<pad>", "<unk>", *sorted(counts, key=lambda w: (-counts[w], w))]
  assert json.loads((tmp_path / "w" / "vocab.json").read_text())["words"] == want
  assert json.loads((tmp_path / "w" / "previous" / "0" / "vocab.json").read_text()) == old_vocab
  assert old_vocab["words"] != want


def test_a_text_workdir_is_rebuilt_with_the_vocabulary_it_was_trained_with(tmp_path):
  """build.load_workdir on a finished text run whose data files changed since: the model has one embedding row
  per word of the run's vocab.json (not of today's files), and its logits on the test split, tokenised with that
  vocabulary, give the test top-1 the run reported."""
  import json
  from cnnjax import build
  from cnnjax.data import text
  from cnnjax.train import loop
  data_dir = tmp_path / "data"
  data_dir.mkdir()
  c = _toy_sst(data_dir, num_train_steps=4, checkpoint_every_steps=4, eval_every_steps=4, log_every_steps=4)
  loop.run(c, str(tmp_path / "w"))
  words = json.loads((tmp_path / "w" / "vocab.json").read_text())["words"]
  source, _ = data.eval_source(c.dataset, vocab=text.load_vocab(tmp_path / "w"))
  examples = [source[i] for i in range(len(source))]
  (data_dir / "stsa.binary.train").write_text("".join(f"{i % 2} other words entirely {i}\n" for i in range(60)))
  model, variables, config, info = build.load_workdir(str(tmp_path / "w"))
  embeddings = [x for p, x in jax.tree_util.tree_leaves_with_path(variables["params"]) if x.ndim == 2
                and x.shape[0] == len(words)]
  assert embeddings and info.model_options["vocab_size"] == len(words)
  logits = model.apply(variables, jnp.stack([e["tokens"] for e in examples]), train=False)
  top1 = float(np.mean(np.argmax(logits, -1) == np.array([e["label"] for e in examples])))
  final = json.loads((tmp_path / "w" / "final_metrics.json").read_text())
  assert top1 == pytest.approx(final["eval"]["top1"], abs=1e-6)


@pytest.mark.parametrize("preset", list(kim_cnn.PRESETS))
def test_every_preset_validates_and_builds_on_its_files(tmp_path, preset):
  from cnnjax import config as config_lib
  from cnnjax.data import text
  c = kim_cnn.get_config(preset)
  c.dataset.data_dir = str(tmp_path)
  spec = text.LINE_DATASETS[c.dataset.name.split("/")[1]]
  for f in spec.files.values():
    (tmp_path / f).write_text("".join(f"{i % spec.num_classes} words number {i} here\n" for i in range(30)))
  config_lib.validate(c)
  info = data.get_info(c.dataset)
  model = models.create("kim_cnn", num_classes=info.num_classes, **config_lib.model_options(c), **info.model_options)
  out = jax.eval_shape(lambda: model.init_with_output(jax.random.PRNGKey(0), jnp.zeros((1, *info.input_shape),
                                                                                         info.input_dtype),
                                                      train=False)[0])
  assert out.shape == (1, spec.num_classes) and info.input_shape == (4,)


@pytest.mark.slow
def test_model_selection_on_dev_reports_the_eval_at_the_best_dev_step(tmp_path):
  """model_selection.split='dev' (the :sst2 preset): dev is evaluated at every eval, and final_metrics.json's
  'selected' holds the eval metrics at the step of the best dev top-1, the later one on ties (Kim's >=)."""
  import json
  from cnnjax.train import loop
  from cnnjax.workdir import read_jsonl
  c = _toy_sst(tmp_path, num_train_steps=30, eval_every_steps=5, checkpoint_every_steps=30, log_every_steps=5,
               learning_rate=0.05)
  assert c.model_selection.split == "dev"
  loop.run(c, str(tmp_path / "w"))
  entries = read_jsonl(str(tmp_path / "w" / "metrics.jsonl"))
  dev = [e for e in entries if e["split"] == "dev"]
  assert [e["step"] for e in dev] == [5, 10, 15, 20, 25, 30] and all(e["count"] == 20 for e in dev)
  top1 = np.array([e["top1"] for e in dev])
  best_step = dev[len(top1) - 1 - int(np.argmax(top1[::-1]))]["step"]  # the last of the maxima
  sel = json.loads((tmp_path / "w" / "final_metrics.json").read_text())["selected"]
  want = next(e for e in entries if e["split"] == "eval" and e["step"] == best_step)
  assert sel["step"] == best_step and sel["eval"]["top1"] == want["top1"] and sel["eval"]["count"] == 40
