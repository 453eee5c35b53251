"""The parts of the pure-PyTorch rasterizer `ganfit.render.torch_backend.TorchRasterizer`, one job each.

- `triangles`: the checked triangle list in the per-corner layout every pass uses.
- `visibility`: pass 1, the z-buffer: which triangle covers each pixel (no autograd).
- `binning`: sorting the triangles' bounding boxes into the unit shapes the visibility pass evaluates.
- `barycentrics`: pass 2, perspective-correct barycentrics and depth, with an analytic backward.
- `interpolate`: blending per-vertex attributes with the barycentrics.
- `texture`: bilinear and trilinear (mip-mapped) texture sampling.
- `antialias`: analytic silhouette antialiasing (edge adjacency, silhouette pixel pairs, edge crossings).

`ganfit.render.torch_backend` holds the backend class, its settings and fragments and the input checks,
and is the entry point: the names here are internal to it, and the public helpers
(`perspective_barycentrics`, `edge_neighbours`, `mip_pyramid`) are re-exported there.
"""
