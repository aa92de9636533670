"""timm, the PyTorch port the feature maps are compared with, importable beside the CPU build of torch.

PyPI's torchvision wheels are built against CUDA torch: with the CPU build of torch their C++
ops do not load, and torchvision's import then fails registering the fake (meta) kernels of
`nms` and `qnms`, which it does without checking that its ops loaded. timm imports torchvision
for a few classes and never runs those ops here, so declaring the two schemas lets it import.
"""

import sys

_DECLARED = []  # The torch.library.Library that declares them must stay alive.


def import_timm():
  """Returns the `timm` module (needs timm and torch: `pip install -e '.[test]'`)."""
  import torch
  try:
    import torchvision  # noqa: F401
  except RuntimeError as e:
    if "torchvision::nms" not in str(e):
      raise
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
      del sys.modules[name]
    library = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
      library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _DECLARED.append(library)
  import timm
  return timm
