"""The transformation branch's sampling grid: mask-aware similarity (paper section 3.1, eq. 1-2).

For every driving-feature position q the grid is the softmax-weighted average of the regular
coordinate grid over subject-feature positions p, with weights exp(tau * S_pq), S the cosine
similarity; the mask-aware version (Fig. 3) compares only positions on the same side of the two
bounding boxes. Coordinates are cell centres in grid_sample's align_corners=False convention,
x_j = (2j + 1) / w - 1, so identical features give an identity warp (tested).
"""

import torch
import torch.nn.functional as F


def regular_grid(height: int, width: int, authors: bool = False, device=None) -> torch.Tensor:
    """(height * width, 2) float32 (x, y) coordinates in [-1, 1], row-major.

    authors=True gives the authors' linspace(-1, 1, n) grid, which grid_sample(align_corners=False)
    reads half a cell off (their bug, kept only to reproduce converted checkpoints).
    """
    if authors:
        xs = torch.linspace(-1.0, 1.0, width, device=device)
        ys = torch.linspace(-1.0, 1.0, height, device=device)
    else:
        xs = (torch.arange(width, device=device, dtype=torch.float32) * 2 + 1) / width - 1
        ys = (torch.arange(height, device=device, dtype=torch.float32) * 2 + 1) / height - 1
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y], dim=-1).reshape(height * width, 2)


def boxes_from_masks(masks: torch.Tensor, margin: float) -> torch.Tensor:
    """Bounding boxes of the drawn (non-background) pixels of one-hot masks.

    Args:
        masks: (..., C, H, W) one-hot masks, channel 0 the background.
        margin: margin added on every side, as a fraction of the image side (1/16 in the paper).
    Returns:
        (..., 4) float32 boxes (x0, y0, x1, y1) in pixels, clipped to the image; an empty mask
        gives an empty box (0, 0, 0, 0).
    """
    height, width = masks.shape[-2:]
    drawn = masks[..., 1:, :, :].amax(dim=-3) > 0.5  # (..., H, W)
    rows, cols = drawn.any(dim=-1), drawn.any(dim=-2)  # (..., H), (..., W)
    empty = ~rows.any(dim=-1)

    def extent(hit, size):
        index = torch.arange(size, device=masks.device, dtype=torch.float32)
        first = torch.where(hit, index, float(size)).amin(dim=-1)
        last = torch.where(hit, index, -1.0).amax(dim=-1) + 1
        return first, last

    x0, x1 = extent(cols, width)
    y0, y1 = extent(rows, height)
    pad_x, pad_y = margin * width, margin * height
    boxes = torch.stack(
        [
            (x0 - pad_x).clamp(min=0),
            (y0 - pad_y).clamp(min=0),
            (x1 + pad_x).clamp(max=width),
            (y1 + pad_y).clamp(max=height),
        ],
        dim=-1,
    )
    return torch.where(empty[..., None], torch.zeros_like(boxes), boxes)


def box_membership(
    boxes: torch.Tensor, image_size: tuple[int, int], feature_size: tuple[int, int], authors: bool = False
) -> torch.Tensor:
    """Which feature cells lie inside each box.

    Args:
        boxes: (..., 4) boxes (x0, y0, x1, y1) in image pixels.
        image_size, feature_size: (H, W) of the frames and of the feature maps.
        authors: test each cell's top-left pixel (the authors' nearest downsampling of a box
            map) instead of its centre.
    Returns:
        (..., h * w) bool, row-major.
    """
    (height, width), (h, w) = image_size, feature_size
    stride_y, stride_x = height / h, width / w
    offset_x, offset_y = (0.5, 0.5) if authors else (stride_x / 2, stride_y / 2)
    xs = torch.arange(w, device=boxes.device, dtype=torch.float32) * stride_x + offset_x
    ys = torch.arange(h, device=boxes.device, dtype=torch.float32) * stride_y + offset_y
    x0, y0, x1, y1 = (boxes[..., i, None].float() for i in range(4))
    inside_x = (xs >= x0) & (xs <= x1)  # (..., w)
    inside_y = (ys >= y0) & (ys <= y1)  # (..., h)
    return (inside_y[..., :, None] & inside_x[..., None, :]).flatten(-2)


