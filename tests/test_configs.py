"""Every config file and preset loads, validates and builds its model at its input size."""
import jax
import pytest

from cnnjax import config as config_lib, data, models

CONFIGS = [("configs/resnet.py", p) for p in ("digits", "cifar10", "imagenette", "imagenet_1pct", "synthetic",
                                              "fashion_mnist")] + [
    ("configs/lenet.py", p) for p in ("lenet5", "lenet5_modern", "lenet1", "fashion_mnist", "fashion_mnist_modern")] + [
    ("configs/alexnet.py", "digits"), ("configs/alexnet.py", "imagenet"), ("configs/vgg.py", "digits"),
    ("configs/vgg.py", "imagenet"), ("configs/googlenet.py", "digits"), ("configs/googlenet.py", "torchvision"),
    ("configs/imagenet_subset.py", "1pct"), ("configs/ablation.py", "digits"),
    ("configs/ablation.py", "fashion_mnist_seeds"), ("configs/recipes.py", "fashion_mnist"),
    ("configs/recipes.py", "imagenet_resnet50")]


@pytest.mark.slow
@pytest.mark.parametrize("path, preset", CONFIGS)
def test_config_builds_its_model(path, preset):
  c = config_lib.load_file(f"{path}:{preset}")
  config_lib.validate(c)
  info = data.get_info(c.dataset)
  m = models.create(c.model.name, num_classes=info.num_classes, **config_lib.model_options(c))
  shape = (1, c.dataset.image_size, c.dataset.image_size, info.image_shape[-1])
  out = jax.eval_shape(lambda: m.apply(m.init(jax.random.PRNGKey(0), jax.numpy.zeros(shape), train=False),
                                       jax.numpy.zeros(shape), train=False))
  assert out.shape == (1, info.num_classes)


def test_depth_44_preset_shares_the_full_sweeps_run_directories():
  """configs/ablation.py:fashion_mnist_44 trains into the workdir of :fashion_mnist, so its two runs must carry
  the same directory names (settings) as the full sweep's 44-layer runs, and nothing else."""
  from experiments import sweep
  full = dict(sweep.grid(config_lib.load_file("configs/ablation.py:fashion_mnist").sweep))
  only = dict(sweep.grid(config_lib.load_file("configs/ablation.py:fashion_mnist_44").sweep))
  assert sorted(only) == sorted(n for n, s in full.items() if s["model.name"] == "resnet44")
  assert sorted(s["model.residual"] for s in only.values()) == [False, True]
  assert all(full[n] == s for n, s in only.items())


def test_recipe_sweep_rows_validate_and_the_baseline_is_the_depth_recipe():
  """configs/recipes.py:fashion_mnist: 5 rows x 3 seeds, every run's config valid; its baseline is the depth
  experiment's ResNet-20 run (configs/ablation.py:fashion_mnist) but for the seed, the checkpoint cadence and
  the EMA start (unused without EMA), so the two tables compare like with like."""
  import json
  from experiments import sweep
  c = config_lib.load_file("configs/recipes.py:fashion_mnist")
  runs = sweep.grid(c.sweep)
  assert len(runs) == 15 and [s["seed"] for _, s in runs[:5]] == [0] * 5
  for _, settings in runs:
    r = c.copy_and_resolve_references()
    with r.unlocked():
      for k, v in settings.items():
        node = r
        *path, last = k.split(".")
        for part in path:
          node = node[part]
        node[last] = v
    config_lib.validate(r)
  base = dict(runs[0][1])
  depth = config_lib.load_file("configs/ablation.py:fashion_mnist")
  d20 = next(s for _, s in sweep.grid(depth.sweep) if s["model.name"] == "resnet20" and s["model.residual"]
             and s["model.norm"] == "batch")
  flat = lambda cfg: {k: v for k, v in __import__("flax").traverse_util.flatten_dict(
      json.loads(cfg.to_json_best_effort()), sep=".").items() if k != "sweep"}
  a, b = flat(c), flat(depth)
  for k, v in {**d20}.items():
    b[k] = v
  for k, v in base.items():
    a[k] = v
  diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
  assert diff == ["checkpoint_every_steps", "ema.start_step"], diff
