"""Images/s of the project's real train step against PyTorch on this CPU, in one interleaved run.

  pip install -r requirements-bench.txt
  python -m benchmarks.train_step [--models resnet18_cifar,resnet50,vgg16] [--repeats 3] [--steps 3]
                                  [--conv_impl auto,xla] [--autotune_dir DIR] [--dtype bfloat16]

JAX side: `cnnjax.train.steps.make_train_step` with the optimizer from `cnnjax.train.optim.build` on a real config
(configs/default.py), jitted with the state donated, as the training loop does. PyTorch side: the same
architectures written out below (parameter counts asserted equal), SGD momentum 0.9 + weight decay,
cross-entropy, 2 threads, in eager NCHW, eager channels_last and torch.compile modes. Random data, float32.
Reports medians over interleaved repeats, the ratio to PyTorch's best mode, the JAX step's GFLOP/s from XLA's cost
analysis, the fraction of a matmul peak measured in the same run, the first step's compile time and, for 'auto',
the one-time autotuning seconds (nothing when its cache in --autotune_dir already holds the step's shapes).
"""
import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax import models
from cnnjax import layers
from cnnjax.layers import autotune
from cnnjax import build
from cnnjax import data as data_lib
from cnnjax.train import loop
from configs import default

MODELS = {  # name: (registry name, options, image size, batch, classes)
    "resnet18_cifar": ("resnet18", {"stem": "cifar"}, 32, 128, 10),
    "resnet50": ("resnet50", {}, 224, 16, 1000),
    "vgg16": ("vgg16", {}, 64, 32, 10),
    "resnet20": ("resnet20", {}, 32, 64, 10),   # the default run (configs/resnet.py); no PyTorch twin here
    "resnet10_cifar": ("resnet18", {"stem": "cifar", "stage_sizes": (1, 1, 1, 1)}, 32, 128, 10),  # dry runs
}


