"""Building an experiment from its config: the one place where a config (and, for a trained run, its workdir)
becomes data info, model, input shape, optimizer, shardings, the train state's constructor and the jitted steps.

Training (`train.loop.setup`), evaluation-only runs (`--mode=eval`), the analyses (viz, fewshot), the summary and
the benchmarks all build here, so a model is built the same way wherever it is used:

  exp = build.experiment(config, info, steps_per_epoch, total_steps)
  state = exp.init(config.seed)             # or exp.restore(manager, step)
  train_step, eval_step = exp.train_step(), exp.eval_step()
  model, variables, config, info = build.load_workdir(workdir)   # a trained run, for looking inside
"""
import dataclasses
import functools
from typing import Any, Callable, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections

from cnnjax import checkpoint, data, defaults, models, parallel
from cnnjax import config as config_lib
from cnnjax import workdir as workdir_lib
from cnnjax.data import text
from cnnjax.errors import ConfigError
from cnnjax.train import optim, state as state_lib, steps, transfer


def vocab(config, workdir=None) -> Optional[text.Vocab]:
  """A text run's vocabulary: the one saved in `workdir` (what the run was trained with), else (a new run, or one
  whose previous attempt `--restart` moved aside) built from the config's training split. None for image data."""
  if not data.is_text(config.dataset.name):
    return None
  saved = None if workdir is None else text.load_vocab(workdir)
  return saved or text.vocab_of(config.dataset, config.dataset.name)


def data_info(config, workdir=None) -> data.DatasetInfo:
  """The DatasetInfo training uses: the data set's (a text one's with `vocab(config, workdir)`), normalised as the
  pretrained init's weights expect where config.init asks for that."""
  info = data.get_info(config.dataset, vocab=vocab(config, workdir))
  return transfer.pretrained_preprocessing(config, info)[0]


def model(config, info: data.DatasetInfo):
  """The model of `config` for data `info` (its classes, and a text data set's vocabulary size and length)."""
  return models.create(config.model.name, num_classes=info.num_classes, **info.model_options,
                       **config_lib.model_options(config))


def input_shape(config, info: data.DatasetInfo) -> Tuple[int, ...]:
  """One example's shape: the data's own for text, else image_size x image_size x the data's channels."""
  return tuple(info.input_shape or (config.dataset.image_size, config.dataset.image_size, info.image_shape[-1]))


def trace(model, input_shape, info, batch: int = 1):
  """The model's variables as shapes (no compute), on a batch of `batch` inputs of `input_shape`."""
  return models.init_variables(model, input_shape, dtype=info.input_dtype, abstract=True, batch=batch)


