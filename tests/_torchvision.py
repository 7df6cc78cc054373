"""`torchvision` for the tests, importable beside the CPU build of torch.

Why the stub: the torchvision==0.28.0 wheel pip installs (with --no-deps, beside torch==2.13.0+cpu) is a CUDA
build; importing it runs `torchvision._meta_registrations`, which registers fake kernels for its C++ operators
and fails with `RuntimeError: operator torchvision::nms does not exist`. An empty module in its place lets
`import torchvision` succeed; the classification models never call those operators (`torchvision.ops` stays
broken, and no test uses it). Import torchvision only from here, so the workaround lives in one place.
"""
import sys
import types

sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))

import torchvision  # noqa: E402

models = torchvision.models
