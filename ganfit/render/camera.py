"""Pinhole camera and rotations: pure tensor functions.

Conventions (DESIGN.md): the model faces +z with y up; the camera sits at the origin looking down -z with
y up in camera space. Image coordinates have x right, y down, and the origin at the top-left corner of
the top-left pixel, so the principal point of a W x H image is (W/2, H/2). A camera-space point
(x, y, z), z < 0, projects to

    u = cx + f * x / (-z),        v = cy - f * y / (-z).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula, smooth at zero angle.

    Args:
        axis_angle: (..., 3) rotation vectors (axis * angle in radians).
    Returns:
        (..., 3, 3) rotation matrices.
    """
    if axis_angle.shape[-1] != 3:
        raise ValueError(f"axis-angle must be (..., 3), got {tuple(axis_angle.shape)}")
    theta2 = (axis_angle * axis_angle).sum(-1, keepdim=True)[..., None]  # (..., 1, 1)
    small = theta2 < 1e-8
    safe2 = torch.where(small, torch.ones_like(theta2), theta2)
    theta = safe2.sqrt()
    # sin(t)/t and (1 - cos t)/t^2 with their Taylor series near zero.
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / safe2)
    x, y, z = axis_angle.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*axis_angle.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device).expand_as(k)
    return eye + a * k + b * (k @ k)


def axis_angle_jacobian(axis_angle: torch.Tensor, rotation: torch.Tensor | None = None) -> torch.Tensor:
    """Derivative of `axis_angle_to_matrix`, in closed form (Gallego & Yezzi, "A compact formula for the
    derivative of a 3-D rotation in exponential coordinates", JMIV 2015):

        dR/dv_i = (v_i [v]x + [v x ((I - R) e_i)]x) R / |v|^2,      dR/dv_i = [e_i]x at v = 0.

    Args:
        axis_angle: (B, 3).
        rotation: (B, 3, 3) `axis_angle_to_matrix(axis_angle)` when the caller has it.
    Returns:
        (B, 3, 3, 3): [..., i] is dR/dv_i.
    """
    b = axis_angle.shape[0]
    dt, dev = axis_angle.dtype, axis_angle.device
    rot = axis_angle_to_matrix(axis_angle) if rotation is None else rotation
    eye = torch.eye(3, dtype=dt, device=dev)
    theta2 = (axis_angle * axis_angle).sum(-1)  # (B,)
    small = theta2 < 1e-12

    def skew(w: torch.Tensor) -> torch.Tensor:  # (..., 3) -> (..., 3, 3)
        x, y, z = w.unbind(-1)
        zero = torch.zeros_like(x)
        return torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*w.shape[:-1], 3, 3)

    vx = skew(axis_angle)  # (B, 3, 3)
    i_minus_r = eye - rot  # (B, 3, 3); column i is (I - R) e_i
    cross = torch.cross(axis_angle[:, :, None].expand(b, 3, 3), i_minus_r, dim=1)  # (B, 3, 3): column i
    terms = axis_angle[:, None, None, :] * vx[..., None] + skew(cross.transpose(1, 2)).permute(0, 2, 3, 1)
    safe = torch.where(small, torch.ones_like(theta2), theta2)
    general = torch.einsum("bjki,bkl->bjli", terms, rot) / safe[:, None, None, None]
    at_zero = skew(eye).permute(1, 2, 0)[None].expand(b, 3, 3, 3)
    return torch.where(small[:, None, None, None], at_zero, general)


def matrix_to_axis_angle(matrix: torch.Tensor) -> torch.Tensor:
    """Inverse of `axis_angle_to_matrix` for angles in [0, pi).

    Args:
        matrix: (..., 3, 3) rotation matrices.
    Returns:
        (..., 3) rotation vectors.
    """
    cos = ((matrix.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) * 0.5).clamp(-1.0, 1.0)
    theta = torch.acos(cos)
    vee = torch.stack(
        [matrix[..., 2, 1] - matrix[..., 1, 2], matrix[..., 0, 2] - matrix[..., 2, 0], matrix[..., 1, 0] - matrix[..., 0, 1]],
        dim=-1,
    )
    sin = torch.sin(theta)
    scale = torch.where(sin.abs() < 1e-6, 0.5 + theta**2 / 12.0, theta / (2.0 * sin.clamp_min(1e-12)))
    return vee * scale[..., None]


def rotation_6d_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """The continuous 6D rotation representation (Zhou et al., CVPR 2019): Gram-Schmidt on two columns.

    Args:
        d6: (..., 6) the first two columns of the rotation matrix, concatenated.
    Returns:
        (..., 3, 3) rotation matrices.
    """
    if d6.shape[-1] != 6:
        raise ValueError(f"6D rotation must be (..., 6), got {tuple(d6.shape)}")
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = torch.nn.functional.normalize(a1, dim=-1)
    b2 = torch.nn.functional.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def matrix_to_rotation_6d(matrix: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 6): the first two columns."""
    return torch.cat([matrix[..., :, 0], matrix[..., :, 1]], dim=-1)


def rotation_matrix(rotation: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis-angle or (..., 6) 6D rotation -> (..., 3, 3), chosen by the last dimension."""
    if rotation.shape[-1] == 3:
        return axis_angle_to_matrix(rotation)
    if rotation.shape[-1] == 6:
        return rotation_6d_to_matrix(rotation)
    raise ValueError(f"rotation must be (..., 3) axis-angle or (..., 6) 6D, got {tuple(rotation.shape)}")


