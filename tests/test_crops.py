"""Crops: transforms there and back, crops near the border, paste-back, and boxes from tracks."""

import numpy as np
import pytest

from tsnet_hf.crops import CropTransform, body_crop_boxes, crop_frame, face_crop_boxes, transforms_from_boxes
from tsnet_hf.errors import DetectionError, InputError

from synthetic import synthetic_body, synthetic_face

FRAME_SIZE = (360, 640)  # (H, W)


def gradient_frame(height=360, width=640) -> np.ndarray:
    """(H, W, 3) uint8 RGB smooth gradient (no edges, so resampling errors stay small)."""
    ys, xs = np.mgrid[0:height, 0:width]
    return np.stack(
        [xs * 200 // width + 20, ys * 200 // height + 30, (xs + ys) * 100 // (width + height) + 80], axis=-1
    ).astype(np.uint8)


def marker_centroid(crop: np.ndarray) -> np.ndarray:
    """Intensity-weighted (x, y) centre of channel 0 of a crop."""
    weight = crop[..., 0].astype(np.float64)
    ys, xs = np.mgrid[0 : crop.shape[0], 0 : crop.shape[1]]
    return np.array([(xs * weight).sum(), (ys * weight).sum()]) / weight.sum()


@pytest.mark.parametrize(
    "box, size",
    [((100.0, 50.0, 400.0, 350.0), 256), ((-80.25, -20.5, 119.75, 179.5), 128), ((500.5, 200.0, 1100.5, 800.0), 512)],
)
def test_points_round_trip(box, size):
    transform = CropTransform(box, size, FRAME_SIZE)
    points = np.random.default_rng(0).uniform(-50, 700, (5, 68, 3)).astype(np.float32)
    back = transform.to_frame(transform.to_crop(points))
    assert np.abs(back - points).max() < 1e-3
    np.testing.assert_array_equal(back[..., 2], points[..., 2])  # confidence untouched
    corners = transform.to_crop(np.array([[box[0] - 0.5, box[1] - 0.5], [box[2] - 0.5, box[3] - 0.5]]))
    np.testing.assert_allclose(corners, [[-0.5, -0.5], [size - 0.5, size - 0.5]], atol=1e-3)


@pytest.mark.parametrize(
    "box, size",
    [
        ((100.0, 50.0, 400.0, 350.0), 256),  # upscale-ish
        ((-100.0, -200.0, 900.0, 800.0), 128),  # strong downscale
        ((10.5, 20.25, 330.5, 340.25), 96),
    ],
)
def test_crop_puts_pixels_where_to_crop_says(box, size):
    frame = np.zeros((*FRAME_SIZE, 3), np.uint8)
    frame[150:170, 250:270] = 255
    transform = CropTransform(box, size, FRAME_SIZE)
    crop = crop_frame(frame, transform)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    expected = transform.to_crop(np.array([[259.5, 159.5]], np.float32))[0]
    assert np.abs(marker_centroid(crop) - expected).max() < 0.25


def test_crop_near_the_border():
    frame = gradient_frame()
    transform = CropTransform((-100.0, -60.0, 100.0, 140.0), 200, FRAME_SIZE)  # 1 crop px = 1 frame px
    crop = crop_frame(frame, transform)
    np.testing.assert_array_equal(crop[60:, 100:], frame[:140, :100])  # the part inside the frame
    np.testing.assert_array_equal(crop[:60, 100], np.repeat(frame[:1, 0], 60, axis=0))  # replicated
    black = crop_frame(frame, transform, border="constant")
    assert black[:60].max() == 0 and black[:, :100].max() == 0
    face = synthetic_face(cx=20, cy=30, s=40)  # a face cut by the frame's corner
    box = face_crop_boxes(face[None], FRAME_SIZE)[0]
    assert box[0] < 0 and box[1] < 0
    near = transforms_from_boxes(box[None], FRAME_SIZE, 256)[0]
    inside = near.to_crop(face)
    assert crop_frame(frame, near).shape == (256, 256, 3)
    assert inside[:, :2].min() > 0 and inside[:, :2].max() < 256


def test_paste_back_returns_the_crop_where_it_came_from():
    frame = gradient_frame()
    transform = CropTransform((200.0, 80.0, 392.0, 272.0), 256, FRAME_SIZE)
    crop = crop_frame(frame, transform)
    restored = transform.paste_back(crop, frame, feather=0.0)
    assert np.abs(restored[85:267, 205:387].astype(int) - frame[85:267, 205:387]).max() <= 2

    output = np.zeros((128, 128, 3), np.uint8)  # a model output at another resolution
    output[:] = (250, 10, 10)
    pasted = transform.paste_back(output, frame, feather=0.1)
    assert (pasted[100:250, 220:370] == (250, 10, 10)).all()  # inside: the output
    np.testing.assert_array_equal(pasted[:, :199], frame[:, :199])  # outside the box: untouched
    np.testing.assert_array_equal(pasted[273:], frame[273:])
    edge = pasted[176, 201].astype(int)  # in the feathered rim: a blend of the two
    assert frame[176, 201, 0] < edge[0] < 250
    assert pasted is not frame and frame[176, 250, 0] != 250  # the input frame is not modified


def test_paste_back_of_a_box_past_the_border():
    frame = gradient_frame()
    transform = CropTransform((560.0, 300.0, 720.0, 460.0), 160, FRAME_SIZE)
    pasted = transform.paste_back(np.full((160, 160, 3), 7, np.uint8), frame, feather=0.0)
    assert (pasted[301:, 561:] == 7).all() and (pasted[:299] == frame[:299]).all()


def test_face_boxes_follow_the_authors_framing_and_smooth_jitter():
    rng = np.random.default_rng(0)
    face = synthetic_face(cx=320, cy=180, s=50)
    track = np.repeat(face[None], 30, axis=0)
    track[:, :, :2] += rng.normal(0, 2.0, (30, 1, 2))  # detector jitter, the whole face
    raw = face_crop_boxes(track, FRAME_SIZE, smooth=1)
    smooth = face_crop_boxes(track, FRAME_SIZE, smooth=9)
    sides = smooth[:, 2] - smooth[:, 0]
    np.testing.assert_allclose(sides, smooth[:, 3] - smooth[:, 1], rtol=1e-5)  # square
    assert np.allclose(sides, 2 * 100, rtol=0.05)  # twice the landmark extent (jaw width 100)
    centres = (smooth[:, :2] + smooth[:, 2:]) / 2
    assert np.allclose(centres[:, 0], 320, atol=2)
    top, chin = 180 - 0.55 * 50, 180 + 0.9 * 50  # brows and chin of the synthetic face
    assert np.allclose(centres[:, 1], (top + chin) / 2 - 0.125 * 200, atol=2)  # lifted by side / 8
    raw_centres = (raw[:, :2] + raw[:, 2:]) / 2
    assert np.diff(centres, axis=0).std() < 0.5 * np.diff(raw_centres, axis=0).std()


def test_face_boxes_fill_missing_frames_and_fail_without_any():
    track = np.repeat(synthetic_face(cx=300, cy=180, s=50)[None], 5, axis=0)
    track[2, :, 2] = 0  # no face in frame 2
    boxes = face_crop_boxes(track, FRAME_SIZE, smooth=1)
    np.testing.assert_allclose(boxes[2], boxes[1], atol=1e-4)
    track[:, :, 2] = 0
    with pytest.raises(DetectionError, match="No face"):
        face_crop_boxes(track, FRAME_SIZE)


def test_body_boxes_keep_head_and_feet():
    body = synthetic_body()
    body[:, :2] = body[:, :2] * 1.2 + (200, 10)  # a 300 px person in a 640x360 frame
    boxes = body_crop_boxes(np.repeat(body[None], 4, axis=0), FRAME_SIZE)
    x0, y0, x1, y1 = boxes[0]
    assert x1 - x0 == pytest.approx(y1 - y0)
    assert x0 < body[:, 0].min() and x1 > body[:, 0].max()
    nose, neck = body[0, :2], body[1, :2]
    assert y0 < nose[1] - 0.6 * np.linalg.norm(nose - neck)  # top of the head is inside
    assert y1 > body[:, 1].max()  # feet are inside
    with pytest.raises(InputError, match="135"):
        body_crop_boxes(synthetic_face()[None], FRAME_SIZE)


def test_bad_crop_inputs():
    with pytest.raises(InputError, match="square"):
        CropTransform((0.0, 0.0, 100.0, 50.0), 64, FRAME_SIZE)
    transform = CropTransform((0.0, 0.0, 100.0, 100.0), 64, FRAME_SIZE)
    with pytest.raises(InputError, match="frame size"):
        crop_frame(np.zeros((100, 100, 3), np.uint8), transform)
    with pytest.raises(InputError, match="uint8"):
        transform.paste_back(np.zeros((64, 64, 3), np.float32), gradient_frame())
