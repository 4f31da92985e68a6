"""Driving-to-subject alignment (tsnet_hf.alignment): synthetic faces and skeletons everywhere;
real subject/driving pairs from ../shared (marked `shared`; the landmarks come from the
session cache that tests/test_landmarks.py fills, so they cost nothing extra when both run).
"""

import math

import numpy as np
import pytest

from tsnet_hf import layouts
from tsnet_hf.alignment import (
    BODY_BONES,
    align_body,
    align_face,
    bone_lengths,
    part_sizes,
)
from tsnet_hf.errors import InputError

from synthetic import face_shape, place

FACE_PARTS_CHECKED = ("jaw", "brows", "nose", "eyes", "mouth")


# ----------------------------------------------------------------------------------------------
# Synthetic faces


def talking_face(num_frames=60, seed=0, **shape):
    """(T, 68, 3) float32: a face that sways, rolls and opens its mouth."""
    rng = np.random.default_rng(seed)
    frames = []
    for t in range(num_frames):
        mouth_open = 4 + 6 * abs(math.sin(t / 3))
        frames.append(
            place(
                face_shape(mouth_open=mouth_open, **shape),
                1.5,
                (300 + 20 * math.sin(t / 10), 200 + 5 * t / num_frames),
                angle=0.15 * math.sin(t / 7),
            )
        )
    points = np.stack(frames)
    points[..., :2] += rng.normal(0, 0.2, points[..., :2].shape)
    return points.astype(np.float32)


def medians(sizes: dict) -> dict:
    return {name: float(np.nanmedian(values)) for name, values in sizes.items()}


def test_face_part_sizes_match_the_subject():
    driving = talking_face(eye=22, mouth=46, jaw=(110, 55), nose=1.1, brow=26)
    subject = talking_face(num_frames=40, seed=1, eye=13, mouth=36, jaw=(96, 70), nose=0.85)
    subject[..., :2] = subject[..., :2] * 1.4 + 50  # bigger, elsewhere in its frame
    aligned = align_face(driving, subject)
    assert aligned.shape == driving.shape and aligned.dtype == np.float32
    before, target, after = (medians(part_sizes(x)) for x in (driving, subject, aligned))
    for part in FACE_PARTS_CHECKED:
        assert abs(after[part] / target[part] - 1) < 0.01, part
        assert abs(before[part] / target[part] - 1) > 0.05, part  # there was something to fix
    assert abs(after["face"] / target["face"] - 1) < 0.03
    np.testing.assert_array_equal(aligned[..., 2], driving[..., 2])


def test_face_motion_is_kept():
    still = place(face_shape(eye=22), 1.5, (300, 200))
    steps = np.array([[3.0, -1.0]]) * np.arange(20)[:, None]  # moves 3 px right, 1 px up per frame
    driving = np.repeat(still[None], 20, axis=0)
    driving[..., :2] += steps[:, None]
    subject = talking_face(seed=2, eye=15)
    subject[..., :2] *= 2
    aligned = align_face(driving, subject)
    scale = np.median(part_sizes(subject)["face"]) / np.median(part_sizes(driving)["face"])
    # Every point moves by the driving's step times the global scale.
    np.testing.assert_allclose(np.diff(aligned[..., :2], axis=0), scale * np.diff(driving[..., :2], axis=0), atol=1e-3)


def eye_line_angle(points):
    line = points[:, 42:48, :2].mean(1) - points[:, 36:42, :2].mean(1)
    return np.arctan2(line[:, 1], line[:, 0])


def test_face_head_roll_and_expressions_come_from_the_driving_video():
    driving = talking_face(eye=22)
    subject = talking_face(seed=3, eye=15, mouth=34)
    aligned = align_face(driving, subject)
    np.testing.assert_allclose(eye_line_angle(aligned), eye_line_angle(driving), atol=1e-4)
    # Mouth opening (inner lip height) follows the driving video frame by frame.
    opening = lambda p: np.linalg.norm(p[:, 62, :2] - p[:, 66, :2], axis=-1)  # noqa: E731
    assert np.corrcoef(opening(aligned), opening(driving))[0, 1] > 0.99


def test_face_alignment_of_a_video_to_itself_changes_nothing():
    driving = talking_face()
    np.testing.assert_allclose(align_face(driving, driving), driving, atol=1e-3)