def jax_step(name, conv_impl, autotune_dir=None, dtype="float32", size=None, batch=None, norm=None):
  """The jitted train step of `name`; under conv_impl 'auto' the autotuner first decides the step's convolutions
  (model.conv_autotune='measure', its cache in `autotune_dir`, as a run with compilation_cache_dir there) and
  checks the plan against plain lax on the train step itself, as a training run does.
  `dtype`: the compute dtype (config.dtype); `size`, `batch`: override the table's (device_check's dry run);
  `norm`: model.norm (benchmarks.profile_step's step without batch norm). The returned `run` also carries the
  compiled step, the model, its state box and the batch (for benchmarks.profile_step)."""
  reg, opts, size0, batch0, classes = MODELS[name]
  size, batch = size or size0, batch or batch0
  c = default.get_config()
  c.learning_rate, c.weight_decay, c.lr_schedule = 0.1, 5e-4, "constant"
  c.model.name, c.model.conv_impl, c.dtype = reg, conv_impl or c.model.conv_impl, dtype
  c.model.update(opts)
  if norm is not None:
    c.model.norm = norm
  c.dataset.image_size, c.dataset.normalize_on_device = size, False   # float images, fed as they are
  info = data_lib.DatasetInfo("bench", classes, (size, size, 3), (0.0,) * 3, (1.0,) * 3, ("train",))
  exp = build.experiment(c, info, 100, 100)
  impl, model = c.model.conv_impl, exp.model
  tune_s = 0.0
  if impl == "auto":
    autotune.configure("measure", autotune_dir)
    with autotune.collecting() as specs:
      models.init_variables(model, (size, size, 3), abstract=True, batch=batch)
    t = time.perf_counter()
    autotune.decide(specs)
    tune_s = time.perf_counter() - t
  state = exp.create(jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  data = {"image": jnp.asarray(rng.normal(size=(batch, size, size, 3)), jnp.float32),
          "label": jnp.asarray(rng.integers(0, classes, batch), jnp.int32)}
  if impl == "auto":   # the plan against plain lax on this very train step, as a training run checks it
    t = time.perf_counter()
    autotune.check_network(specs, lambda: loop.step_network(exp, state, data))
    tune_s += time.perf_counter() - t
  fn = exp.train_step()
  t = time.perf_counter()
  with layers.record_conv_impls() as plan:
    fn = fn.lower(state, data).compile()
  compile_s = time.perf_counter() - t
  if impl == "auto":
    net = autotune.state().summary.get("network", {})
    print(f"  {name} jax_auto: autotune {tune_s:.0f} s ({autotune.state().summary.get('measured', 0)} shapes "
          f"measured; whole network {net.get('ratio')}x lax, {net.get('source')}, "
          f"{'kept' if net.get('keep', True) else 'plain lax'}); plan {layers.describe_conv_impls(plan)}", flush=True)
  compiled = fn
  flops = (compiled.cost_analysis() or {}).get("flops", float("nan"))
  box = {"state": state}

  def run(n):
    s = box["state"]
    for _ in range(n):
      s, m = fn(s, data)
    jax.block_until_ready(m)
    box["state"] = s
  run.compiled, run.model, run.box, run.data = compiled, model, box, data
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  return run, batch, compile_s, flops, n_params, tune_s


def torch_models():
  import torch.nn as tnn

  class Basic(tnn.Module):
    def __init__(self, cin, cout, stride):
      super().__init__()
      self.c1, self.b1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False), tnn.BatchNorm2d(cout)
      self.c2, self.b2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False), tnn.BatchNorm2d(cout)
      self.sc = (tnn.Sequential(tnn.Conv2d(cin, cout, 1, stride, bias=False), tnn.BatchNorm2d(cout))
                 if stride != 1 or cin != cout else tnn.Identity())

    def forward(self, x):
      y = self.b2(self.c2(tnn.functional.relu(self.b1(self.c1(x)))))
      return tnn.functional.relu(y + self.sc(x))

  class Bottleneck(tnn.Module):
    def __init__(self, cin, width, stride):
      super().__init__()
      cout = width * 4
      self.c1, self.b1 = tnn.Conv2d(cin, width, 1, bias=False), tnn.BatchNorm2d(width)
      self.c2, self.b2 = tnn.Conv2d(width, width, 3, stride, 1, bias=False), tnn.BatchNorm2d(width)
      self.c3, self.b3 = tnn.Conv2d(width, cout, 1, bias=False), tnn.BatchNorm2d(cout)
      self.sc = (tnn.Sequential(tnn.Conv2d(cin, cout, 1, stride, bias=False), tnn.BatchNorm2d(cout))
                 if stride != 1 or cin != cout else tnn.Identity())

    def forward(self, x):
      r = tnn.functional.relu
      y = self.b3(self.c3(r(self.b2(self.c2(r(self.b1(self.c1(x))))))))
      return r(y + self.sc(x))

  def resnet(block, sizes, cifar, classes):
    layers, cin = [], 64
    if cifar:
      layers += [tnn.Conv2d(3, 64, 3, 1, 1, bias=False), tnn.BatchNorm2d(64), tnn.ReLU()]
    else:
      layers += [tnn.Conv2d(3, 64, 7, 2, 3, bias=False), tnn.BatchNorm2d(64), tnn.ReLU(), tnn.MaxPool2d(3, 2, 1)]
    for i, (n, w) in enumerate(zip(sizes, (64, 128, 256, 512))):
      for j in range(n):
        blk = block(cin, w, 2 if (i > 0 and j == 0) else 1)
        layers.append(blk)
        cin = w * (4 if block is Bottleneck else 1)
    layers += [tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(cin, classes)]
    return tnn.Sequential(*layers)

  def vgg16(classes):
    cfg = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
    layers, cin = [], 3
    for v in cfg:
      if v == "M":
        layers.append(tnn.MaxPool2d(2))
      else:
        layers += [tnn.Conv2d(cin, v, 3, 1, 1), tnn.ReLU()]
        cin = v
    layers += [tnn.AdaptiveAvgPool2d(7), tnn.Flatten(), tnn.Linear(512 * 49, 4096), tnn.ReLU(), tnn.Dropout(),
               tnn.Linear(4096, 4096), tnn.ReLU(), tnn.Dropout(), tnn.Linear(4096, classes)]
    return tnn.Sequential(*layers)

  return {"resnet18_cifar": lambda: resnet(Basic, (2, 2, 2, 2), True, 10),
          "resnet50": lambda: resnet(Bottleneck, (3, 4, 6, 3), False, 1000),
          "resnet10_cifar": lambda: resnet(Basic, (1, 1, 1, 1), True, 10),
          "vgg16": lambda: vgg16(10)}


