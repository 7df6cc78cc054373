"""Where a train step's time goes on this CPU, JAX beside PyTorch: forward, backward, update and batch norm.

  python -m benchmarks.profile_step [--model resnet50] [--conv_impl auto] [--repeats 3] [--steps 2]
                                    [--torch_mode channels_last] [--dtype float32|bfloat16] [--autotune_dir DIR]
                                    [--out FILE]

Each part is timed as a program of its own, in one interleaved run (medians of `repeats` x `steps`):
- forward: the loss in training mode (batch statistics updated), no gradient;
- forward + backward: the loss and its gradient;
- step: the real train step (benchmarks.train_step: optimizer, finiteness checks, batch statistics kept);
- step without batch norm: the same model with `model.norm='none'` (a conv bias instead, as the zoo builds it)
  against PyTorch's with every BatchNorm2d an Identity (no bias).
Backward = (forward + backward) - forward; update = step - (forward + backward); batch norm = step - step without
batch norm. Differences of medians: a part under about 5% of the step is within noise.

Why not a per-operation profile: XLA's CPU runtime runs its convolutions asynchronously on its thread pool, so the
per-operation events of `jax.profiler` record the launch of a convolution, not its work (tried: the operations'
events summed to half the step, the forward convolutions to a few percent).
"""
import argparse
import statistics
import time

import jax

from benchmarks import train_step as ts
from cnnjax.train import steps as steps_lib

PARTS = ("forward", "forward + backward", "step", "step without batch norm")


def jax_parts(model: str, conv_impl: str, dtype: str, autotune_dir=None):
  """({part: run(n)}, batch, parameter count) of the JAX step and its parts."""
  step, batch, _, _, n_params, _ = ts.jax_step(model, conv_impl, autotune_dir, dtype)
  m, box, data = step.model, step.box, step.data   # box["state"]: the newest state (the step donates its input)

  def loss(params, batch_stats):
    variables = {"params": params, "batch_stats": batch_stats}
    out, new = m.apply(variables, data["image"], train=True, mutable=["batch_stats"])
    logits = steps_lib.split_outputs(out)[0]
    return steps_lib.cross_entropy(logits, data["label"]).mean(), new

  fwd, grad = jax.jit(loss), jax.jit(jax.grad(loss, has_aux=True))
  args = lambda: (box["state"].params, box["state"].batch_stats)
  parts = {"forward": _looped(lambda: fwd(*args())), "forward + backward": _looped(lambda: grad(*args())),
           "step": step}
  if model != "vgg16":
    parts["step without batch norm"] = ts.jax_step(model, conv_impl, autotune_dir, dtype, norm="none")[0]
  return parts, batch, n_params


def _looped(f):
  def run(n):
    for _ in range(n):
      out = f()
    jax.block_until_ready(out)
  return run


def torch_parts(model: str, mode: str, n_params: int, amp: bool):
  """{part: run(n)} of PyTorch's step in `mode` and its parts."""
  parts = {p: ts.torch_step(model, mode, n_params, amp=amp, part=p)[0] for p in ("forward", "forward + backward",
                                                                                "step")}
  if model != "vgg16":
    parts["step without batch norm"] = ts.torch_step(model, mode, n_params, amp=amp, strip_norm=True)[0]
  return parts


def timed(systems: dict, repeats: int, steps: int) -> dict:
  """{name: median ms per call} of interleaved repeats."""
  for f in systems.values():
    f(1)
  times = {k: [] for k in systems}
  for _ in range(repeats):
    for k, f in systems.items():
      t = time.perf_counter()
      f(steps)
      times[k].append((time.perf_counter() - t) * 1e3 / steps)
  return {k: statistics.median(v) for k, v in times.items()}


def breakdown(ms: dict) -> dict:
  """{row: ms} from the parts' medians: forward, backward, update, batch norm, the whole step."""
  out = {"forward": ms["forward"], "backward": ms["forward + backward"] - ms["forward"],
         "update (optimizer, checks)": ms["step"] - ms["forward + backward"]}
  if "step without batch norm" in ms:
    out["batch norm (step - step without it)"] = ms["step"] - ms["step without batch norm"]
  out["whole step"] = ms["step"]
  return out


def table(jax_ms: dict, torch_ms: dict) -> str:
  j, t = breakdown(jax_ms), breakdown(torch_ms)
  rows = ["| part | JAX ms | share of JAX step | PyTorch ms | share of PyTorch step | JAX / PyTorch |",
          "|---|---|---|---|---|---|"]
  for k in j:
    rows.append(f"| {k} | {j[k]:.0f} | {j[k] / j['whole step']:.0%} | {t[k]:.0f} | {t[k] / t['whole step']:.0%} | "
                f"{j[k] / t[k]:.2f}x |" if t[k] > 0 else f"| {k} | {j[k]:.0f} | | {t[k]:.0f} | | - |")
  return "\n".join(rows) + "\n"


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", default="resnet50", choices=[m for m in ts.MODELS if m != "resnet20"])
  p.add_argument("--conv_impl", default="auto")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--steps", type=int, default=2)
  p.add_argument("--torch_mode", default="channels_last", choices=("eager", "channels_last"))
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                 help="JAX config.dtype; PyTorch under CPU autocast to bfloat16 when bfloat16")
  p.add_argument("--autotune_dir", default=ts.default.get_config().compilation_cache_dir,
                 help="where 'auto''s decisions are cached (as benchmarks.train_step)")
  p.add_argument("--out", default="", help="also write the table, with its machine and settings, to this file")
  a = p.parse_args()
  import torch
  torch.set_num_threads(2)
  jp, batch, n_params = jax_parts(a.model, a.conv_impl, a.dtype, a.autotune_dir)
  tp = torch_parts(a.model, a.torch_mode, n_params, a.dtype == "bfloat16")
  ms = timed({**{("jax", k): v for k, v in jp.items()}, **{("torch", k): v for k, v in tp.items()}},
             a.repeats, a.steps)
  head = (f"{ts.autotune.machine_key()['cpu']}; jax {jax.__version__}, torch {torch.__version__}; {a.model} batch "
          f"{batch}, conv_impl={a.conv_impl}, {a.dtype}, torch {a.torch_mode}"
          f"{' + autocast' if a.dtype == 'bfloat16' else ''}; medians of {a.repeats} x {a.steps}\n\n")
  out = head + table({k: v for (s, k), v in ms.items() if s == "jax"}, {k: v for (s, k), v in ms.items()
                                                                      if s == "torch"})
  print(out, flush=True)
  if a.out:
    with open(a.out, "w") as f:
      f.write(out)


if __name__ == "__main__":
  main()
