"""torchvision weights in the zoo: logits equal torchvision's own models (eval mode), and the converting command.

Every parameter and running statistic is random: conv and linear weights from torchvision's random init, every
1-D parameter (batch-norm scale and bias, conv and linear biases) drawn afresh, and the running statistics set
to a random batch's statistics and then perturbed per channel (identity statistics would hide a mapping that
swaps mean and var; statistics far from the activations' would blow a 152-layer net up to 1e11 and hide the
small terms). Two input sizes: 224 and 193, whose odd sizes exercise the symmetric padding of stride-2
convolutions, GoogLeNet's ceil-mode pools and the adaptive pools (AlexNet 5x5 -> 6x6, VGG 6x6 -> 7x7).
"""
import json

import jax
import numpy as np
import pytest
import torch

from cnnjax import models, pretrained
from cnnjax.errors import ConfigError
from tests._torchvision import models as tv_models

SIZES = (224, 193)
RTOL = 1e-4   # of max |torch logit|
# XLA's CPU backend spends most of a deep net's time here compiling (ResNet-152: 14 s of CPU per input size);
# these options halve that. The program is the same; the logits stayed within 2e-6 of torch's either way.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
# In the fast tier: resnet18 and alexnet; the rest after it.
SLOW = {"resnet34", "resnet50", "resnet101", "resnet152", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn",
        "vgg19", "vgg19_bn"}


@pytest.fixture(autouse=True)
def float32_convolutions():
  """Full float32 products on every backend (GPUs default to TF32, about 1e-3 relative)."""
  with jax.default_matmul_precision("highest"):
    yield


def random_torch_model(name, seed=0, **kwargs):
  """torchvision's `name` (no download) in eval mode, every parameter and running statistic random."""
  torch.manual_seed(seed)
  model = getattr(tv_models, name)(weights=None, **kwargs)
  g = torch.Generator().manual_seed(seed + 1)
  bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
  bn_scales = {id(bn.weight) for bn in bns}
  with torch.no_grad():
    for p in model.parameters():
      if id(p) in bn_scales:
        p.copy_(torch.rand(p.shape, generator=g) + 0.5)
      elif p.ndim == 1:
        p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    for bn in bns:  # the statistics of a random batch (momentum None: a plain average over one batch) ...
      bn.reset_running_stats()
      bn.momentum = None
    model.train()
    model(torch.rand(4, 3, 64, 64, generator=g))
    for bn in bns:  # ... then moved per channel, so a swapped or missing statistic changes the logits
      bn.momentum = 0.1
      bn.running_mean += torch.randn(bn.running_mean.shape, generator=g) * bn.running_var.sqrt() * 0.2
      bn.running_var *= torch.rand(bn.running_var.shape, generator=g) * 1.5 + 0.5
  return model.eval()


def compiled(fn, *args):
  """`jax.jit(fn)` compiled for `args` with FAST_COMPILE."""
  return jax.jit(fn).lower(*args).compile(FAST_COMPILE)


def torch_logits(model, x_nchw):
  with torch.no_grad():
    return model(torch.from_numpy(x_nchw)).numpy()


def assert_close(got, want):
  err = np.abs(np.asarray(got) - want).max() / np.abs(want).max()
  assert err <= RTOL, f"max |cnnjax - torch| / max |torch| = {err:.2e} > {RTOL}"


def images(size, seed=0):
  return np.random.default_rng(seed).normal(size=(1, 3, size, size)).astype(np.float32)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
                                  for n in pretrained.NAMES if n != "googlenet"])
def test_logits_equal_torchvision(name):
  model = random_torch_model(name)
  module, variables = pretrained.from_torchvision(name, model.state_dict())
  for size in SIZES:
    x = images(size).transpose(0, 2, 3, 1)
    apply = compiled(lambda v, x: module.apply(v, x, train=False), variables, x)
    assert_close(apply(variables, x), torch_logits(model, x.transpose(0, 3, 1, 2)))


