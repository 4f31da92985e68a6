"""Driving-to-subject landmark alignment for cross-identity retargeting (paper section 4.2).

The driving landmarks are rescaled to the subject's face shape (`align_face`) or body proportions
(`align_body`) with factors computed once from whole-video medians, so the driving motion is kept
and a few bad frames move nothing. docs/alignment.md gives the steps and the reasons for them.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .layouts import (
    BODY_FLIP,
    BODY_LIMBS,
    BODY_POINTS,
    FACE_POINTS,
    FACE_SLICE,
    HAND_FINGERS,
    LEFT_HAND_SLICE,
    RIGHT_HAND_SLICE,
)

__all__ = [
    "FACE_ALIGN_PARTS",
    "BODY_BONES",
    "align_face",
    "align_body",
    "part_sizes",
    "bone_lengths",
    "face_size",
]

# Face parts aligned as units: name -> (points, scaled along x and y separately).
FACE_ALIGN_PARTS: dict[str, tuple[tuple[int, ...], bool]] = {
    "jaw": (tuple(range(0, 17)), True),
    "right_brow": (tuple(range(17, 22)), False),
    "left_brow": (tuple(range(22, 27)), False),
    "nose": (tuple(range(27, 36)), True),
    "right_eye": (tuple(range(36, 42)), False),
    "left_eye": (tuple(range(42, 48)), False),
    "mouth": (tuple(range(48, 68)), False),
}
FACE_MIRROR_PARTS = (("right_brow", "left_brow"), ("right_eye", "left_eye"))
FACE_ORIGIN = 27  # top of the nose bridge: rigid, between the eyes
MIN_FRAMES = 3  # frames a statistic needs in both videos

# BODY_25 bones from the neck outwards (OpenPose's limbs are already parent -> child).
BODY_BONES: tuple[tuple[int, int], ...] = BODY_LIMBS
NECK, NOSE, MID_HIP, R_WRIST, L_WRIST = 1, 0, 8, 4, 7
ANKLES = (11, 14)
HEIGHT_BONES = ((1, 0), (1, 8), (9, 10), (10, 11), (12, 13), (13, 14))


# ----------------------------------------------------------------------------------------------
# Statistics


def _check_points(points, num_points: int, name: str) -> np.ndarray:
    """`points` as (T, num_points, 3) float64, or an InputError naming the argument."""
    array = np.asarray(points, dtype=np.float64)
    if array.ndim != 3 or array.shape[1:] != (num_points, 3) or len(array) == 0:
        raise InputError(
            f"{name} landmarks have shape {array.shape}; expected (T, {num_points}, 3) with "
            "T >= 1 (x, y in pixels, confidence)."
        )
    return array


def _rms_spread(xy: np.ndarray) -> np.ndarray:
    """(..., K, 2) points -> (...,) RMS distance of the K points from their centroid."""
    deviation = xy - xy.mean(axis=-2, keepdims=True)
    return np.sqrt(np.mean(np.sum(deviation**2, axis=-1), axis=-1))


def face_size(points: np.ndarray, min_confidence: float = 0.5) -> np.ndarray:
    """(T,) float64 RMS distance of the 68 face points from their centroid, in pixels.

    points: (T, 68, 3) float, x, y in pixels, confidence in [0, 1]. NaN in frames where any
    point's confidence is below `min_confidence`.
    """
    points = _check_points(points, FACE_POINTS, "face")
    complete = np.all(points[..., 2] >= min_confidence, axis=1)
    return np.where(complete, _rms_spread(points[..., :2]), np.nan)


def part_sizes(points: np.ndarray, min_confidence: float = 0.5) -> dict[str, np.ndarray]:
    """Per-frame size of each face part, in pixels.

    points: (T, 68, 3) float, x, y in pixels, confidence in [0, 1].
    Returns {part name: (T,) float64} for the parts of FACE_ALIGN_PARTS, "brows" and "eyes"
    (mean of the two sides: what alignment matches, see FACE_MIRROR_PARTS) and "face": the RMS
    distance of the part's points from their centroid; NaN where a point of the part has a
    confidence below `min_confidence`.
    """
    points = _check_points(points, FACE_POINTS, "face")
    sizes = {}
    for name, (indices, _) in FACE_ALIGN_PARTS.items():
        part = points[:, list(indices)]
        complete = np.all(part[..., 2] >= min_confidence, axis=1)
        sizes[name] = np.where(complete, _rms_spread(part[..., :2]), np.nan)
    for right, left in FACE_MIRROR_PARTS:  # "brows", "eyes": the mean of the two sides
        sizes[right.split("_")[1] + "s"] = (sizes[right] + sizes[left]) / 2
    sizes["face"] = face_size(points, min_confidence)
    return sizes


def bone_lengths(
    points: np.ndarray,
    min_confidence: float = 0.5,
    bones: tuple[tuple[int, int], ...] = BODY_BONES,
) -> np.ndarray:
    """(T, B) float64 length in pixels of each bone (default: the 24 BODY_25 limbs, in
    BODY_LIMBS order); NaN where either end has a confidence below `min_confidence`.

    points: (T, P, 3) float, x, y in pixels, confidence in [0, 1]; P = 135 or at least 25.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 3 or points.shape[-1] != 3:
        raise InputError(f"Body landmarks have shape {points.shape}; expected (T, P, 3).")
    parents, children = (np.asarray(ends) for ends in zip(*bones))
    vectors = points[:, children, :2] - points[:, parents, :2]  # (T, B, 2)
    confident = np.minimum(points[:, parents, 2], points[:, children, 2]) >= min_confidence
    return np.where(confident, np.linalg.norm(vectors, axis=-1), np.nan)


