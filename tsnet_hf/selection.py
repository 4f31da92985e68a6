"""Which subject frames the model sees for each driving frame: pose distances between landmark
tracks, a diverse pool of subject frames, and the K nearest (or K random) pool frames per driving
frame. Shared by the pipeline, training/evaluate.py and its copy-the-nearest-frame baseline."""

import numpy as np

from .errors import InputError

MIN_CONFIDENCE = 0.5  # landmarks below this detection confidence are left out of pose distances


def pose_distances(driving: np.ndarray, subject: np.ndarray, size: int) -> np.ndarray:
    """(T, P, 3) x (S, P, 3) crop landmarks -> (T, S) mean point distance / crop side, over the
    points confident in both (infinite where none is)."""
    return paired_pose_distances(driving[:, None], subject[None], size)


def diverse_rows(points: np.ndarray, count: int) -> np.ndarray:
    """Up to `count` rows of a (T, P, 3) track that cover its poses: farthest-point sampling from
    row 0, returned in time order."""
    if len(points) <= count:
        return np.arange(len(points))
    chosen = [0]
    distance = pose_distances(points, points[:1], 1)[:, 0]
    for _ in range(count - 1):
        row = int(np.argmax(np.where(np.isfinite(distance), distance, -1)))
        chosen.append(row)
        distance = np.minimum(distance, pose_distances(points, points[row : row + 1], 1)[:, 0])
    return np.array(sorted(set(chosen)))


def choose_subject_frames(
    driving: np.ndarray, pool: np.ndarray, size: int, k: int | None = None, selection: str = "nearest", seed: int = 0
) -> np.ndarray:
    """(T, P, 3) driving and (S, P, 3) pool crop landmarks -> (T, K) int64 pool rows for each driving
    frame: the K nearest in pose (`selection` "nearest"), or K random ones drawn once with `seed` for
    all frames ("random", the paper's inference). K defaults to min(3, S).

    Raises:
        InputError: K is larger than the pool.
    """
    available = len(pool)
    k = k or min(3, available)
    if k > available:
        raise InputError(
            f"K = {k} subject frames were asked but the subject gives only {available} usable "
            f"frame{'s' if available > 1 else ''}: lower K or use a longer subject video."
        )
    if selection == "random":
        rows = np.random.default_rng(seed).choice(available, size=k, replace=False)
        return np.broadcast_to(np.sort(rows), (len(driving), k)).copy()
    choices = np.empty((len(driving), k), dtype=np.int64)
    for start in range(0, len(driving), 1024):  # bounded memory on long videos
        distances = pose_distances(driving[start : start + 1024], pool, size)
        choices[start : start + 1024] = np.argsort(distances, axis=1, kind="stable")[:, :k]
    return choices


def paired_pose_distances(a: np.ndarray, b: np.ndarray, size: int) -> np.ndarray:
    """(..., P, 3) x (..., P, 3) crop landmarks, broadcast row against row -> (...) mean point
    distance / crop side `size`, over the points confident in both (infinite where none is).
    `pose_distances` is every driving row against every subject row of this."""
    valid = (a[..., 2] >= MIN_CONFIDENCE) & (b[..., 2] >= MIN_CONFIDENCE)  # (..., P)
    gaps = np.linalg.norm(a[..., :2] - b[..., :2], axis=-1) / size
    counts = valid.sum(-1)
    return np.where(counts > 0, (gaps * valid).sum(-1) / np.maximum(counts, 1), np.inf)
