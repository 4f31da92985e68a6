"""Masks drawn from known synthetic landmarks, and the keypoint layouts they use."""

import numpy as np
import pytest
import torch

from tsnet_hf import layouts, masks
from tsnet_hf.errors import InputError

from synthetic import synthetic_body, synthetic_face


def midpoint_label(labels, points, i, j):
    x, y = np.rint((points[i, :2] + points[j, :2]) / 2).astype(int)
    return labels[y, x]


# ----------------------------------------------------------------------------------------------
# Layouts


def test_layout_sizes_and_channels():
    assert layouts.BODY_POINTS == 135 and len(layouts.BODY25_NAMES) == 25
    assert len(layouts.BODY_LIMBS) == 24 and len(set(layouts.LIMB_COLORS)) == 24
    assert len(layouts.FACE_EDGES) == 63 and sum(len(p.points) for p in layouts.FACE_PARTS) == 68
    assert (layouts.FACE_MASK_CHANNELS, layouts.BODY_MASK_CHANNELS) == (2, 36)
    labels = [0, *layouts.LIMB_LABELS, *layouts.LEFT_FINGER_LABELS, *layouts.RIGHT_FINGER_LABELS, layouts.FACE_LABEL]
    assert labels == list(range(36))
    assert all(len(finger) == 5 for finger in layouts.HAND_FINGERS)  # 4 segments each


@pytest.mark.parametrize("num_points", [68, 135])
def test_flip_permutation_is_an_involution(num_points):
    perm = layouts.flip_permutation(num_points)
    assert sorted(perm) == list(range(num_points))
    np.testing.assert_array_equal(perm[perm], np.arange(num_points))


def test_flip_of_a_symmetric_face_and_body_is_itself():
    for points in (synthetic_face(), synthetic_body()):
        np.testing.assert_allclose(layouts.flip_horizontal(points, 256), points, atol=1e-4)
    names = layouts.BODY25_NAMES
    for i, j in enumerate(layouts.BODY25_FLIP):
        assert names[j] == names[i].replace("R", "#").replace("L", "R").replace("#", "L") or i == j


# ----------------------------------------------------------------------------------------------
# Face masks


def test_face_mask_draws_every_segment():
    face = synthetic_face()
    labels = masks.draw_face_mask(face, (256, 256))
    assert labels.shape == (256, 256) and labels.dtype == np.uint8
    assert set(np.unique(labels)) == {0, 1}
    assert masks.segment_coverage(labels, face) == 1.0
    for i, j in layouts.FACE_EDGES:
        assert midpoint_label(labels, face, i, j) == 1
    # away from the curves: the eye centres, the forehead, the corners
    for x, y in [(127.5 - 24, 110), (127.5 + 24, 110), (127.5, 70), (5, 5), (250, 250)]:
        assert labels[int(y), int(round(x))] == 0


def test_face_mask_skips_missing_points():
    face = synthetic_face()
    face[8, 2] = 0.0  # chin tip missing
    labels = masks.draw_face_mask(face, (256, 256))
    assert midpoint_label(labels, face, 7, 8) == 0 and midpoint_label(labels, face, 8, 9) == 0
    assert midpoint_label(labels, face, 6, 7) == 1 and midpoint_label(labels, face, 9, 10) == 1
    face[:, 2] = 0.2  # all below min_confidence
    assert masks.draw_face_mask(face, (256, 256)).max() == 0


def test_face_mask_line_width_scales_with_resolution():
    face = synthetic_face()
    small = masks.draw_face_mask(face, (256, 256))
    large = masks.draw_face_mask(layouts_scaled(face, 2), (512, 512))
    brow_column_small = small[:, int(127.5 - 0.45 * 60)]
    brow_column_large = large[:, int(2 * (127.5 - 0.45 * 60))]
    brow_y = int(128 - 0.55 * 60)
    assert brow_column_small[brow_y - 4 : brow_y + 5].sum() == 2  # 2 px at 256, as the authors
    assert brow_column_large[2 * brow_y - 6 : 2 * brow_y + 8].sum() == 4
    assert 3.2 < large.sum() / small.sum() < 4.8
    downsampled = large.reshape(256, 2, 256, 2).max(axis=(1, 3))
    overlap = (downsampled & small).sum() / small.sum()
    assert overlap > 0.9


def layouts_scaled(points, factor):
    """Landmarks of the same picture drawn `factor` times larger (pixel centres kept aligned)."""
    scaled = points.copy()
    scaled[:, :2] = (points[:, :2] + 0.5) * factor - 0.5
    return scaled


def test_masks_are_deterministic():
    face, body = synthetic_face(), synthetic_body()
    np.testing.assert_array_equal(
        masks.draw_face_mask(face, (256, 256)), masks.draw_face_mask(face.astype(np.float64), (256, 256))
    )
    np.testing.assert_array_equal(masks.draw_body_mask(body, (256, 192)), masks.draw_body_mask(body.copy(), (256, 192)))


def test_mirrored_landmarks_draw_a_mirrored_mask():
    face = synthetic_face(cx=110, cy=120)
    labels = masks.draw_face_mask(face, (256, 256))
    mirrored = masks.draw_face_mask(layouts.flip_horizontal(face, 256), (256, 256))
    iou = (labels[:, ::-1] & mirrored).sum() / (labels[:, ::-1] | mirrored).sum()
    assert iou > 0.85  # not exact: line rasterisation is not mirror-symmetric


# ----------------------------------------------------------------------------------------------
# Body masks