def test_face_mirror_parts_share_one_factor():
    # A subject filmed from one side: its right eye and brow look smaller. The driver's two eyes
    # keep their own relation (the same factor for both sides).
    driving = talking_face(eye=20)
    subject = talking_face(seed=4, eye=20)
    eye_centre = subject[:, 36:42, :2].mean(1, keepdims=True)
    subject[:, 36:42, :2] = (subject[:, 36:42, :2] - eye_centre) * 0.7 + eye_centre
    aligned = medians(part_sizes(align_face(driving, subject)))
    driving_sizes = medians(part_sizes(driving))
    assert aligned["right_eye"] / aligned["left_eye"] == pytest.approx(
        driving_sizes["right_eye"] / driving_sizes["left_eye"], rel=1e-6
    )
    assert aligned["eyes"] == pytest.approx(medians(part_sizes(subject))["eyes"], rel=1e-3)


def test_face_subject_photo_and_missing_frames():
    driving = talking_face()
    driving[5] = 0.0  # a frame with no face (confidence 0)
    subject_photo = talking_face(num_frames=1, seed=5, eye=15)
    aligned = align_face(driving, subject_photo)
    np.testing.assert_array_equal(aligned[5], driving[5])
    assert np.isfinite(aligned).all()
    after, target = medians(part_sizes(aligned)), medians(part_sizes(subject_photo))
    assert abs(after["eyes"] / target["eyes"] - 1) < 0.01


def test_face_bad_input():
    driving = talking_face()
    with pytest.raises(InputError, match=r"\(T, 68, 3\)"):
        align_face(driving[..., :2], driving)
    with pytest.raises(InputError, match="subject"):
        align_face(driving, np.zeros((0, 68, 3)))
    with pytest.raises(InputError, match="all 68 points"):
        align_face(driving, np.zeros((3, 68, 3)))


# ----------------------------------------------------------------------------------------------
# Synthetic skeletons

BODY25_TEMPLATE = np.array(
    [
        (0, -160),
        (0, -130),
        (-25, -130),
        (-35, -90),
        (-40, -50),
        (25, -130),
        (35, -90),
        (40, -50),
        (0, -40),
        (-12, -40),
        (-14, 10),
        (-15, 60),
        (12, -40),
        (14, 10),
        (15, 60),
        (-5, -165),
        (5, -165),
        (-10, -162),
        (10, -162),
        (22, 65),
        (0, 0),
        (12, 63),
        (-22, 65),
        (0, 0),
        (-12, 63),
    ],
    dtype=np.float64,
)


def body_shape(arm=1.0, leg=1.0, torso=1.0, head=1.0):
    """(135, 3) standing person with bones scaled by part (arm, leg, torso, head), all confident
    except the small toes."""
    points = np.zeros((layouts.BODY_POINTS, 3))
    points[:25, :2] = BODY25_TEMPLATE
    for hand, wrist in ((layouts.LEFT_HAND_SLICE, 7), (layouts.RIGHT_HAND_SLICE, 4)):
        side = 1 if wrist == 7 else -1
        points[hand.start, :2] = BODY25_TEMPLATE[wrist] + (0, 2)
        for f, finger in enumerate(layouts.HAND_FINGERS):
            direction = np.array([side * math.sin((f - 2) * 0.35), math.cos((f - 2) * 0.35)])
            for k, index in enumerate(finger[1:], start=1):
                points[hand.start + index, :2] = points[hand.start, :2] + direction * 4 * k
    points[layouts.FACE_SLICE, :2] = 0.12 * face_shape() + BODY25_TEMPLATE[0] + (0, 2)
    points[:, 2] = 1.0
    points[[20, 23], :] = 0.0
    factor = {
        **{b: arm for b in [(2, 3), (3, 4), (5, 6), (6, 7)]},
        **{b: leg for b in [(9, 10), (10, 11), (12, 13), (13, 14)]},
        (1, 8): torso,
        (1, 0): head,
    }
    return rescale_bones(points, factor)


def rescale_bones(points, factor):
    """Scale the listed BODY_25 bones, moving everything below them (a reference tree walk)."""
    out = points.copy()
    children = {parent: [] for parent in range(layouts.BODY_POINTS)}
    for parent, child in BODY_BONES:
        children[parent].append(child)
    for parent, child in BODY_BONES:
        if (parent, child) in factor:
            shift = (factor[(parent, child)] - 1) * (out[child, :2] - out[parent, :2])
            stack, moved = [child], []
            while stack:
                node = stack.pop()
                moved.append(node)
                stack += children[node]
                if node in (4, 7):
                    moved += list(range(*((46, 67) if node == 4 else (25, 46))))
                if node == 0:
                    moved += list(range(67, 135))
            out[moved, :2] += shift
    return out