def torch_step(name, mode, n_params_jax, device="cpu", amp=False, size=None, batch=None, part="step",
               strip_norm=False):
  """PyTorch's step in `mode` on `device`; `amp`: bfloat16 autocast (parameters and optimizer float32, as JAX's
  config.dtype='bfloat16'); `part`: 'step', or only its 'forward' or 'forward + backward' (benchmarks.profile_step);
  `strip_norm`: every BatchNorm2d an Identity (the parameter count then differs from JAX's, not checked)."""
  import contextlib
  import torch
  _, _, size0, batch0, classes = MODELS[name]
  size, batch = size or size0, batch or batch0
  torch.manual_seed(0)
  model = torch_models()[name]().to(device)
  n = sum(p.numel() for p in model.parameters())
  if strip_norm:
    _strip_norm(model)
  assert strip_norm or n == n_params_jax, f"{name}: PyTorch has {n} parameters, JAX {n_params_jax}"
  opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
  x = torch.randn(batch, 3, size, size, device=device)
  y = torch.randint(0, classes, (batch,), device=device)
  if mode == "channels_last" or mode == "compiled":
    model, x = model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
  loss_fn = torch.nn.CrossEntropyLoss()

  cast = (lambda: torch.autocast(device_type=device, dtype=torch.bfloat16)) if amp else contextlib.nullcontext
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

  def one():
    opt.zero_grad(set_to_none=True)
    with cast():
      loss = loss_fn(model(x), y)
    if part == "forward":
      return
    loss.backward()
    if part == "step":
      opt.step()
  fn = torch.compile(one) if mode == "compiled" else one
  t = time.perf_counter()
  fn()
  sync()
  first = time.perf_counter() - t

  def run(k):
    for _ in range(k):
      fn()
    sync()
  run.model = model
  return run, first


def _strip_norm(module):
  import torch.nn as tnn
  for name, child in module.named_children():
    if isinstance(child, tnn.BatchNorm2d):
      setattr(module, name, tnn.Identity())
    else:
      _strip_norm(child)


def matmul_peak():
  a = jnp.ones((2048, 2048), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  jax.block_until_ready(f(a))
  t = time.perf_counter()
  for _ in range(5):
    out = f(a)
  jax.block_until_ready(out)
  return 5 * 2 * 2048 ** 3 / (time.perf_counter() - t) / 1e9


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", default="resnet18_cifar,resnet50,vgg16")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--torch_modes", default="eager,channels_last,compiled")
  p.add_argument("--conv_impl", default="", help="model.conv_impl (default: configs/default.py's); a comma "
                 "list times each as its own system, e.g. auto,xla")
  p.add_argument("--autotune_dir", default=default.get_config().compilation_cache_dir,
                 help="where 'auto''s decisions are cached (a fresh directory: measure the one-time cost again)")
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                 help="JAX's config.dtype (parameters stay float32); with bfloat16 PyTorch runs under CPU autocast")
  a = p.parse_args()
  import torch
  torch.set_num_threads(2)
  peak = matmul_peak()
  print(f"{autotune.machine_key()['cpu']}: jax {jax.__version__}, torch {torch.__version__}, matmul peak "
        f"{peak:.0f} GFLOP/s (2048^3, this run)")
  for name in a.models.split(","):
    systems, firsts, flops, tunes = {}, {}, {}, {}
    for impl in a.conv_impl.split(","):
      key = f"jax_{impl}" if impl else "jax"
      systems[key], batch, firsts[key], flops[key], n_params, tunes[key] = jax_step(name, impl, a.autotune_dir, a.dtype)
    for mode in (m for m in a.torch_modes.split(",") if m and name in torch_models()):
      systems[f"torch_{mode}"], firsts[f"torch_{mode}"] = torch_step(name, mode, n_params, amp=a.dtype == "bfloat16")
    for f in systems.values():
      f(1)  # warm-up
    times = {k: [] for k in systems}
    order = list(systems)
    for r in range(a.repeats):
      # Each repeat starts one system later: what runs right after PyTorch pays for its threads winding down
      # (VGG-16 on a Zen 4: the same JAX program 0.83x slower in that place), so no system may always sit there.
      for k in order[r % len(order):] + order[:r % len(order)]:
        f = systems[k]
        t = time.perf_counter()
        f(a.steps)
        times[k].append((time.perf_counter() - t) / a.steps)
    ips = {k: batch / statistics.median(v) for k, v in times.items()}
    best_torch = max([v for k, v in ips.items() if k.startswith("torch")] or [float("nan")])
    print(f"\n{name} (batch {batch}, {n_params:,d} params, {a.dtype}"
          f"{'; torch under autocast' if a.dtype == 'bfloat16' else ''})")
    for k, v in ips.items():
      tune = f" + autotune {tunes[k]:.0f} s" if tunes.get(k) else ""
      print(f"  {k:22s} {v:8.1f} images/s   first step {firsts[k]:6.1f} s{tune}")
    for k in (k for k in ips if k.startswith("jax")):
      gflops = flops[k] / statistics.median(times[k]) / 1e9   # XLA's count: Winograd's is lower for the same work
      print(f"  {k} / best torch: {ips[k] / best_torch:.2f}x; {k} step {gflops:.0f} GFLOP/s = "
            f"{gflops / peak:.0%} of the matmul peak", flush=True)


if __name__ == "__main__":
  main()
