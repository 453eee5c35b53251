"""The joint stage's optimisation loop (`JointStage.run`): evaluation of the terms, the history, the NaN guard
(roll back to the last finite state, halve the learning rates), the plateau stop and the landmark guard (keep
the last state within the landmark margin)."""
from __future__ import annotations

import math

import torch

from .joint_energy import TERMS, JointTargets, JointVariables
from .joint_terms import truncate_latent
from .joint_tie import SubjectTie

__all__ = ["JointLoop"]

#: the geometry variables, frozen during the warm-up
GEOMETRY = ("shape", "expression", "rotation", "translation")


class JointLoop:
    """One run's optimisation loop: evaluation, history, the NaN guard, the plateau stop, the landmark guard."""

    def __init__(self, stage, targets: JointTargets, generator, weights, progress,
                 tie: SubjectTie | None = None) -> None:
        self.stage, self.t, self.generator, self.weights, self.progress = stage, targets, generator, weights, progress
        self.tie = tie
        self.history: list[dict[str, list[float]]] = []
        self.warnings: list[str] = []
        self.lr_scale = 1.0
        self.start_px: torch.Tensor | None = None
        self.within: JointVariables | None = None  # last state within the landmark margin, per image
        self.last_id_hat: torch.Tensor | None = None  # the id-hat term's last value (kept between its renders)

    def evaluate(self, v: JointVariables, with_id_hat: bool = True, reuse_id_hat: bool = False) -> dict[str, torch.Tensor]:
        """The terms and their weighted ``total``. reuse_id_hat: no id-hat render; its last value (a constant)
        stands in for it in the history and the total, so the total stays comparable between iterations."""
        w = dict(self.weights)
        if not with_id_hat or reuse_id_hat:
            w["identity_hat"] = 0.0
        terms = self.stage.energy.terms(v, self.t, self.generator, w)
        if reuse_id_hat and self.last_id_hat is not None and self.weights["identity_hat"]:
            terms["identity_hat"] = self.last_id_hat
            w["identity_hat"] = self.weights["identity_hat"]
        elif with_id_hat and self.weights["identity_hat"]:
            self.last_id_hat = terms["identity_hat"].detach()
        terms["total"] = sum(w[k] * terms[k] for k in TERMS if w[k])
        return terms

    def record(self, v: JointVariables, terms: dict[str, torch.Tensor], lr_scale: float) -> None:
        entry = {k: [float(x) for x in t.detach().cpu()] for k, t in terms.items()}
        entry["lr_scale"] = [lr_scale] * v.shape.shape[0]
        self.history.append(entry)
        if self.progress is not None:
            self.progress(len(self.history) - 1, {k: t.detach() for k, t in terms.items()})

    def optimise(self, leaves: dict[str, torch.Tensor], opt, c):
        v = JointVariables(**leaves)
        last_good = v.detached()
        best, since_best, rollbacks, reason, steps = math.inf, 0, 0, "iteration_limit", 0
        for it in range(c.iterations):
            geometry_free = it >= c.warmup_iterations
            for k in GEOMETRY:
                leaves[k].requires_grad_(geometry_free)
            opt.zero_grad(set_to_none=True)
            terms = self.evaluate(v, reuse_id_hat=it % c.id_hat_every != 0)
            total = terms["total"]
            ok = bool(torch.isfinite(total).all())
            if ok:
                total.sum().backward()
                ok = all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in leaves.values())
                if ok and self.tie is not None:
                    self.tie.tie_gradients(leaves)
            if not ok:
                rollbacks += 1
                self.lr_scale *= 0.5
                self.warnings.append(f"joint stage: non-finite loss or gradient at iteration {it}; rolled back to the "
                                     f"last finite state, learning rates x{self.lr_scale:g}")
                with torch.no_grad():
                    for k, p in leaves.items():
                        p.copy_(getattr(last_good, k))
                opt.state.clear()
                for g in opt.param_groups:
                    g["lr"] *= 0.5
                if rollbacks > c.max_rollbacks:
                    reason = "diverged"
                    self.warnings.append(f"joint stage: gave up after {rollbacks} non-finite steps; kept the last finite state")
                    break
                continue
            last_good = v.detached()
            self.record(v, terms, self.lr_scale)
            px = terms["reprojection_px"]
            if self.start_px is None:
                self.start_px = px.clone()
                self.within = last_good
            else:
                self.within = last_good.select(self._per_subject(px <= self._limit()), self.within)
            if c.grad_clip > 0:
                for p in leaves.values():
                    if p.grad is not None:
                        torch.nn.utils.clip_grad_norm_([p], c.grad_clip)
            opt.step()
            steps += 1
            with torch.no_grad():
                leaves["latent"].copy_(truncate_latent(leaves["latent"], c.latent_truncation))
            det = float((total - self.weights["identity_hat"] * terms["identity_hat"]).detach().sum())
            if det < best - c.plateau_tolerance * abs(best) or not math.isfinite(best):
                best, since_best = det, 0
            else:
                since_best += 1
            if c.plateau_patience and geometry_free and since_best >= c.plateau_patience:
                reason = "plateau"
                break
        with torch.no_grad():
            final = JointVariables(**leaves).detached()
            if reason == "diverged":
                final = last_good
            terms = self.evaluate(final, with_id_hat=False)
            if not all(bool(torch.isfinite(terms[k]).all()) for k in ("total", "reprojection_px")):
                final = last_good
        return final, reason, steps

    def _per_subject(self, ok: torch.Tensor) -> torch.Tensor:
        """Tied photos move together: a subject's photos are kept or reverted together."""
        return ok if self.tie is None else self.tie.all_of_subject(ok)

    def _limit(self) -> torch.Tensor:
        c = self.stage.config
        return self.start_px * (1 + c.landmark_margin) + c.landmark_margin_px

    def landmark_guard(self, final: JointVariables) -> tuple[JointVariables, list[list[str]]]:
        """The final state, or per image the last state within the landmark margin when the final one is not."""
        b = final.shape.shape[0]
        if self.start_px is None:
            return final, [[] for _ in range(b)]
        with torch.no_grad():
            px = self.stage.energy.terms(final, self.t, self.generator, {k: 0.0 for k in TERMS})["reprojection_px"]
        ok = self._per_subject(px <= self._limit())
        out = final.select(ok, self.within)
        warnings = [[] if bool(ok[i]) else [
            f"joint stage: landmark error rose from {float(self.start_px[i]):.2f} to {float(px[i]):.2f} px (margin "
            f"{float(self._limit()[i]):.2f} px); kept the last state within the margin"] for i in range(b)]
        return out, warnings
