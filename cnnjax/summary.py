"""A layer-by-layer summary of a model: output shape, parameters, multiply-accumulates, receptive field, jump.

  python -m cnnjax.summary --model resnet50 --input_shape 224,224,3 [--num_classes 1000] [--option k=v ...]
  python -m cnnjax.summary --config configs/resnet.py[:preset]

Rows are the model's convolutions, dense layers, norms and pools in call order (traced with
`nn.intercept_methods` on abstract inputs: nothing is computed). MACs: a convolution does
out_H * out_W * out_C * (k_H * k_W * in_C / groups), a dense layer in * out, per example. Receptive field r and
jump j (the input-pixel distance between adjacent outputs) follow r_out = r_in + (k - 1) * dilation * j_in,
j_out = j_in * stride; where branches meet (residual, inception), the largest receptive field of a grid size wins.
The zoo pools with the MaxPool/AvgPool modules so they appear here; a pool called as a plain function is
invisible to the summary (its receptive-field growth is then missed). Dense layers after global pooling show
no receptive field.

Prints the table; writes nothing.
"""
import ast
import math
import sys
from typing import List

import flax.linen as nn
import jax
from absl import flags

from cnnjax import build, cli, models
from cnnjax import config as config_lib
from cnnjax.errors import ConfigError
from cnnjax.layers import BatchNorm
from cnnjax.models import init_variables


def _count(tree):
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def layer_table(model, input_shape) -> List[dict]:
  """One dict per leaf layer call: name, kind, out_shape, params, macs, rf, jump."""
  rows = []
  state = {}  # spatial grid (H, W) -> (rf, jump) with the largest rf seen

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    mod = context.module
    if context.method_name != "__call__" or not isinstance(mod, (nn.Dense, nn.BatchNorm, BatchNorm, nn.GroupNorm)) and \
        type(mod).__name__ not in ("Conv", "Subsample", "MaxPool", "AvgPool"):
      return out
    x = args[0]
    params = mod.variables.get("params", {})
    name = "/".join(mod.scope.path) or type(mod).__name__
    row = dict(name=name, kind=type(mod).__name__, out_shape=tuple(out.shape[1:]), params=_count(params), macs=0)
    in_grid, out_grid = tuple(x.shape[1:-1]), tuple(out.shape[1:-1])
    rf, jump = state.get(in_grid, (1, 1))
    if row["kind"] == "Conv":
      k = tuple(mod.kernel_size)
      stride = (mod.strides,) * len(k) if isinstance(mod.strides, int) else tuple(mod.strides)
      dil = (mod.kernel_dilation,) * len(k) if isinstance(mod.kernel_dilation, int) else tuple(mod.kernel_dilation)
      row["macs"] = math.prod(out.shape[1:]) * math.prod(k) * x.shape[-1] // mod.feature_group_count
      rf, jump = rf + (k[0] - 1) * dil[0] * jump, jump * stride[0]
    elif row["kind"] == "Dense":
      row["macs"] = math.prod(out.shape[1:]) * x.shape[-1]
    elif row["kind"] == "Subsample":
      rf, jump = rf + jump, jump * 2
    elif row["kind"] in ("MaxPool", "AvgPool"):
      nd = len(in_grid)
      k = (mod.kernel_size,) * nd if isinstance(mod.kernel_size, int) else tuple(mod.kernel_size)
      s = mod.stride if mod.stride is not None else mod.kernel_size
      s = (s,) * nd if isinstance(s, int) else tuple(s)
      d = getattr(mod, "dilation", 1)
      d = (d,) * nd if isinstance(d, int) else tuple(d)
      rf, jump = rf + (k[0] - 1) * d[0] * jump, jump * s[0]
    row["rf"], row["jump"] = (rf, jump) if out.ndim >= 3 else (None, None)
    if len(out_grid) == len(in_grid) and out.ndim >= 3:
      prev = state.get(out_grid)
      if prev is None or rf > prev[0]:
        state[out_grid] = (rf, jump)
    rows.append(row)
    return out

  with nn.intercept_methods(interceptor):
    variables = init_variables(model, input_shape, abstract=True)
  return rows, _count(variables["params"])


def format_table(rows, total_params) -> str:
  lines = [f"{'layer':52s} {'kind':10s} {'output':>16s} {'params':>12s} {'MACs':>15s} {'RF':>5s} {'jump':>5s}"]
  lines.append("-" * len(lines[0]))
  for r in rows:
    lines.append(f"{r['name'][:52]:52s} {r['kind']:10s} {str(r['out_shape']):>16s} {r['params']:>12,d} "
                 f"{r['macs']:>15,d} {r['rf'] or '':>5} {r['jump'] or '':>5}")
  macs = sum(r["macs"] for r in rows)
  lines.append("-" * len(lines[0]))
  lines.append(f"total: {total_params:,d} parameters (layers above: {sum(r['params'] for r in rows):,d}), "
               f"{macs:,d} multiply-accumulates ({macs / 1e9:.3f} G) per example")
  return "\n".join(lines)


def define_flags(fv: flags.FlagValues) -> flags.FlagValues:
  flags.DEFINE_string("model", None, "a registered model name (cnnjax.models.names())", flag_values=fv)
  flags.DEFINE_string("input_shape", None, "H,W,C, e.g. 224,224,3", flag_values=fv)
  flags.DEFINE_alias("input-shape", "input_shape", flag_values=fv)
  flags.DEFINE_integer("num_classes", 1000, "outputs of the classifier", flag_values=fv)
  flags.DEFINE_alias("num-classes", "num_classes", flag_values=fv)
  flags.DEFINE_multi_string("option", [], "model option k=v (Python literal values); repeatable", flag_values=fv)
  flags.DEFINE_string("config", None, "a config file[:preset]; takes model, input size and classes from it",
                      flag_values=fv)
  return fv


def main(argv=None):
  """The command on `argv` (without the program name), as a function."""
  return cli.call(define_flags, _run, argv)


def _run(a, args):
  if args:
    sys.exit(f"error: unexpected arguments {args}")
  try:
    if a.config:
      c = config_lib.load_file(a.config)
      info = build.data_info(c)
      name, model, shape = c.model.name, build.model(c, info), build.input_shape(c, info)
    elif a.model and a.input_shape:
      name, shape = a.model, tuple(int(v) for v in a.input_shape.split(","))
      opts = {k: ast.literal_eval(v) for k, v in (o.split("=", 1) for o in a.option)}
      model = models.create(name, num_classes=a.num_classes, **opts)
    else:
      sys.exit("error: give --config, or --model and --input_shape")
    rows, total = layer_table(model, shape)
  except (ConfigError, ValueError, TypeError) as e:
    sys.exit(f"error: {e}")
  print(f"{name} on {shape}:")
  print(format_table(rows, total))


if __name__ == "__main__":
  cli.program(define_flags, _run)
