"""Every config file and preset loads, validates and builds its model at its input size."""
import jax
import pytest

from cnnjax import config as config_lib, data, models

CONFIGS = [("configs/resnet.py", p) for p in ("digits", "cifar10", "imagenette", "imagenet_1pct", "synthetic",
                                              "fashion_mnist")] + [
    ("configs/lenet.py", p) for p in ("lenet5", "lenet5_modern", "lenet1", "fashion_mnist", "fashion_mnist_modern")] + [
    ("configs/alexnet.py", "digits"), ("configs/alexnet.py", "imagenet"), ("configs/vgg.py", "digits"),
    ("configs/vgg.py", "imagenet"), ("configs/googlenet.py", "digits"), ("configs/googlenet.py", "torchvision"),
    ("configs/imagenet_subset.py", "1pct"), ("configs/ablation.py", "digits")]


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
