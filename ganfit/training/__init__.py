"""Training workflows and the datasets they read: checkpoints (`checkpoint`, atomic and resumable, shared with
DF-MVR's training), JSON-lines logs (`jsonl`), the texture-GAN trainer (`texture_gan`, `texture_config`), the
sliced Wasserstein distance (`swd`), sample grids (`grids`), the UV dataset builder (`uv_dataset`) and the UV
folder loader (`uv_folder`).

May import `ganfit.model`, `ganfit.render`, `ganfit.perception`, `ganfit.fitting` and `ganfit.io`; nothing
below it imports this package. Submodules are imported where used (no heavy imports here).
"""
