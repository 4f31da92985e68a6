"""Regenerate tests/data/authors_face_reference.safetensors by running the authors' own code.

    python tests/authors_reference.py PATH/TO/WACV23_TSNet   # their checkout; about 2 minutes on 2 cores

Their repository (nihaomiao/WACV23_TSNet, MIT) runs as a new user would run it: their face demo
(demo/demo_face.py) with its path constants pointed at a temporary folder (the file asks users to
change them), `.cuda()` made a no-op, and empty stand-ins for torchvision where it cannot be
imported (they use it only to train: the VGG loss and colour jitter). None of their code is copied
here: this file makes seeded inputs, weights by a fixed rule in their checkpoint layout, runs their
code and stores what it produced. tests/test_authors_parity.py rebuilds the same weights and
inputs and checks tsnet-hf against the stored outputs.

The inputs make their demo's preprocessing exact and checkable: 256x256 frames whose first
frame's keypoints give their crop (0, 256, 0, 256), so their crop and resize change nothing, and a
driving video equal to the subject video, so their pose normalisation is the identity; their
5-frame moving average leaves the first and last driving frames as they are, and those two are
the ones stored.
"""

import argparse
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import types
import zlib
from pathlib import Path

import numpy as np
import torch

from synthetic import face_shape, place

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "data" / "authors_face_reference.safetensors"
NUM_FRAMES = 6  # their moving average needs 5; the first and last driving frames stay unsmoothed
DRIVING_ROWS = (0, NUM_FRAMES - 1)
SIZE = 256
SEED = 1234  # their demo's RANDOM_SEED: random.sample picks the K = 3 subject frames with it


def authors_state(config=None) -> dict:
    """Weights by a fixed rule in the authors' checkpoint layout: {"img_enc": {name: tensor}, ...}.

    Each tensor is Normal(0, 0.02) from a generator seeded with the CRC-32 of its full name, so
    the test rebuilds the same 86 M weights from nothing. Shapes come from our model built on
    the meta device (no memory), names from the converter's key map.
    """
    from tsnet_hf import TSNet, TSNetConfig
    from tsnet_hf.convert import authors_key_map

    config = config or TSNetConfig(authors_compat=True)
    with torch.device("meta"):
        shapes = {name: p.shape for name, p in TSNet(config).state_dict().items()}
    state = {}
    for theirs, ours in authors_key_map(config).items():
        part, name = theirs.split(".", 1)
        generator = torch.Generator().manual_seed(zlib.crc32(theirs.encode()))
        state.setdefault(part, {})[name] = torch.randn(shapes[ours], generator=generator) * 0.02
    return state


def subject_images(count: int = NUM_FRAMES, size: int = SIZE, seed: int = 0) -> np.ndarray:
    """(count, size, size, 3) uint8 RGB: 32-px colour blocks with pixel noise, from `seed`."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(40, 216, (count, size // 32, size // 32, 3))
    noise = rng.integers(-10, 11, (count, size, size, 3))
    return np.clip(blocks.repeat(32, axis=1).repeat(32, axis=2) + noise, 0, 255).astype(np.uint8)


def load_authors_code(repo) -> None:
    """Make their repository importable on a CPU: `.cuda()` a no-op, torchvision stood in if needed."""
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self
    try:
        import torchvision.transforms.functional  # noqa: F401
    except Exception:  # a CUDA torchvision beside CPU torch fails to import; they train with it only
        for name in (
            "torchvision",
            "torchvision.models",
            "torchvision.transforms",
            "torchvision.transforms.functional",
        ):
            sys.modules[name] = types.ModuleType(name)
        sys.modules["torchvision"].models = sys.modules["torchvision.models"]
        sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
        sys.modules["torchvision.transforms"].functional = sys.modules["torchvision.transforms.functional"]
    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))


def face_keypoints(crop_coords) -> np.ndarray:
    """(NUM_FRAMES, 68, 2) float32 dlib-layout faces moving a little; frame 0 placed so that
    `crop_coords(frame 0)` (their get_crop_coords) is the whole 256x256 frame."""

    def frame(k, center_y):
        shape = face_shape(mouth_open=6 + 4 * math.sin(k))
        center = (128.3 + 3 * math.sin(0.7 * k), center_y + 2 * math.sin(0.9 * k))
        return place(shape, 1.28 * (1 + 0.02 * math.sin(1.3 * k)), center, 0.05 * math.sin(k))[:, :2]

    for center_y in np.arange(120.0, 160.0, 0.25):
        if tuple(crop_coords(frame(0, center_y).astype(np.float32).astype(np.float64))) == (0, SIZE, 0, SIZE):
            return np.stack([frame(k, center_y) for k in range(NUM_FRAMES)]).astype(np.float32)
    raise RuntimeError("no face placement gives their crop (0, 256, 0, 256)")


def write_clip(folder: Path, name: str, images: np.ndarray, keypoints: np.ndarray):
    """Their demo's input layout: images/<name>/<name>_NNNN.png and labels/<name>/<name>_NNNN.txt."""
    from PIL import Image

    (folder / "images" / name).mkdir(parents=True)
    (folder / "labels" / name).mkdir(parents=True)
    for i, (image, points) in enumerate(zip(images, keypoints)):
        Image.fromarray(image).save(folder / "images" / name / f"{name}_{i:04d}.png")
        np.savetxt(
            folder / "labels" / name / f"{name}_{i:04d}.txt", points.astype(np.float64), delimiter=",", fmt="%.17g"
        )