def _robust_median(values: np.ndarray) -> np.ndarray:
    """Median over axis 0 ignoring NaNs; NaN where fewer than MIN_FRAMES values are finite
    (fewer than all of them, for inputs shorter than MIN_FRAMES such as one photo)."""
    values = np.asarray(values, dtype=np.float64)
    enough = np.sum(np.isfinite(values), axis=0) >= min(MIN_FRAMES, len(values))
    median = np.nanmedian(np.where(enough, values, 0.0), axis=0)  # 0s: no all-NaN warnings
    return np.where(enough, median, np.nan)


def _ratio(subject_values: np.ndarray, driving_values: np.ndarray) -> np.ndarray:
    """Median subject / median driving over axis 0; 1 where either is unknown or ~0."""
    subject_median = _robust_median(subject_values)
    driving_median = _robust_median(driving_values)
    usable = np.isfinite(subject_median) & np.isfinite(driving_median) & (driving_median > 1e-6)
    return np.where(usable, subject_median / np.where(usable, driving_median, 1.0), 1.0)


# ----------------------------------------------------------------------------------------------
# Face


def _face_frame(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The face's own frame in each of (T, 68, 2) frames: origin (T, 2) at point 27 and the
    angle (T,) in radians of the line from the right eye centre to the left eye centre."""
    eye_line = xy[:, 42:48].mean(axis=1) - xy[:, 36:42].mean(axis=1)  # (T, 2)
    return xy[:, FACE_ORIGIN], np.arctan2(eye_line[:, 1], eye_line[:, 0])


def _rotate(xy: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rotate (T, K, 2) vectors by (T,) angles in radians (x right, y down: clockwise on screen)."""
    cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]  # (T, 1)
    x, y = xy[..., 0], xy[..., 1]
    return np.stack([cos * x - sin * y, sin * x + cos * y], axis=-1)


