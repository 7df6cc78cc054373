"""cnnjax.summary against torchvision's published compute (GFLOPS = multiply-accumulates) and parameter counts,
and receptive fields against hand-worked stacks."""
import subprocess
import sys

import flax.linen as nn
import pytest

from cnnjax import layers, models, summary

# torchvision weights metadata `_ops` (GMACs at 224x224) and `num_params`.
TORCHVISION = {"resnet18": (1.814, 11_689_512, {}), "resnet50": (4.089, 25_557_032, {}),
               "vgg16": (15.470, 138_357_544, {}), "alexnet_owt": (0.714, 61_100_840, {}),
               "googlenet": (1.498, 6_624_904, {"layout": "torchvision", "aux_logits": False})}


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_totals_match_torchvision(name):
  gmacs, params, opts = TORCHVISION[name]
  rows, total = summary.layer_table(models.create(name, num_classes=1000, **opts), (224, 224, 3))
  assert total == params == sum(r["params"] for r in rows)
  assert round(sum(r["macs"] for r in rows) / 1e9, 3) == gmacs


class _Stack(nn.Module):
  @nn.compact
  def __call__(self, x, *, train):
    x = layers.Conv(4, (3, 3), 1, "SAME")(x)        # rf 3, jump 1
    x = layers.Conv(4, (3, 3), 2, "SAME")(x)        # rf 5, jump 2
    x = layers.MaxPool(2)(x)                         # rf 7, jump 4
    x = layers.Conv(4, (3, 3), 1, "SAME", kernel_dilation=2)(x)  # rf 7 + 2*2*4 = 23, jump 4
    return x


def test_receptive_field_and_jump_hand_worked():
  rows, _ = summary.layer_table(_Stack(), (32, 32, 3))
  assert [(r["rf"], r["jump"]) for r in rows] == [(3, 1), (5, 2), (7, 4), (23, 4)]
  # MACs of the first conv: 32*32 outputs * 4 channels * 3*3*3 taps.
  assert rows[0]["macs"] == 32 * 32 * 4 * 27


@pytest.mark.subprocess
@pytest.mark.slow
def test_cli_on_config_and_model(tmp_path):
  r = subprocess.run([sys.executable, "-m", "cnnjax.summary", "--config", "configs/resnet.py"], capture_output=True,
                     text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]
  assert "total: 269,434 parameters" in r.stdout  # ResNet-20 on 1-channel digits: 269,722 - 2*9*16
  r = subprocess.run([sys.executable, "-m", "cnnjax.summary", "--model", "resnet21", "--input-shape", "32,32,3"],
                     capture_output=True, text=True, timeout=300)
  assert r.returncode != 0 and "unknown model 'resnet21'" in r.stderr