@pytest.mark.slow
def test_googlenet_logits_aux_heads_and_transform_input_equal_torchvision():
  """Eval logits at both sizes; the auxiliary heads (their fc1 follows a 128x4x4 flatten), which torchvision
  runs only in training, on the same features; and torchvision's `transform_input=True` (the pretrained
  weights' setting) on ImageNet-normalised images equals the zoo model fed with `pretrained.normalization`."""
  model = random_torch_model("googlenet", aux_logits=True, init_weights=True)
  module, variables = pretrained.from_torchvision("googlenet", model.state_dict())
  assert module.aux_logits and module.layout == "torchvision"
  apply = jax.jit(lambda v, x: module.apply(v, x, train=False, capture_intermediates=True,
                                            mutable=["intermediates"]))
  features = {}
  model.inception4a.register_forward_hook(lambda m, i, o: features.__setitem__("4a", o))
  model.inception4d.register_forward_hook(lambda m, i, o: features.__setitem__("4d", o))
  for size in SIZES:
    x = images(size)
    logits, state = apply(variables, x.transpose(0, 2, 3, 1))
    assert_close(logits, torch_logits(model, x))
    with torch.no_grad():
      for ours, theirs, head in (("aux_4a", "4a", model.aux1), ("aux_4d", "4d", model.aux2)):
        assert_close(state["intermediates"][ours]["__call__"][0], head(features[theirs]).numpy())

  prep = pretrained.preprocessing("googlenet")
  image = np.random.default_rng(1).uniform(size=(1, SIZES[1], SIZES[1], 3)).astype(np.float32)
  as_torchvision = (image - np.float32(prep["mean"])) / np.float32(prep["std"])  # what its transforms give
  mean, std = pretrained.normalization(prep)
  model.transform_input = True
  logits, _ = apply(variables, (image - mean) / std)
  assert_close(logits, torch_logits(model, as_torchvision.transpose(0, 3, 1, 2)))

  # A state_dict without the auxiliary heads (torchvision's `aux_logits=False`) gives a model without them.
  no_aux = {k: v for k, v in model.state_dict().items() if not k.startswith(("aux1.", "aux2."))}
  module, variables = pretrained.from_torchvision("googlenet", no_aux)
  assert not module.aux_logits and not any(k.startswith("aux") for k in variables["params"])


def test_missing_unexpected_and_misshapen_keys_are_listed():
  state_dict = dict(random_torch_model("resnet18").state_dict())
  del state_dict["layer2.0.downsample.1.running_var"]
  state_dict["layer5.0.conv1.weight"] = state_dict["layer4.0.conv1.weight"]
  with pytest.raises(ConfigError, match=r"1 missing key\(s\) \['layer2.0.downsample.1.running_var'\], "
                                        r"1 unexpected key\(s\) \['layer5.0.conv1.weight'\]"):
    pretrained.from_torchvision("resnet18", state_dict)
  vgg = dict(tv_models.vgg11(weights=None).state_dict())
  vgg["classifier.0.weight"] = vgg["classifier.0.weight"][:, :1000]
  with pytest.raises(ConfigError, match=r"classifier.0.weight \(4096, 1000\) \(the model's params/fc1/kernel "
                                        r"is \(25088, 4096\)\)"):
    pretrained.from_torchvision("vgg11", vgg)
  with pytest.raises(ConfigError, match=r"'resnet19' is not supported; supported: \['resnet18'"):
    pretrained.from_torchvision("resnet19", {})