def run_their_demo(repo: Path, work: Path, checkpoint: Path) -> np.ndarray:
    """Run demo/demo_face.py with its paths pointed at `work`; (T, 256, 256, 3) uint8 RGB outputs."""
    text = (repo / "demo" / "demo_face.py").read_text()
    paths = {
        "sub_images_path": work / "images" / "subj",
        "sub_labels_path": work / "labels" / "subj",
        "dri_images_path": work / "images" / "drv",
        "dri_labels_path": work / "labels" / "drv",
    }
    text = re.sub(r'RESTORE_FROM = .*?\.pth"', f"RESTORE_FROM = {str(checkpoint)!r}", text, flags=re.S)
    text = re.sub(r"^root_dir = .*$", f"root_dir = {str(work / 'out')!r}", text, flags=re.M)
    text = re.sub(r"^sys\.path\.append\(.*\)$", f"sys.path.append({str(repo)!r})", text, flags=re.M)
    for name, path in paths.items():
        text = re.sub(rf"^{name} = .*$", f"{name} = {str(path)!r}", text, flags=re.M)
    demo = work / "demo_face_here.py"
    demo.write_text(text)
    prelude = (
        f"import sys, runpy; sys.argv = ['demo_face.py']; import authors_reference; "
        f"authors_reference.load_authors_code({str(repo)!r}); "
        f"runpy.run_path({str(demo)!r}, run_name='__main__')"
    )
    env = dict(os.environ, PYTHONPATH=f"{HERE}{os.pathsep}{repo}")
    subprocess.run([sys.executable, "-c", prelude], cwd=repo, check=True, env=env)
    from PIL import Image

    panels = sorted((work / "out").glob("**/images/*/*_drv_*.png"))
    return np.stack([np.asarray(Image.open(p).convert("RGB"))[:, 2 * SIZE :] for p in panels])