def dancing(num_frames=40, seed=0, scale=1.5, offset=(400.0, 500.0), **proportions):
    """(T, 135, 3) float32: a person stepping sideways and waving the right forearm."""
    rng = np.random.default_rng(seed)
    base = body_shape(**proportions)
    frames = []
    for t in range(num_frames):
        points = base.copy()
        angle = 0.8 * math.sin(t / 4)  # right forearm and hand rotate about the elbow
        cos, sin = math.cos(angle), math.sin(angle)
        moving = [4, *range(46, 67)]
        rel = points[moving, :2] - points[3, :2]
        points[moving, :2] = points[3, :2] + rel @ np.array([[cos, sin], [-sin, cos]])
        points[:, :2] = scale * points[:, :2] + np.asarray(offset) + (3 * t, 0)
        frames.append(points)
    track = np.stack(frames)
    track[..., :2] += rng.normal(0, 0.2, track[..., :2].shape)
    track[:, [20, 23]] = 0.0
    return track.astype(np.float32)


MIRROR = [BODY_BONES.index((layouts.BODY25_FLIP[a], layouts.BODY25_FLIP[b])) for a, b in BODY_BONES]


def paired_bone_medians(points):
    """(B,) mean of the median lengths of each BODY_25 bone and its left/right mirror (what
    align_body matches; bones on the midline: their own), over frames where measured (NaN
    when a side is measured in < 3 frames)."""
    medians_ = np.array(
        [np.median(c[np.isfinite(c)]) if np.isfinite(c).sum() >= 3 else np.nan for c in bone_lengths(points).T]
    )
    return (medians_ + medians_[MIRROR]) / 2


def test_body_bone_lengths_match_the_subject():
    driving = dancing(arm=0.85, leg=1.25, torso=1.1)
    subject = dancing(num_frames=30, seed=1, scale=2.2, offset=(900, 700), arm=1.15, leg=0.9)
    aligned = align_body(driving, subject)
    assert aligned.shape == driving.shape and aligned.dtype == np.float32
    measured = [i for i, (a, b) in enumerate(BODY_BONES) if 20 not in (a, b) and 23 not in (a, b)]
    before, target, after = (paired_bone_medians(x)[measured] for x in (driving, subject, aligned))
    np.testing.assert_allclose(after, target, rtol=0.01)
    assert np.max(np.abs(before / target - 1)) > 0.3  # there was something to fix
    feet = lambda p: np.median(p[:, [11, 14], :2].mean(1), axis=0)  # noqa: E731
    np.testing.assert_allclose(feet(aligned), feet(subject), atol=0.5)
    np.testing.assert_array_equal(aligned[..., 2], driving[..., 2])


def test_body_motion_is_kept():
    driving = dancing(arm=0.85, leg=1.25)
    subject = dancing(seed=2, scale=2.0, arm=1.1)
    aligned = align_body(driving, subject)
    # Every bone turns exactly as in the driving video (the forearm's wave included).
    for parent, child in BODY_BONES:
        if child in (20, 23):
            continue
        d = driving[:, child, :2] - driving[:, parent, :2]
        a = aligned[:, child, :2] - aligned[:, parent, :2]
        cross = d[:, 0] * a[:, 1] - d[:, 1] * a[:, 0]
        assert np.all(np.abs(np.arctan2(cross, (d * a).sum(-1))) < 1e-3), (parent, child)
    # Stepping sideways: the neck moves by the driving's step times the global scale.
    steps = np.diff(aligned[:, 1, :2], axis=0) / np.diff(driving[:, 1, :2], axis=0)[:, :1]
    assert np.allclose(steps[:, 0], steps[0, 0], rtol=0.05) and steps[0, 0] > 0


def test_body_alignment_of_a_video_to_itself_changes_nothing():
    driving = dancing()
    np.testing.assert_allclose(align_body(driving, driving), driving, atol=1e-2)


def test_body_half_body_subject_and_missing_joints():
    driving = dancing(leg=1.2)
    subject = dancing(seed=3, scale=2.0, arm=1.1)
    subject[:, [10, 11, 13, 14, 19, 21, 22, 24]] = 0.0  # framed from the hips up
    driving[7, 10] = 0.0  # a knee missing in one frame: the ankle hangs from the hip
    aligned = align_body(driving, subject)
    assert np.isfinite(aligned).all()
    full = align_body(dancing(leg=1.2), subject)
    np.testing.assert_allclose(aligned[7, 11, :2], full[7, 11, :2], atol=0.5)
    np.testing.assert_array_equal(aligned[7, 10], driving[7, 10])
    # Legs unseen in the subject: scaled by the global factor only (the torso + head ratio).
    scale = np.median(bone_lengths(aligned)[:, 0]) / np.median(bone_lengths(driving)[:, 0])
    shin = BODY_BONES.index((10, 11))
    ratio = np.nanmedian(bone_lengths(aligned)[:, shin]) / np.nanmedian(bone_lengths(driving)[:, shin])
    assert 0.8 * scale < ratio < 1.25 * scale