def test_num_batches_tracked_is_optional_and_class_count_follows_the_head():
  model = random_torch_model("resnet18", num_classes=10)
  state_dict = {k: v.numpy() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
  module, variables = pretrained.from_torchvision("resnet18", state_dict)
  assert module.num_classes == 10
  x = images(64)
  assert_close(jax.jit(module.apply, static_argnames="train")(variables, x.transpose(0, 2, 3, 1), train=False),
               torch_logits(model, x))


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_command_writes_a_checkpoint_that_loads_back(tmp_path, suffix):
  model = random_torch_model("resnet18")
  weights = str(tmp_path / f"resnet18{suffix}")
  if suffix == ".safetensors":
    from safetensors.numpy import save_file
    save_file({k: v.numpy() for k, v in model.state_dict().items()}, weights)
  else:
    torch.save(model.state_dict(), weights)
  out = str(tmp_path / "converted")
  assert pretrained.main(["--model", "resnet18", "--weights", weights, "--out", out]) == 0

  name, options, variables, prep = pretrained.load(out)
  module = models.create(name, num_classes=1000, **options)
  x = images(224)
  assert_close(jax.jit(module.apply, static_argnames="train")(variables, x.transpose(0, 2, 3, 1), train=False),
               torch_logits(model, x))
  # The preprocessing equals torchvision's transforms for its ImageNet weights (read from its code, no download).
  ref = tv_models.ResNet18_Weights.IMAGENET1K_V1.transforms()
  assert (prep["mean"], prep["std"], [prep["input_size"]], [prep["resize_size"]], prep["interpolation"]) == (
      ref.mean, ref.std, ref.crop_size, ref.resize_size, ref.interpolation.value)
  assert prep["transform_input"] is False
  with open(f"{out}/pretrained.json") as f:
    meta = json.load(f)
  assert meta["model"] == "resnet18" and meta["num_classes"] == 1000 and meta["preprocessing"] == prep
  assert meta["source"]["torchvision_model"] == "resnet18"

  # Refuses to write into a non-empty directory.
  assert pretrained.main(["--model", "resnet18", "--weights", weights, "--out", out]) == 2


def test_command_reports_a_missing_key_and_a_missing_torch(tmp_path, capsys, monkeypatch):
  from safetensors.numpy import save_file
  state_dict = {k: v.numpy() for k, v in random_torch_model("resnet18").state_dict().items()}
  del state_dict["fc.bias"]
  weights = str(tmp_path / "broken.safetensors")
  save_file(state_dict, weights)
  assert pretrained.main(["--model", "resnet18", "--weights", weights, "--out", str(tmp_path / "out")]) == 2
  assert "1 missing key(s) ['fc.bias']" in capsys.readouterr().err
  assert not (tmp_path / "out").exists()

  (tmp_path / "w.npz").write_bytes(b"")
  with pytest.raises(ConfigError, match=r"w\.npz': unknown format; expected \.safetensors, \.pth or \.pt"):
    pretrained.read_weights(str(tmp_path / "w.npz"))
  (tmp_path / "w.pth").write_bytes(b"")
  monkeypatch.setitem(__import__("sys").modules, "torch", None)  # as if torch were not installed
  with pytest.raises(ConfigError, match=r"needs PyTorch: pip install torch==2\.13\.0"):
    pretrained.read_weights(str(tmp_path / "w.pth"))


def test_googlenet_preprocessing_keeps_transform_input():
  ref = tv_models.GoogLeNet_Weights.IMAGENET1K_V1.transforms()
  prep = pretrained.preprocessing("googlenet")
  assert prep["transform_input"] is True and (prep["mean"], prep["std"]) == (ref.mean, ref.std)


@pytest.mark.parametrize("args, message", [
    (["--model", "resnet18", "--transform-input"], "--transform-input is GoogLeNet's; --model resnet18 has none"),
    (["--model", "resnet18", "--input-size", "300"], "--input-size 300 and --resize-size 256: need 0 < input"),
    (["--model", "resnet19"], "torchvision model 'resnet19' is not supported"),
    (["--model", "resnet18"], "absent.pth': no such file"),
])
def test_command_rejects_bad_options_before_reading_weights(tmp_path, capsys, args, message):
  argv = ["--weights", str(tmp_path / "absent.pth"), "--out", str(tmp_path / "out")] + args
  assert pretrained.main(argv) == 2
  assert message in capsys.readouterr().err
  assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name, kwargs", [
    ("resnet18", {}), pytest.param("vgg11_bn", {}, marks=pytest.mark.slow),
    pytest.param("googlenet", {"aux_logits": True, "init_weights": True}, marks=pytest.mark.slow)])
def test_conversion_sets_statistics_epsilon_and_momentum_as_torchvision(name, kwargs):
  """Every torchvision BatchNorm2d has a zoo batch norm with its running statistics bit for bit, its epsilon
  (1e-5; GoogLeNet's 1e-3) and its momentum (torch's 0.1 is flax's 0.9), read from the modules as they run.
  Eval-mode logits cannot see the momentum (it acts only in training), nor statistics that trade places with
  epsilon (the variance converted as var + eps into a norm with eps 0 gives the same logits)."""
  import flax.linen as nn
  from cnnjax.layers import BatchNorm
  model = random_torch_model(name, **kwargs)
  module, variables = pretrained.from_torchvision(name, model.state_dict())
  theirs = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
  ours = {}

  def record(next_fun, args, kw, context):
    if isinstance(context.module, BatchNorm) and context.method_name == "__call__":
      ours[context.module.path] = context.module
    return next_fun(*args, **kw)
  with nn.intercept_methods(record):
    jax.eval_shape(lambda: module.apply(variables, np.zeros((1, 224, 224, 3), np.float32), train=False))
  names = {pretrained.FAMILIES[name].names(path, module): path for path in ours}
  assert len(names) == len(ours) and sorted(names) == sorted(theirs)
  for tname, path in names.items():
    bn, stats = theirs[tname], variables["batch_stats"]
    for part in path:
      stats = stats[part]
    np.testing.assert_array_equal(stats["mean"], bn.running_mean.numpy(), err_msg=tname)
    np.testing.assert_array_equal(stats["var"], bn.running_var.numpy(), err_msg=tname)
    assert ours[path].epsilon == bn.eps, tname
    assert ours[path].momentum == pytest.approx(1 - bn.momentum, abs=1e-12), tname