def _face_part_stats(local: np.ndarray, per_axis: bool) -> tuple[np.ndarray, np.ndarray]:
    """Statistics of one part in face-frame coordinates, (T, K, 2) with NaN rows ignored later:
    (T,) distance of its centroid from the origin, and its spread about the centroid: (T,)
    RMS distance, or (T, 2) RMS along the face's x and y axes when `per_axis`."""
    centroid = local.mean(axis=1, keepdims=True)  # (T, 1, 2)
    deviation = local - centroid
    spread = (
        np.sqrt(np.mean(deviation**2, axis=1)) if per_axis else np.sqrt(np.mean(np.sum(deviation**2, axis=-1), axis=1))
    )
    return np.linalg.norm(centroid[:, 0], axis=-1), spread


def _face_part_ratios(driving: np.ndarray, subject: np.ndarray) -> dict[str, tuple]:
    """Per part: (offset ratio, spread ratio (scalar, or (2,) for x and y)) from face-frame
    coordinates driving (T, 68, 2) and subject (S, 68, 2), NaN in incomplete frames. Mirror
    pairs (brows, eyes) share the ratio of their summed statistics, so a subject filmed from
    one side does not make the driver's face lopsided."""
    stats = {}
    for name, (indices, per_axis) in FACE_ALIGN_PARTS.items():
        stats[name] = (
            _face_part_stats(driving[:, list(indices)], per_axis),
            _face_part_stats(subject[:, list(indices)], per_axis),
        )
    for right, left in FACE_MIRROR_PARTS:
        summed = tuple(
            tuple(a + b for a, b in zip(r_side, l_side)) for r_side, l_side in zip(stats[right], stats[left])
        )  # ((driving offset, spread), (subject offset, spread)), each side's added
        stats[right] = stats[left] = summed
    return {
        name: (_ratio(s_offset, d_offset), _ratio(s_spread, d_spread))
        for name, ((d_offset, d_spread), (s_offset, s_spread)) in stats.items()
    }


def align_face(driving: np.ndarray, subject: np.ndarray, min_confidence: float = 0.5) -> np.ndarray:
    """Rescale driving face landmarks to the subject's face (module docstring, "Face").

    driving: (T, 68, 3) float, x, y in pixels of the driving frames, confidence in [0, 1].
    subject: (S, 68, 3) float, the same for the subject video (S >= 1; a photo works).
    Returns (T, 68, 3) float32 in the subject's pixel frame; confidences unchanged. Frames in
    which some driving point has confidence < min_confidence get the global transform only.
    """
    driving = _check_points(driving, FACE_POINTS, "driving")
    subject = _check_points(subject, FACE_POINTS, "subject")
    d_ok = np.all(driving[..., 2] >= min_confidence, axis=1)  # (T,) complete frames
    s_ok = np.all(subject[..., 2] >= min_confidence, axis=1)  # (S,)
    if not d_ok.any() or not s_ok.any():
        raise InputError(
            "Face alignment needs a frame with all 68 points in both the driving and the subject "
            "landmarks; detect landmarks on videos in which the face is visible."
        )
    scale = np.median(_rms_spread(subject[s_ok, :, :2])) / np.median(_rms_spread(driving[d_ok, :, :2]))
    d_origin, d_angle = _face_frame(driving[..., :2])  # (T, 2), (T,)
    s_origin, s_angle = _face_frame(subject[..., :2])
    d_local = scale * _rotate(driving[..., :2] - d_origin[:, None], -d_angle)  # (T, 68, 2)
    s_local = _rotate(subject[..., :2] - s_origin[:, None], -s_angle)  # (S, 68, 2)
    ratios = _face_part_ratios(
        np.where(d_ok[:, None, None], d_local, np.nan), np.where(s_ok[:, None, None], s_local, np.nan)
    )
    aligned = d_local.copy()
    for name, (indices, _) in FACE_ALIGN_PARTS.items():
        offset_ratio, spread_ratio = ratios[name]
        part = d_local[:, list(indices)]  # (T, K, 2)
        centroid = part.mean(axis=1, keepdims=True)  # (T, 1, 2)
        new_part = offset_ratio * centroid + spread_ratio * (part - centroid)
        aligned[:, list(indices)] = np.where(d_ok[:, None, None], new_part, part)
    # The driving's movement about its median position, scaled, around the subject's position.
    d_median = np.median(d_origin[d_ok], axis=0)
    origin = np.median(s_origin[s_ok], axis=0) + scale * (d_origin - d_median)  # (T, 2)
    out = driving.copy()
    out[..., :2] = origin[:, None] + _rotate(aligned, d_angle)
    missing = driving[..., 2] <= 0  # (T, 68) left as they were
    out[missing] = driving[missing]
    return out.astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Body