def run_their_model(checkpoint: Path, work: Path, mean_bgr) -> dict:
    """Their model on their dataset's tensors, as their demo's loop feeds it; raw outputs and grids."""
    from dataset.dataset_video_face import FaceDatasetTest
    from model.TSNet import TSNet
    from utils.misc import vl2ch

    model = TSNet(is_train=False, label_nc=2, n_blocks=4, n_downsampling=3, n_source=3, return_flow=True)
    state = torch.load(checkpoint)
    for part in ("img_enc", "lbl_enc", "fuse_net", "dec"):
        getattr(model, part).load_state_dict(state[part])
    model.eval()
    dataset = FaceDatasetTest(
        str(work / "images" / "subj"),
        str(work / "labels" / "subj"),
        str(work / "images" / "drv"),
        str(work / "labels" / "drv"),
        mean=np.array(mean_bgr, dtype=np.float32),
        fix_crop_pos=True,
        max_frame_num=40,
    )
    src_imgs, src_lbls, src_bboxs, _, _, tar_lbls, tar_bboxs, _ = dataset[0]
    src_imgs, src_lbls, src_bboxs = (torch.from_numpy(a) for a in (src_imgs, src_lbls, src_bboxs))
    tar_lbls, tar_bboxs = torch.from_numpy(tar_lbls), torch.from_numpy(tar_bboxs)
    random.seed(SEED)
    refs = random.sample(list(range(src_imgs.size(0))), 3)  # their demo's draw, after random.seed(1234)
    raw, grids = [], []
    with torch.no_grad():
        for row in DRIVING_ROWS:
            model.set_test_input(
                src_img_list=src_imgs[refs].unsqueeze(1),
                src_lbl_list=vl2ch(src_lbls[refs], "face").unsqueeze(1),
                src_bbox_list=src_bboxs[refs].unsqueeze(1),
                tar_lbl=vl2ch(tar_lbls, "face")[row].unsqueeze(0),
                tar_bbox=tar_bboxs[row].unsqueeze(0),
            )
            model.forward()
            raw.append(model.rec_tar_img[0])
            grids.append(torch.stack([g[0] for g in model.warp_grid2d_list]))

    def cells(boxes):  # their nearest downsampling of the box maps to the 32x32 features
        return torch.nn.functional.interpolate(boxes[:, None].float(), (32, 32), mode="nearest")[:, 0].to(torch.uint8)

    rows = list(DRIVING_ROWS)
    return {
        "ref_rows": torch.tensor(refs),
        "raw": torch.stack(raw),
        "grid": torch.stack(grids),
        "subject_labels": src_lbls,
        "driving_labels": tar_lbls[rows],
        "subject_box_cells": cells(src_bboxs[refs]),
        "driving_box_cells": cells(tar_bboxs[rows]),
    }


def pack(labels: torch.Tensor) -> torch.Tensor:
    """(N, H, W) 0/1 -> (N, H*W/8) uint8 bits."""
    return torch.from_numpy(np.packbits(labels.numpy().astype(bool).reshape(len(labels), -1), axis=1))


def unpack(bits: torch.Tensor, size: int = SIZE) -> np.ndarray:
    """pack's inverse: (N, H, W) uint8 0/1."""
    return np.unpackbits(bits.numpy(), axis=1).reshape(len(bits), size, size)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("authors_repo", type=Path, help="a checkout of nihaomiao/WACV23_TSNet")
    parser.add_argument("--output", type=Path, default=REFERENCE)
    args = parser.parse_args(argv)
    from safetensors.torch import save_file

    from tsnet_hf.config import AUTHORS_FACE_MEAN_BGR

    repo = args.authors_repo.resolve()
    if not (repo / "demo" / "demo_face.py").is_file():
        raise SystemExit(f"{repo} has no demo/demo_face.py: give a checkout of nihaomiao/WACV23_TSNet.")
    load_authors_code(repo)
    from dataset.dataset_video_face import FaceDatasetTest

    keypoints = face_keypoints(lambda points: FaceDatasetTest.get_crop_coords(None, points))
    images = subject_images()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        checkpoint = work / "BranchGAN_rule.pth"
        torch.save(authors_state(), checkpoint)
        write_clip(work, "subj", images, keypoints)
        write_clip(work, "drv", images, keypoints)
        demo = run_their_demo(repo, work, checkpoint)
        outputs = run_their_model(checkpoint, work, AUTHORS_FACE_MEAN_BGR)
    tensors = {
        "keypoints": torch.from_numpy(keypoints),
        "ref_rows": outputs["ref_rows"],
        "driving_rows": torch.tensor(DRIVING_ROWS),
        "subject_labels": pack(outputs["subject_labels"]),
        "driving_labels": pack(outputs["driving_labels"]),
        "subject_box_cells": outputs["subject_box_cells"],
        "driving_box_cells": outputs["driving_box_cells"],
        "raw_every_4th": outputs["raw"][:, :, ::4, ::4].contiguous(),  # BGR minus mean, / 255
        "grid": outputs["grid"].contiguous(),
        "demo_every_2nd": torch.from_numpy(demo[list(DRIVING_ROWS)][:, ::2, ::2].copy()),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        tensors,
        args.output,
        metadata={
            "source": "nihaomiao/WACV23_TSNet demo/demo_face.py and model/TSNet.py, run by tests/authors_reference.py",
            "command": f"python tests/authors_reference.py {args.authors_repo}",
        },
    )
    print(f"wrote {args.output} ({args.output.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
