"""The joint stage's energy: named terms of GANFit (Gecer et al., CVPR 2019, eq. 2-7) for the current
variables, each a (B,) tensor, differentiable in the variables.

    identity      1 - cos(F(photo), F(render over photo))          eq. 3, F: the identity network's embedding
    identity_hat  1 - cos(F(photo), F(render at a random pose))     sec. 3.5 (id-hat)
    content       sum_n ||F_n(photo) - F_n(render over photo)||^2 / |F_n|   eq. 4
    pixel         trimmed L1 over the visible face skin             eq. 5 (`joint_terms.robust_pixel_loss`)
    landmark      the landmark stage's term, same units             eq. 5 (`losses.landmark_loss`)
    shape_prior, expression_prior   0.5 ||c||^2 in std units        eq. 6
    lighting_prior  SH around the reference light + colour gain/offset around identity
    latent_prior  the texture model's own `latent_prior`            eq. 7

Renders are composited over the photo (the id-hat's over grey) with the mesh's holes (the open mouth, nostrils,
ear canals) painted a dark cavity colour (`joint_terms.fill_holes`), so no photo pixel shows through the face;
the pixel term compares only the covered skin, not the unmodelled cavities.
Both images the identity network sees are aligned with the photo's landmarks (the same differentiable dlib
chip), so only the pixels differ. The id-hat render uses the projected landmarks of its own pose.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from ...render.camera import matrix_to_axis_angle, project_points, rotation_matrix, transform_points
from ..losses import content_loss, face_size, gaussian_prior, identity_loss, landmark_loss, reprojection_error
from ..params import FitParams
from .joint_terms import (CAVITY_COLOUR, FaceCrop, colour_prior, composite, crop_images, face_crop, fill_holes,
                          lighting_prior, random_lighting, random_pose, robust_pixel_loss)

__all__ = ["JointEnergy", "JointTargets", "JointVariables", "TERMS", "embed_and_features"]

#: the energy's terms, in the order of the history
TERMS = ("identity", "identity_hat", "content", "pixel", "landmark", "shape_prior", "expression_prior",
         "lighting_prior", "latent_prior")
IDENTITY_TERMS = ("identity", "identity_hat", "content")


@dataclass
class JointVariables:
    """What the joint stage optimises, per image.

    latent: (B, D) texture latent; lighting: (B, 9, 3) SH radiance; gain, offset: (B, 3) the camera's colour
    transform (render' = gain * render + offset on the face); shape: (B, Ks), expression: (B, Ke) std units;
    rotation: (B, 3) axis-angle; translation: (B, 3) mm.
    """

    latent: torch.Tensor
    lighting: torch.Tensor
    gain: torch.Tensor
    offset: torch.Tensor
    shape: torch.Tensor
    expression: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor

    def items(self) -> list[tuple[str, torch.Tensor]]:
        return [(f.name, getattr(self, f.name)) for f in fields(self)]

    def detached(self) -> "JointVariables":
        return JointVariables(**{k: v.detach().clone() for k, v in self.items()})

    def select(self, keep: torch.Tensor, other: "JointVariables") -> "JointVariables":
        """Per image: this one's values where keep (B,) is True, else other's."""
        def pick(a, b):
            return torch.where(keep.view(-1, *([1] * (a.ndim - 1))), a, b)
        return JointVariables(**{k: pick(v, getattr(other, k)) for k, v in self.items()})


@dataclass(frozen=True)
class JointTargets:
    """The per-run data the terms compare against (built once by `JointEnergy.prepare`).

    photo: (B, 3, R, R) the photos' face crops; crop: the `FaceCrop`; landmarks: (B, 68, 2) image pixels;
    crop_landmarks: the same in crop pixels; weights: (68,) or (B, 68) landmark weights; scale: (B,) landmark
    error std in pixels; vertex_ids: (B, 68) model vertex of each landmark; focal: (B,), principal: (B, 2)
    the image's camera; embedding: (B, D) or None; features: the photo's feature maps or None;
    reference_light: (B, 9, 3) centre of the lighting prior. sliding_jaw: the 17 jaw-line landmarks follow
    the face's outline as the pose changes (2d landmarks: `contour`), else they stay on `vertex_ids`.
    """

    photo: torch.Tensor
    crop: FaceCrop
    landmarks: torch.Tensor
    crop_landmarks: torch.Tensor
    weights: torch.Tensor
    scale: torch.Tensor
    vertex_ids: torch.Tensor
    focal: torch.Tensor
    principal: torch.Tensor
    embedding: torch.Tensor | None
    features: list[torch.Tensor] | None
    reference_light: torch.Tensor
    sliding_jaw: bool = False


def embed_and_features(net, images: torch.Tensor, landmarks: torch.Tensor, with_features: bool):
    """(embedding (B, D), feature maps or None) in one pass of the network when it offers that."""
    if with_features and hasattr(net, "embed_and_features"):
        return net.embed_and_features(images, landmarks)
    emb = net.embed(images, landmarks)
    return emb, (net.features(images, landmarks) if with_features else None)


class JointEnergy:
    """The terms of the joint stage for one face model, renderer (at the crop's resolution), identity network
    (None: no identity, id-hat or content terms) and texture model.

    Args (the options of `JointStageConfig` that shape the terms):
        content_layers: indices of the identity network's feature maps in the content term.
        pixel_regions: model regions whose coverage masks the pixel term (missing ones are ignored; with
            none, the face's coverage); pixel_keep: trimmed fraction of the pixel term.
        lighting_sigma, gain_sigma, offset_sigma: stds of the lighting and colour priors.
        id_hat_yaw, id_hat_pitch (degrees), id_hat_expression (std units), id_hat_light (directional strength):
            the id-hat sampler.
        id_hat_renderer: a `Renderer` of the model for the id-hat render (its own, smaller, square image: the
            identity network sees a 150 px chip); default `renderer`.
        hole_colour: the colour the render's enclosed holes (the mesh's open mouth, nostrils, ear canals) are
            painted before compositing (`joint_terms.fill_holes`); None: the background shows through them
            (the behaviour before issue 11's benchmark found the photo's mouth leaking into the identity terms).
    """

    def __init__(self, model, renderer, identity_net, texture_model, *, content_layers=(1, 2, 3),
                 pixel_regions=("face",), pixel_keep: float = 0.9, lighting_sigma: float = 0.3,
                 gain_sigma: float = 0.1, offset_sigma: float = 0.05, id_hat_yaw: float = 30.0,
                 id_hat_pitch: float = 15.0, id_hat_expression: float = 0.7, id_hat_light: float = 0.5,
                 id_hat_background: float = 0.5, id_hat_renderer=None,
                 hole_colour: tuple[float, float, float] | None = CAVITY_COLOUR) -> None:
        self.model, self.renderer, self.identity_net, self.texture_model = model, renderer, identity_net, texture_model
        self.id_hat_renderer = renderer if id_hat_renderer is None else id_hat_renderer
        self.content_layers = tuple(content_layers)
        self.pixel_regions = tuple(r for r in pixel_regions if r in model.regions)
        self.pixel_keep = pixel_keep
        self.lighting_sigma, self.gain_sigma, self.offset_sigma = lighting_sigma, gain_sigma, offset_sigma
        self.id_hat_yaw, self.id_hat_pitch = id_hat_yaw, id_hat_pitch
        self.id_hat_expression, self.id_hat_light = id_hat_expression, id_hat_light
        self.id_hat_background = id_hat_background
        self.hole_colour = None if hole_colour is None else tuple(float(c) for c in hole_colour)
        self._contour = None  # the jaw line's outline candidates, built on first use (`_jaw_on_outline`)

    # ------------------------------------------------------------------ per run
    def prepare(self, images: torch.Tensor, landmarks: torch.Tensor, params: FitParams, vertex_ids: torch.Tensor,
                weights: torch.Tensor, landmark_sigma: float, reference_light: torch.Tensor,
                crop_margin: float, with_features: bool, sliding_jaw: bool = False) -> JointTargets:
        """images (B, 3, H, W) in [0, 1]; landmarks (B, 68, 2) pixels; vertex_ids (B, 68); sliding_jaw: the
        jaw-line landmarks re-chosen on the outline at every evaluation (2d landmarks)."""
        res = self.renderer.image_size[0]
        crop = face_crop(landmarks, res, crop_margin)
        photo = crop_images(images, crop)
        crop_lm = crop.points(landmarks)
        emb = feats = None
        if self.identity_net is not None:
            with torch.no_grad():
                emb, feats = embed_and_features(self.identity_net, photo, crop_lm, with_features)
            feats = None if feats is None else [f.detach() for f in feats]
        return JointTargets(photo=photo, crop=crop, landmarks=landmarks, crop_landmarks=crop_lm, weights=weights,
                            scale=landmark_sigma * face_size(landmarks), vertex_ids=vertex_ids, focal=params.focal,
                            principal=params.principal, embedding=emb, features=feats, reference_light=reference_light,
                            sliding_jaw=sliding_jaw)

    def crop_params(self, v: JointVariables, t: JointTargets) -> FitParams:
        """The variables' camera in the crop."""
        return FitParams(v.shape, v.expression, v.rotation, v.translation, t.focal * t.crop.scale,
                         (t.principal - t.crop.origin) * t.crop.scale[:, None])

    def render(self, v: JointVariables, t: JointTargets, vertices: torch.Tensor | None = None,
               texture: torch.Tensor | None = None):
        """(coloured render (B, 3, R, R) premultiplied, RenderOutput) of the variables in the crop (vertices
        (B, V, 3) and texture (B, 3, Hu, Wu) when the caller has them)."""
        if vertices is None:
            vertices = self.model.vertices(v.shape, v.expression)
        if texture is None:
            texture = self.texture_model.decode(v.latent)
        out = self.renderer.render(self.crop_params(v, t), texture=texture, lighting=v.lighting,
                                   regions=self.pixel_regions or False, vertices=vertices)
        img = out.image.permute(0, 3, 1, 2)
        img = img * v.gain[:, :, None, None] + v.offset[:, :, None, None] * out.alpha[:, None]
        return img, out

    def over(self, img: torch.Tensor, out, background) -> torch.Tensor:
        """The render `img` (B, 3, R, R) premultiplied, of `RenderOutput` out, over `background` ((B, 3, R, R),
        broadcastable or a number), its enclosed holes painted `hole_colour` (unless None)."""
        if self.hole_colour is not None:
            background = fill_holes(background, out.mask, self.hole_colour)
        return composite(img, out.alpha, background)

    def pixel_mask(self, out) -> torch.Tensor:
        """(B, R, R) detached: covered pixels of the pixel regions (all covered pixels without regions)."""
        mask = (out.alpha.detach() > 0.5).to(out.alpha.dtype)
        for name in self.pixel_regions:
            mask = mask * (out.regions[name].detach() > 0.5).to(mask.dtype)
        return mask

    def landmarks(self, v: JointVariables, t: JointTargets, vertices: torch.Tensor) -> torch.Tensor:
        """(B, 68, 2) projected landmark vertices, image pixels. With `t.sliding_jaw` the jaw-line points are
        the candidates on the image outline at this pose (Zhu et al. CVPR 2015, as the landmark stage), the
        choice made without gradient (the energy is piecewise smooth in it)."""
        rot = rotation_matrix(v.rotation)
        ids = t.vertex_ids
        if t.sliding_jaw:
            ids = self._jaw_on_outline(vertices, rot, v.translation, t)
        pts = vertices.gather(1, ids[..., None].expand(-1, -1, 3))
        cam = transform_points(pts, rot, v.translation)
        return project_points(cam, t.focal, t.principal)

    def _jaw_on_outline(self, vertices, rot, translation, t: JointTargets) -> torch.Tensor:
        """(B, N) `t.vertex_ids` with the contour (jaw-line) points moved to the outline candidates of this pose."""
        from ..contour import build_contour_candidates, select_contour

        if self._contour is None:
            cands = build_contour_candidates(self.model)
            self._contour = (torch.as_tensor(cands.indices), torch.as_tensor(cands.sides), list(cands.points))
        idx, sides = (x.to(vertices.device) for x in self._contour[:2])
        points = self._contour[2]
        b = vertices.shape[0]
        with torch.no_grad():
            cand = vertices.detach()[:, idx.reshape(-1)]
            proj = project_points(transform_points(cand, rot.detach(), translation.detach()), t.focal, t.principal)
            choice = select_contour(proj.view(b, *idx.shape, 2), rot.detach(), sides)
        ids = t.vertex_ids.clone()
        ids[:, points] = idx[None].expand(b, -1, -1).gather(2, choice[..., None])[..., 0]
        return ids

    def terms(self, v: JointVariables, t: JointTargets, generator: torch.Generator,
              weights: dict[str, float] | None = None) -> dict[str, torch.Tensor]:
        """Named (B,) terms at `v` (see the module docstring), plus ``reprojection_px`` (mean landmark distance,
        not part of the energy). Terms whose weight in `weights` is 0 are not computed (reported as 0), and the
        identity terms need an identity network; the id-hat sampler draws from `generator` only when it runs."""
        w = weights or {}
        on = lambda k: w.get(k, 1.0) != 0  # noqa: E731
        zero = v.shape.new_zeros(v.shape.shape[0])
        out: dict[str, torch.Tensor] = {k: zero for k in TERMS}
        vertices = self.model.vertices(v.shape, v.expression)
        texture = self.texture_model.decode(v.latent)
        img, rend = self.render(v, t, vertices, texture)
        comp = self.over(img, rend, t.photo)
        if on("pixel"):
            out["pixel"] = robust_pixel_loss(comp, t.photo, self.pixel_mask(rend), self.pixel_keep)
        net = self.identity_net
        if net is not None and (on("identity") or on("content")):
            emb, feats = embed_and_features(net, comp, t.crop_landmarks, on("content") and t.features is not None)
            if on("identity"):
                out["identity"] = identity_loss(emb, t.embedding)
            if feats is not None:
                out["content"] = content_loss(feats, t.features, self.content_layers)
        if net is not None and on("identity_hat"):
            out["identity_hat"] = self.identity_hat(v, t, generator, texture)
        proj = self.landmarks(v, t, vertices)
        out["landmark"] = landmark_loss(proj, t.landmarks, t.weights, t.scale)
        out["shape_prior"] = gaussian_prior(v.shape)  # the landmark stage's terms of the same names
        out["expression_prior"] = gaussian_prior(v.expression)
        out["lighting_prior"] = (lighting_prior(v.lighting, t.reference_light, self.lighting_sigma)
                                 + colour_prior(v.gain, v.offset, self.gain_sigma, self.offset_sigma))
        out["latent_prior"] = self.texture_model.latent_prior(v.latent)
        out["reprojection_px"] = reprojection_error(proj.detach(), t.landmarks)
        return out

    def identity_hat(self, v: JointVariables, t: JointTargets, generator: torch.Generator,
                     texture: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) id-hat term: the same shape and texture at a random pose, expression and light (drawn from
        `generator`), against the photo's embedding. The face is placed at the fitted depth, centred in the crop."""
        b, dt, dev = v.shape.shape[0], v.shape.dtype, v.shape.device
        rot = random_pose(b, self.id_hat_yaw, self.id_hat_pitch, generator, dt, dev)
        expr = torch.randn(v.expression.shape, generator=generator, dtype=torch.float64).to(dev, dt) * self.id_hat_expression
        light = random_lighting(b, generator, directional=self.id_hat_light, dtype=dt, device=dev)
        vertices = self.model.vertices(v.shape, expr)
        centre = vertices.detach().gather(1, t.vertex_ids[..., None].expand(-1, -1, 3)).mean(1)  # (B, 3)
        depth = v.translation.detach()[:, 2:3]
        trans = torch.cat([torch.zeros_like(depth), torch.zeros_like(depth), depth], -1) - (rot @ centre[..., None])[..., 0]
        res = self.id_hat_renderer.image_size[0]
        zoom = res / self.renderer.image_size[0]  # the face as large in its image as in the crop
        params = FitParams(v.shape, expr, matrix_to_axis_angle(rot), trans, t.focal * t.crop.scale * zoom,
                           torch.full_like(t.principal, res / 2.0))
        rend = self.id_hat_renderer.render(params, texture=self.texture_model.decode(v.latent) if texture is None else texture, lighting=light,
                                    regions=False, vertices=vertices)
        img = self.over(rend.image.permute(0, 3, 1, 2), rend, self.id_hat_background)
        pts = transform_points(vertices.detach().gather(1, t.vertex_ids[..., None].expand(-1, -1, 3)), rot, trans)
        lms = project_points(pts, params.focal, params.principal)
        return identity_loss(self.identity_net.embed(img, lms), t.embedding)