def _body_edges() -> tuple[tuple[int, int], ...]:
    """Every (parent, child) pair of the 135-point skeleton, parents first, rooted at the neck:
    BODY_25 limbs, body wrist -> hand wrist and the hand bones, nose -> each face point."""
    edges = list(BODY_BONES)
    for wrist, hand in ((L_WRIST, LEFT_HAND_SLICE), (R_WRIST, RIGHT_HAND_SLICE)):
        edges.append((wrist, hand.start))
        for finger in HAND_FINGERS:
            edges += [(hand.start + a, hand.start + b) for a, b in zip(finger[:-1], finger[1:])]
    edges += [(NOSE, face_point) for face_point in range(FACE_SLICE.start, FACE_SLICE.stop)]
    return tuple(edges)


def _body_scale(d_lengths: np.ndarray, s_lengths: np.ndarray, edges) -> float:
    """Subject height / driving height from (E,) median bone lengths (NaN = unmeasured)."""
    shared = np.isfinite(d_lengths) & np.isfinite(s_lengths)
    height = np.array([edge in HEIGHT_BONES for edge in edges]) & shared
    if not height.any():  # no spine or leg bone in both videos: any BODY_25 limb measured in both
        height = np.array([edge in BODY_BONES for edge in edges]) & shared
    if not height.any():
        raise InputError(
            "Body alignment found no BODY_25 limb measured in both the driving and the subject "
            "landmarks; detect landmarks on videos in which the person's upper body is visible."
        )
    return float(s_lengths[height].sum() / d_lengths[height].sum())


def _mirror_edges(edges) -> np.ndarray:
    """(E,) index of each edge's left/right mirror (itself for edges on the body's midline)."""
    index = {edge: e for e, edge in enumerate(edges)}
    return np.array([index[(BODY_FLIP[a], BODY_FLIP[b])] for a, b in edges])


def _edge_ratios(driving, subject, edges, d_lengths, s_lengths, min_confidence) -> np.ndarray:
    """(E,) subject / driving length ratio per edge, from (E,) median lengths (NaN = unmeasured).

    A bone and its mirror share the ratio of their summed lengths (over the sides measured in
    both videos), so a subject filmed turned to one side does not give the driver one short
    arm; the wrist links keep ratio 1; the face points take the ratio of median face sizes;
    a bone measured in neither video keeps 1 (the global scale alone).
    """
    measured = np.isfinite(d_lengths) & np.isfinite(s_lengths)
    d_known, s_known = np.where(measured, d_lengths, 0.0), np.where(measured, s_lengths, 0.0)
    mirror = _mirror_edges(edges)
    d_pair = np.where(mirror == np.arange(len(edges)), d_known, d_known + d_known[mirror])
    s_pair = np.where(mirror == np.arange(len(edges)), s_known, s_known + s_known[mirror])
    ratios = np.where(d_pair > 1e-6, s_pair / np.maximum(d_pair, 1e-6), 1.0)
    for e, (_parent, child) in enumerate(edges):
        if child in (LEFT_HAND_SLICE.start, RIGHT_HAND_SLICE.start):
            ratios[e] = 1.0  # body wrist -> hand wrist: two detectors' offset, not a bone
    face = [e for e, (_, child) in enumerate(edges) if child >= FACE_SLICE.start]
    ratios[face] = _ratio(
        face_size(subject[:, FACE_SLICE], min_confidence), face_size(driving[:, FACE_SLICE], min_confidence)
    )
    return ratios


