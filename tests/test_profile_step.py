"""benchmarks.profile_step: the parts it times are the parts it names, and its arithmetic (hand-worked)."""
import torch

from benchmarks import profile_step, train_step


def test_breakdown_hand_worked():
  """forward 10, forward + backward 30, step 35, step without batch norm 28 (ms): backward 20, update 5, batch norm
  7 (catches a part subtracted from the wrong one)."""
  ms = {"forward": 10.0, "forward + backward": 30.0, "step": 35.0, "step without batch norm": 28.0}
  assert profile_step.breakdown(ms) == {"forward": 10.0, "backward": 20.0, "update (optimizer, checks)": 5.0,
                                        "batch norm (step - step without it)": 7.0, "whole step": 35.0}
  no_bn = {k: v for k, v in ms.items() if k != "step without batch norm"}   # VGG: no batch norm row
  assert "batch norm (step - step without it)" not in profile_step.breakdown(no_bn)


def _torch(part, strip_norm=False):
  n = sum(p.numel() for p in train_step.torch_models()["resnet10_cifar"]().parameters())
  run, _ = train_step.torch_step("resnet10_cifar", "eager", n, size=8, batch=2, part=part, strip_norm=strip_norm)
  return run.model


def test_torch_parts_stop_where_they_say():
  """'forward' leaves no gradient, 'forward + backward' leaves gradients and the initial weights (a fresh model
  from the same seed), 'step' moves the weights; strip_norm leaves no BatchNorm2d."""
  torch.manual_seed(0)
  fresh = train_step.torch_models()["resnet10_cifar"]()
  first = lambda m: next(m.parameters()).detach()
  m = _torch("forward")
  assert all(p.grad is None for p in m.parameters())
  m = _torch("forward + backward")
  assert all(p.grad is not None for p in m.parameters()) and torch.equal(first(m), first(fresh))
  assert not torch.equal(first(_torch("step")), first(fresh))
  stripped = _torch("step", strip_norm=True)
  assert not any(isinstance(x, torch.nn.BatchNorm2d) for x in stripped.modules())
  assert any(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())


def test_jax_step_without_batch_norm_has_none():
  """norm='none' reaches the model: no batch statistics, a conv bias instead (catches the option ignored, which
  would make the batch-norm row zero)."""
  run = train_step.jax_step("resnet10_cifar", "xla", size=8, batch=2, norm="none")[0]
  state = run.box["state"]
  assert not state.batch_stats and "bias" in state.params["stem_conv"]
  assert train_step.jax_step("resnet10_cifar", "xla", size=8, batch=2)[0].box["state"].batch_stats