def test_body_mask_labels_each_limb_finger_and_the_face():
    body = synthetic_body(with_face=False)
    labels = masks.draw_body_mask(body, (256, 256))
    assert labels.dtype == np.uint8 and labels.max() < layouts.BODY_MASK_CHANNELS
    for label, (i, j) in zip(layouts.LIMB_LABELS, layouts.BODY_LIMBS):
        assert midpoint_label(labels, body, i, j) == label, layouts.BODY25_NAMES[i]
    for hand, finger_labels in (
        (layouts.LEFT_HAND_SLICE, layouts.LEFT_FINGER_LABELS),
        (layouts.RIGHT_HAND_SLICE, layouts.RIGHT_FINGER_LABELS),
    ):
        for label, finger in zip(finger_labels, layouts.HAND_FINGERS):
            i, j = hand.start + finger[2], hand.start + finger[3]
            x, y = np.rint((body[i, :2] + body[j, :2]) / 2).astype(int)
            assert label in labels[y - 1 : y + 2, x - 1 : x + 2]  # 1 px strokes: within a pixel
    assert not (labels == layouts.FACE_LABEL).any()

    body = synthetic_body(with_face=True)
    labels = masks.draw_body_mask(body, (256, 256))
    face_edges = [(i + 67, j + 67) for i, j in layouts.FACE_EDGES]
    assert masks.segment_coverage(labels == layouts.FACE_LABEL, body, face_edges) > 0.8


def test_body_mask_render_uses_limb_colours():
    body = synthetic_body()
    rgb = masks.render_mask_rgb(masks.draw_body_mask(body, (256, 256)), "body")
    assert rgb.shape == (256, 256, 3) and rgb.dtype == np.uint8
    for k in (0, 3, 9, 12):
        i, j = layouts.BODY_LIMBS[k]
        x, y = np.rint((body[i, :2] + body[j, :2]) / 2).astype(int)
        assert tuple(rgb[y, x]) == layouts.LIMB_COLORS[k]
    assert tuple(rgb[2, 2]) == (0, 0, 0)
    face_rgb = masks.render_mask_rgb(masks.draw_face_mask(synthetic_face(), (64, 64)), "face")
    assert set(map(tuple, face_rgb.reshape(-1, 3))) <= {(0, 0, 0), (255, 255, 255)}


def test_body_line_width_scales():
    body = synthetic_body(with_face=False)
    small = masks.draw_body_mask(body, (256, 256))
    large = masks.draw_body_mask(layouts_scaled(body, 2), (512, 512))
    neck_to_hip = lambda labels, f: (labels[int(105 * f), :] == 1).sum()  # noqa: E731
    assert neck_to_hip(small, 1) == 3 and neck_to_hip(large, 2) == 7  # odd widths (see masks)


# ----------------------------------------------------------------------------------------------
# One-hot tensors, boxes


def test_onehot_sums_to_one_everywhere():
    labels = masks.draw_body_mask(synthetic_body(), (128, 96))
    onehot = masks.labels_to_onehot(labels, layouts.BODY_MASK_CHANNELS)
    assert onehot.shape == (36, 128, 96) and onehot.dtype == np.float32
    np.testing.assert_array_equal(onehot.sum(axis=0), 1.0)
    np.testing.assert_array_equal(onehot.argmax(axis=0), labels)
    as_torch = masks.labels_to_onehot(torch.from_numpy(labels), 36)
    assert torch.is_tensor(as_torch) and torch.equal(as_torch, torch.from_numpy(onehot))


def test_onehot_masks_from_a_track():
    track = np.stack([synthetic_face(cx=100 + 5 * t) for t in range(4)])
    batch = masks.onehot_masks(track, (256, 256))
    assert batch.shape == (4, 2, 256, 256) and batch.dtype == torch.float32
    assert torch.all(batch.sum(dim=1) == 1)
    assert not torch.equal(batch[0], batch[1])
    body = masks.onehot_masks(synthetic_body()[None], (64, 64))
    assert body.shape == (1, 36, 64, 64)


def test_mask_box_is_landmark_extent_plus_a_sixteenth():
    points = np.array([[50, 60, 1], [100, 120, 1], [240, 250, 0.1]], dtype=np.float32)
    assert masks.mask_box(points, (256, 256)) == (34.0, 44.0, 116.0, 136.0)
    points[0, :2] = (5, 3)
    assert masks.mask_box(points, (256, 256))[:2] == (0.0, 0.0)  # clipped to the image
    points[:, 2] = 0
    assert masks.mask_box(points, (256, 256)) == (0.0, 0.0, 0.0, 0.0)


def test_mask_box_agrees_with_the_models_box_from_masks():
    similarity = pytest.importorskip("tsnet_hf.similarity")
    face = synthetic_face()
    onehot = masks.onehot_masks(face[None], (256, 256))
    from_mask = similarity.boxes_from_masks(onehot, 1 / 16)[0].tolist()
    from_points = masks.mask_box(face, (256, 256))
    assert np.allclose(from_mask, from_points, atol=3)  # differs by the line width only


def test_bad_mask_inputs():
    with pytest.raises(InputError, match="68"):
        masks.draw_face_mask(synthetic_body(), (256, 256))
    with pytest.raises(InputError, match=r"\(P, 3\)"):
        masks.draw_body_mask(np.zeros((135, 2)), (256, 256))
    with pytest.raises(InputError, match="outside"):
        masks.labels_to_onehot(np.full((4, 4), 5, np.uint8), 2)
    with pytest.raises(InputError, match="mode"):
        masks.render_mask_rgb(np.zeros((4, 4), np.uint8), "hands")
    with pytest.raises(InputError, match="size"):
        masks.draw_face_mask(synthetic_face(), (0, 256))