def _rescale_tree(points, edges, ratios, lengths, min_confidence) -> np.ndarray:
    """Rescale every edge of the skeleton, keeping its direction, walking from the root.

    points: (T, P, 3); edges: parents first; ratios, lengths: (E,) per edge (lengths: the
    driving medians, NaN = unknown). A child whose parent is not confident in a frame hangs from
    its nearest confident ancestor with the length-weighted mean ratio of the path.
    Returns (T, P, 2) new positions (unchanged where no ancestor is confident).
    """
    weight = np.where(np.isfinite(lengths), lengths, 1e-3)  # unknown lengths barely count
    root = edges[0][0]
    path_length = np.zeros(points.shape[1])  # summed driving lengths from the root
    path_scaled = np.zeros(points.shape[1])  # the same, each times its ratio
    for e, (parent, child) in enumerate(edges):
        path_length[child] = path_length[parent] + weight[e]
        path_scaled[child] = path_scaled[parent] + ratios[e] * weight[e]
    old, confident = points[..., :2], points[..., 2] >= min_confidence  # (T, P, 2), (T, P)
    new = old.copy()
    frames = np.arange(len(points))
    anchor = np.full(points.shape[:2], -1)  # nearest confident ancestor-or-self, per frame
    anchor[:, root] = np.where(confident[:, root], root, -1)
    for parent, child in edges:
        source = anchor[:, parent]  # (T,)
        has = source >= 0
        src = source[has]
        ratio = (path_scaled[child] - path_scaled[src]) / (path_length[child] - path_length[src])
        bone = old[has, child] - old[frames[has], src]  # (K, 2) in this frame
        new[has, child] = new[frames[has], src] + ratio[:, None] * bone
        anchor[:, child] = np.where(confident[:, child], child, source)
    return new


def _anchor_shift(aligned: np.ndarray, subject: np.ndarray, min_confidence: float) -> np.ndarray:
    """(2,) translation taking the aligned track's median feet (else mid-hip, else neck, else
    centroid of the body points) to the subject's."""
    for joints in (ANKLES, (MID_HIP,), (NECK,), tuple(range(25))):
        medians = []
        for points in (aligned, subject):
            group = points[:, list(joints)]
            complete = np.all(group[..., 2] >= min_confidence, axis=1)
            enough = complete.sum() >= min(MIN_FRAMES, len(points))
            centres = group[complete, :, :2].mean(axis=1)  # (K, 2)
            medians.append(np.median(centres, axis=0) if enough else None)
        if medians[0] is not None and medians[1] is not None:
            return medians[1] - medians[0]
    return np.zeros(2)


def align_body(driving: np.ndarray, subject: np.ndarray, min_confidence: float = 0.5) -> np.ndarray:
    """Rescale driving body landmarks to the subject's proportions (module docstring, "Body").

    driving: (T, 135, 3) float, x, y in pixels of the driving frames, confidence in [0, 1].
    subject: (S, 135, 3) float, the same for the subject video (S >= 1; a photo works).
    Returns (T, 135, 3) float32 in the subject's pixel frame; confidences unchanged.
    """
    driving = _check_points(driving, BODY_POINTS, "driving")
    subject = _check_points(subject, BODY_POINTS, "subject")
    edges = _body_edges()
    d_lengths = _robust_median(bone_lengths(driving, min_confidence, edges))  # (E,)
    s_lengths = _robust_median(bone_lengths(subject, min_confidence, edges))
    scale = _body_scale(d_lengths, s_lengths, edges)
    scaled = driving.copy()
    scaled[..., :2] *= scale
    ratios = _edge_ratios(scaled, subject, edges, scale * d_lengths, s_lengths, min_confidence)
    out = scaled.copy()
    out[..., :2] = _rescale_tree(scaled, edges, ratios, scale * d_lengths, min_confidence)
    out[..., :2] += _anchor_shift(out, subject, min_confidence)
    missing = driving[..., 2] <= 0  # (T, 135) left as they were
    out[missing] = driving[missing]
    return out.astype(np.float32)