def network_grad(model, input_shape, info, batch: int):
  """(make_fn, args) for the autotuner's whole-network check (layers.autotune.check_network): make_fn() compiles,
  under whatever 'auto' resolves to at that moment, the gradient w.r.t. all variables of the sum of the model's
  outputs in training mode on `batch` inputs; args are He-scaled random weights (no init to run) and inputs."""
  import numpy as np
  rng = np.random.default_rng(0)

  def leaf(path, s):
    if len(s.shape) >= 2:   # kernels and embeddings: fan-in scaled, so activations keep their size
      return jnp.asarray(rng.normal(size=s.shape) * np.sqrt(2 / np.prod(s.shape[:-1])), s.dtype)
    one = str(path[-1]).strip("[]'\"") in ("scale", "var")
    return jnp.full(s.shape, 1.0 if one else 0.0, s.dtype)
  variables = jax.tree_util.tree_map_with_path(leaf, trace(model, input_shape, info))
  shape = (batch, *input_shape)
  x = (jnp.zeros(shape, info.input_dtype) if jnp.issubdtype(info.input_dtype, jnp.integer)
       else jnp.asarray(rng.normal(size=shape), info.input_dtype))
  args = (variables, x, jax.random.PRNGKey(0))

  def make_fn():
    def loss(variables, x, key):   # a new function each time, so no trace is reused across plans
      out, _ = model.apply(variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": key})
      return sum(jnp.sum(o.astype(jnp.float32)) for o in jax.tree.leaves(out))
    return jax.jit(jax.grad(loss)).lower(*args).compile()
  return make_fn, args


def check_model_input(model, input_shape, config, info) -> None:
  """Traces the model (no compute) so that a bad model option or a too-small image fails before compiling,
  each with its own message: only a model that builds at a large input and not at this one is 'too small'."""
  try:
    trace(model, input_shape, info)
    return
  except Exception as small:  # pylint: disable=broad-except
    first_line = str(small).splitlines()[0][:300] if str(small) else type(small).__name__
    error = small
  try:
    if info.input_shape is not None:  # text: the input's size is the data's, not an option
      raise error
    models.init_variables(model, (512, 512, input_shape[-1]), abstract=True)
  except Exception:  # pylint: disable=broad-except
    raise ConfigError(f"config.model ({config.model.name!r}) cannot be built: {first_line}") from error
  raise ConfigError(f"config.dataset.image_size={config.dataset.image_size} is too small for model "
                    f"{config.model.name!r} (input {input_shape}; it builds at 512x512): {first_line}. "
                    f"Use a larger image size.") from None


def steps_options(config) -> dict:
  """The train step's options from the config (steps.make_train_step)."""
  return dict(label_smoothing=config.label_smoothing, aux_loss_weight=config.aux_loss_weight,
              grad_accum_steps=config.grad_accum_steps, frozen=config.frozen, mixup_alpha=config.mixup.alpha,
              cutmix_alpha=config.cutmix.alpha, mix_prob=config.mixup.prob, mix_switch_prob=config.mixup.switch_prob,
              ema_decay=config.ema.decay, ema_start_step=config.ema.start_step)


def _fed(step, prep):
  """`step` with its batch passed through `prep` first (uint8 images normalised on the device), under the step's
  own name, which JAX's compile logs, the compilation cache and the profiler show."""
  @functools.wraps(step)
  def fed(state, batch):
    return step(state, prep(batch))
  return fed


@dataclasses.dataclass(frozen=True)
class Experiment:
  """A config built for data `info` on the current devices (see the module docstring)."""
  config: Any
  info: data.DatasetInfo
  model: Any
  input_shape: Tuple[int, ...]
  tx: Any                    # optax.GradientTransformation
  schedule: Callable[[Any], Any]
  mesh: Any
  state_sharding: Any
  batch_sharding: Any

  def create(self, rng):
    """A fresh train state (with the moving-average slot where config.ema.decay > 0)."""
    return state_lib.create(rng, self.model, self.tx, self.input_shape, self.info.input_dtype,
                            self.config.ema.decay > 0)

  def template(self):
    """The train state's shapes, dtypes and shardings, for restoring into (no compute)."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        jax.eval_shape(self.create, jax.random.PRNGKey(0)), self.state_sharding)

  def init(self, seed: int):
    """The state initialised from `seed`, laid out by `state_sharding`."""
    return jax.jit(self.create, out_shardings=self.state_sharding)(jax.random.PRNGKey(seed))

  def restore(self, manager: checkpoint.Manager, step: Optional[int] = None):
    """(state, step) of the manager's newest restorable checkpoint (or `step`), or (None, None)."""
    return manager.restore(self.template(), step)

  def train_step(self):
    """The jitted train step (its input state donated), uint8 images normalised inside it."""
    fn = steps.make_train_step(self.model, self.tx, self.schedule, **steps_options(self.config))
    return jax.jit(_fed(fn, data.on_device(self.config, self.info)),
                   in_shardings=(self.state_sharding, self.batch_sharding),
                   out_shardings=(self.state_sharding, parallel.replicated(self.mesh)), donate_argnums=0)

  def eval_step(self, ema: bool = False):
    """The jitted eval step, with the raw weights or (`ema`) their moving average."""
    fn = steps.make_eval_step(self.model, ema)
    return jax.jit(_fed(fn, data.on_device(self.config, self.info)),
                   in_shardings=(self.state_sharding, self.batch_sharding),
                   out_shardings=parallel.replicated(self.mesh))


def experiment(config, info: data.DatasetInfo, steps_per_epoch: int = 1, total_steps: int = 1) -> Experiment:
  """`config` built for `info`; the optimizer's schedule spans `total_steps` (for restoring only its state's
  structure matters, so the defaults do)."""
  m, shape = model(config, info), input_shape(config, info)
  check_model_input(m, shape, config, info)
  tx, schedule = optim.build(config, steps_per_epoch, max(total_steps, 1))
  mesh = parallel.mesh()
  create = lambda rng: state_lib.create(rng, m, tx, shape, info.input_dtype, config.ema.decay > 0)
  sharding = parallel.state_shardings(jax.eval_shape(create, jax.random.PRNGKey(0)), mesh,
                                      config.parallel.shard_params, config.parallel.shard_min_size)
  return Experiment(config=config, info=info, model=m, input_shape=shape, tx=tx, schedule=schedule, mesh=mesh,
                    state_sharding=sharding, batch_sharding=parallel.batch_sharded(mesh))


def saved_config(workdir) -> ml_collections.ConfigDict:
  """The config a workdir was trained with (its config.json) over the base config, so that a workdir written
  before a field existed reads that field's default."""
  saved = workdir_lib.read_json(workdir_lib.path(workdir) / workdir_lib.CONFIG)
  if saved is None:
    raise ConfigError(f"{workdir} has no {workdir_lib.CONFIG}: not a training workdir")
  config = defaults.get_config()
  config.update(config_lib.renamed_json(saved))   # a block saved under its old name is read under the new one
  return config


def load_workdir(workdir, step: Optional[int] = None):
  """(model, variables, config, info) of a trained workdir: the model rebuilt from its config.json as training
  built it (a text run's with the vocabulary it was trained with), the variables ('params', and 'batch_stats'
  when present) from its newest (or `step`'s) checkpoint, as numpy arrays."""
  config = saved_config(workdir)
  info = data_info(config, workdir)
  state, _ = checkpoint.load_numpy(workdir, step)
  variables = {"params": state["params"]}
  if state.get("batch_stats"):
    variables["batch_stats"] = state["batch_stats"]
  return model(config, info), variables, config, info