def test_body_bad_input():
    driving = dancing()
    with pytest.raises(InputError, match=r"\(T, 135, 3\)"):
        align_body(driving[:, :25], driving)
    with pytest.raises(InputError, match="no BODY_25 limb"):
        align_body(driving, np.zeros((5, 135, 3)))


# ----------------------------------------------------------------------------------------------
# Real pairs (../shared): part sizes / bone lengths within 5 %, motion kept

FACE_PAIRS = [  # (driving, subject): different people
    ("liveportrait_d0.mp4", "moore_talkinghead_1.mp4"),
    ("tpsmm_driving.mp4", "liveportrait_s32.mp4"),
    ("sadtalker_WDA_AlexandriaOcasioCortez_000.mp4", "liveportrait_d12.mp4"),
    ("liveportrait_d14.mp4", "liveportrait_d19.mp4"),
]
BODY_PAIRS = [
    ("musev_dance_boy.mp4", "musev_bilibili_queencard_s2_8s.mp4"),
    ("ipercore_akun_1.mp4", "hybrik_taiji.mp4"),
    ("mimicmotion_raw_0.mp4", "pbchamp_dance_halfbody.mp4"),
]
BODY_FRAMES = 60  # as tests/test_landmarks.py: the same cache entries


def motion_correlation(driving, aligned, min_confidence=0.5):
    """Correlation of the frame-to-frame displacements of confident points."""
    ok = (driving[1:, :, 2] >= min_confidence) & (driving[:-1, :, 2] >= min_confidence)
    d = np.diff(driving[..., :2], axis=0)[ok].ravel()
    a = np.diff(aligned[..., :2], axis=0)[ok].ravel()
    return float(np.corrcoef(d, a)[0, 1])


@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.parametrize("driving_clip, subject_clip", FACE_PAIRS)
def test_real_face_pairs(shared_dir, landmark_cache, driving_clip, subject_clip):
    face = shared_dir / "data" / "face"
    driving = landmark_cache(str(face / driving_clip), "face").points
    subject = landmark_cache(str(face / subject_clip), "face").points
    aligned = align_face(driving, subject)
    before, target, after = (medians(part_sizes(x)) for x in (driving, subject, aligned))
    for part in (*FACE_PARTS_CHECKED, "face"):
        print(
            f"{driving_clip} -> {subject_clip} {part}: driving {before[part]:.1f} px, "
            f"subject {target[part]:.1f}, aligned {after[part]:.1f}"
        )
        assert abs(after[part] / target[part] - 1) < 0.05, part
    assert motion_correlation(driving, aligned) > 0.95


@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.parametrize("driving_clip, subject_clip", BODY_PAIRS)
def test_real_body_pairs(shared_dir, landmark_cache, driving_clip, subject_clip):
    dance = shared_dir / "data" / "dance"
    driving = landmark_cache(str(dance / driving_clip), "body", BODY_FRAMES).points
    subject = landmark_cache(str(dance / subject_clip), "body", BODY_FRAMES).points
    aligned = align_body(driving, subject)
    counts = [np.isfinite(bone_lengths(x)).sum(0) for x in (driving, subject)]
    before, target, after = (paired_bone_medians(x) for x in (driving, subject, aligned))
    checked = 0
    for i, (a, b) in enumerate(BODY_BONES):
        sides = {i, MIRROR[i]}
        if not all(min(c[s] for c in counts) >= 3 for s in sides):
            continue  # a side unmeasured in one video: compared through its measured mirror
        checked += 1
        name = f"{layouts.BODY25_NAMES[a]}-{layouts.BODY25_NAMES[b]}"
        print(
            f"{driving_clip} -> {subject_clip} {name} (mean with mirror): driving "
            f"{before[i]:.1f} px, subject {target[i]:.1f}, aligned {after[i]:.1f}"
        )
        assert abs(after[i] / target[i] - 1) < 0.05, name
    assert checked >= 10
    assert motion_correlation(driving[:, :25], aligned[:, :25]) > 0.9
