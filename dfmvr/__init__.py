"""DF-MVR: multi-view 3D face regression with deep fusion, trained here as the Fitter's learned initializer.

Zhao et al. 2022, "From 2D Images to 3D Model: Weakly Supervised Multi-View Face Reconstruction with Deep
Fusion". This package imports `ganfit.model` and `ganfit.render`; `ganfit` never imports it.

- `dfmvr.involution`: Involution (Li et al., CVPR 2021) in plain PyTorch.
- `dfmvr.network`: `DFMVRConfig`, `DFMVRNet` (MulEn-Unet encoder/fusion/decoder + RedNet-style head), `DFMVROutput`.
- `dfmvr.synthetic`: `SyntheticConfig`, `SyntheticFaces`, `MultiViewBatch` (rendered multi-view samples).
- `dfmvr.train`: `TrainConfig`, `DFMVRTrainer` (resumable training on the synthetic data).

Submodules are imported on use (``from dfmvr.network import DFMVRNet``) so that ``import dfmvr`` stays light.
"""
from __future__ import annotations

__all__: list[str] = []