def euler_from_matrix(matrix: torch.Tensor) -> torch.Tensor:
    """Yaw, pitch, roll in degrees of a model-to-camera rotation R = Ry(yaw) Rx(pitch) Rz(roll).

    Args:
        matrix: (..., 3, 3).
    Returns:
        (..., 3) yaw (about y), pitch (about x), roll (about z) in degrees.
    """
    pitch = torch.asin((-matrix[..., 1, 2]).clamp(-1.0, 1.0))
    yaw = torch.atan2(matrix[..., 0, 2], matrix[..., 2, 2])
    roll = torch.atan2(matrix[..., 1, 0], matrix[..., 1, 1])
    return torch.rad2deg(torch.stack([yaw, pitch, roll], dim=-1))


def matrix_from_euler(yaw_pitch_roll_deg: torch.Tensor) -> torch.Tensor:
    """Inverse of `euler_from_matrix`: (..., 3) degrees -> (..., 3, 3) = Ry(yaw) Rx(pitch) Rz(roll)."""
    y, p, r = torch.deg2rad(yaw_pitch_roll_deg).unbind(-1)
    one, zero = torch.ones_like(y), torch.zeros_like(y)
    ry = torch.stack([y.cos(), zero, y.sin(), zero, one, zero, -y.sin(), zero, y.cos()], -1).reshape(*y.shape, 3, 3)
    rx = torch.stack([one, zero, zero, zero, p.cos(), -p.sin(), zero, p.sin(), p.cos()], -1).reshape(*y.shape, 3, 3)
    rz = torch.stack([r.cos(), -r.sin(), zero, r.sin(), r.cos(), zero, zero, zero, one], -1).reshape(*y.shape, 3, 3)
    return ry @ rx @ rz


def transform_points(points: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """Model to camera space: R p + t.

    Args:
        points: (B, N, 3); rotation: (B, 3, 3); translation: (B, 3).
    Returns:
        (B, N, 3).
    """
    return points @ rotation.transpose(-1, -2) + translation[..., None, :]


def project_points(points_camera: torch.Tensor, focal: torch.Tensor, principal: torch.Tensor) -> torch.Tensor:
    """Perspective projection of camera-space points (camera looks down -z).

    Args:
        points_camera: (B, N, 3) with z < 0 in front of the camera.
        focal: (B,) focal length in pixels.
        principal: (B, 2) principal point (cx, cy) in pixels.
    Returns:
        (B, N, 2) pixel coordinates (x right, y down).
    """
    depth = (-points_camera[..., 2]).clamp_min(1e-6)
    f = focal[..., None]
    u = principal[..., 0:1] + f * points_camera[..., 0] / depth
    v = principal[..., 1:2] - f * points_camera[..., 1] / depth
    return torch.stack([u, v], dim=-1)


@dataclass(frozen=True)
class PinholeCamera:
    """A pinhole camera for one or more images: focal (B,) px, principal (B, 2) px, image sizes (B, 2) as (W, H)."""

    focal: torch.Tensor
    principal: torch.Tensor
    image_size: torch.Tensor

    def project(self, points_camera: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) camera-space points -> (B, N, 2) pixels."""
        return project_points(points_camera, self.focal, self.principal)

    def field_of_view_deg(self) -> torch.Tensor:
        """(B,) horizontal field of view in degrees."""
        return torch.rad2deg(2.0 * torch.atan(self.image_size[:, 0] / (2.0 * self.focal)))

    def to_dict(self, index: int) -> dict:
        return {
            "model": "pinhole",
            "focal_px": float(self.focal[index]),
            "principal_px": [float(x) for x in self.principal[index]],
            "image_size": [int(x) for x in self.image_size[index]],
            "fov_deg": float(self.field_of_view_deg()[index]),
            "convention": "camera at origin looking down -z, y up; pixels x right, y down",
        }


def clip_from_camera(
    points_camera: torch.Tensor,
    focal: torch.Tensor,
    principal: torch.Tensor,
    image_size: tuple[int, int],
    near: float = 10.0,
    far: float = 10000.0,
) -> torch.Tensor:
    """Camera-space points to OpenGL clip space (what rasterizers take), consistent with `project_points`.

    x_ndc = 2u/W - 1 (left to right), y_ndc = 1 - 2v/H (bottom to top), z_ndc in [-1, 1] from `near` to
    `far` (millimetres in front of the camera), w = -z. So a point projecting to pixel (u, v) lands at
    the same place in the rasterized image, whose row 0 is the TOP of the image.

    Args:
        points_camera: (B, N, 3); focal: (B,) px; principal: (B, 2) px; image_size: (W, H).
    Returns:
        (B, N, 4) clip coordinates.
    """
    w_img, h_img = image_size
    x, y, z = points_camera.unbind(-1)
    w = -z
    f = focal[:, None]
    cx, cy = principal[:, 0:1], principal[:, 1:2]
    x_clip = (2.0 * f / w_img) * x + (2.0 * cx / w_img - 1.0) * w
    y_clip = (2.0 * f / h_img) * y + (1.0 - 2.0 * cy / h_img) * w
    z_clip = -(far + near) / (far - near) * z - 2.0 * far * near / (far - near)
    return torch.stack([x_clip, y_clip, z_clip, w], dim=-1)