def _first_true_indices(selected: torch.Tensor, pad_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the True entries of each row, padded to the longest row.

    Args:
        selected: (..., L) bool.
    Returns:
        indices (..., M) long with padding set to `pad_index`, valid (..., M) bool.
    """
    counts = selected.sum(dim=-1)
    longest = int(counts.max()) if counts.numel() else 0
    order = torch.argsort((~selected).to(torch.int8), dim=-1, stable=True)[..., :longest]
    valid = torch.arange(longest, device=selected.device) < counts[..., None]
    return torch.where(valid, order, pad_index), valid


def _gather_rows(values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """values (..., L, D) gathered at indices (..., M) -> (..., M, D); indices may equal L (a zero row)."""
    padded = F.pad(values, (0, 0, 0, 1))
    return torch.gather(padded, -2, indices[..., None].expand(*indices.shape, values.shape[-1]))


def _side_grid(driving, subject, coords, rows, cols, temperature):
    """Grid rows for one side (inside or outside) of the boxes.

    The authors' code multiplies zero-masked features and so still computes two full products; here
    positions are partitioned and only the allowed pairs are multiplied, so the work falls with the
    box areas a_z, a_y as a_z * a_y + (1 - a_z) * (1 - a_y) of the dense product. A driving position
    whose side has no subject position at all (an empty subject box) compares with every subject
    position instead, so the grid stays defined.

    driving (N, L, C) and subject (Ns, K, L, C) unit features, coords (L, 2), rows (N, L) and
    cols (Ns, K, L) bool selections. Returns (indices (N, M), valid (N, M), grid (N, K, M, 2)).
    """
    num_positions = driving.shape[1]
    cols = torch.where(cols.any(dim=-1, keepdim=True), cols, torch.ones_like(cols))  # empty side: all
    row_index, row_valid = _first_true_indices(rows, num_positions)
    col_index, col_valid = _first_true_indices(cols, num_positions)
    queries = _gather_rows(driving, row_index)[:, None]  # (N, 1, M, C)
    keys = _gather_rows(subject, col_index)  # (Ns, K, P, C)
    logits = torch.matmul(queries, keys.transpose(-1, -2)) * temperature  # (N, K, M, P)
    logits = logits.masked_fill(~col_valid[:, :, None, :], float("-inf"))
    key_coords = coords[col_index.clamp(max=num_positions - 1)]  # (Ns, K, P, 2)
    grid = torch.matmul(logits.softmax(dim=-1), key_coords)  # (N, K, M, 2)
    return row_index, row_valid, grid


def sampling_grid(
    driving_features: torch.Tensor,
    subject_features: torch.Tensor,
    driving_inside: torch.Tensor | None,
    subject_inside: torch.Tensor | None,
    temperature: float,
    mask_aware: bool = True,
    authors: bool = False,
) -> torch.Tensor:
    """Sampling grids G'_k of eq. (2), one per driving frame and subject frame.

    Args:
        driving_features: (N, C, h, w) driving-mask features f.
        subject_features: (Ns, K, C, h, w) subject features e_k, Ns = N or 1 (shared subject).
        driving_inside: (N, h*w) bool, feature cells inside the driving box (None: no boxes).
        subject_inside: (Ns, K, h*w) bool, feature cells inside each subject box.
        temperature: tau of eq. (2).
        mask_aware: compare only same-side pairs (see the module docstring); False: all pairs.
        authors: the authors' computation (linspace grid, zero-masked features: cross pairs kept
            with similarity 0) for converted checkpoints.
    Returns:
        (N, K, h, w, 2) float32 (x, y) in [-1, 1] for grid_sample(align_corners=False).
    """
    num, channels, h, w = driving_features.shape
    # fp32 whatever the autocast: tau = 100 turns a bf16 rounding of S (~4e-3) into ~40% weight errors.
    with torch.autocast(driving_features.device.type, enabled=False):
        driving = F.normalize(driving_features.float().flatten(2).transpose(1, 2), dim=-1)  # (N, L, C)
        subject = F.normalize(subject_features.float().flatten(3).transpose(2, 3), dim=-1)  # (Ns, K, L, C)
        coords = regular_grid(h, w, authors=authors, device=driving.device)  # (L, 2)
        if not mask_aware or driving_inside is None or subject_inside is None:
            grid = _dense_grid(driving, subject, coords, None, None, temperature)
        elif authors:
            grid = _authors_grid(driving, subject, coords, driving_inside, subject_inside, temperature)
        else:
            grid = _mask_aware_grid(driving, subject, coords, driving_inside, subject_inside, temperature)
    return grid.reshape(num, -1, h, w, 2)


def _mask_aware_grid(driving, subject, coords, driving_inside, subject_inside, temperature):
    num, positions = driving.shape[:2]
    grid = driving.new_zeros(num, subject.shape[1], positions + 1, 2)  # row L collects padding
    for rows, cols in ((driving_inside, subject_inside), (~driving_inside, ~subject_inside)):
        if not rows.any():
            continue
        row_index, row_valid, side = _side_grid(driving, subject, coords, rows, cols, temperature)
        row_index = torch.where(row_valid, row_index, positions)
        grid.scatter_(2, row_index[:, None, :, None].expand(-1, grid.shape[1], -1, 2), side)
    return grid[:, :, :positions]


def _dense_grid(driving, subject, coords, driving_inside, subject_inside, temperature):
    """All pairs; with boxes given, the reference for the mask-aware grid (cross pairs excluded)."""
    similarity = torch.matmul(driving[:, None], subject.transpose(-1, -2))  # (N, K, L, L)
    logits = similarity * temperature
    if driving_inside is not None:
        allowed = allowed_pairs(driving_inside, subject_inside)
        logits = logits.masked_fill(~allowed, float("-inf"))
    return torch.matmul(logits.softmax(dim=-1), coords)


def allowed_pairs(driving_inside: torch.Tensor, subject_inside: torch.Tensor) -> torch.Tensor:
    """(N, K, L, L) bool: which (driving q, subject p) pairs the mask-aware similarity compares."""
    rows = driving_inside[:, None, :, None]  # (N, 1, L, 1)
    cols = subject_inside[:, :, None, :]  # (Ns, K, 1, L)
    has_inside = subject_inside.any(dim=-1)[:, :, None, None]
    has_outside = (~subject_inside).any(dim=-1)[:, :, None, None]
    side_empty = torch.where(rows, ~has_inside, ~has_outside)
    return (rows == cols) | side_empty


def dense_reference_grid(
    driving_features, subject_features, driving_inside, subject_inside, temperature: float
) -> torch.Tensor:
    """Dense reference of the mask-aware grid: all pairs computed, cross pairs excluded.

    Same arguments and result as `sampling_grid`; used by the tests.
    """
    num, _, h, w = driving_features.shape
    driving = F.normalize(driving_features.float().flatten(2).transpose(1, 2), dim=-1)
    subject = F.normalize(subject_features.float().flatten(3).transpose(2, 3), dim=-1)
    coords = regular_grid(h, w, device=driving.device)
    grid = _dense_grid(driving, subject, coords, driving_inside, subject_inside, temperature)
    return grid.reshape(num, -1, h, w, 2)


def _authors_grid(driving, subject, coords, driving_inside, subject_inside, temperature):
    rows = driving_inside.float()[:, None, :, None]  # (N, 1, L, 1)
    cols = subject_inside.float()[:, :, :, None]  # (Ns, K, L, 1)
    inside = torch.matmul(driving[:, None] * rows, (subject * cols).transpose(-1, -2))
    outside = torch.matmul(driving[:, None] * (1 - rows), (subject * (1 - cols)).transpose(-1, -2))
    return torch.matmul(((inside + outside) * temperature).softmax(dim=-1), coords)
