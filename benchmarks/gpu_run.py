"""One prepared GPU run (issue 15): train the face and body models at 256 px, benchmark the generator
and run the pipeline's generator stage, inside a fixed wall budget, with every result under $OUT.

    # 1. CPU machine: build the carry bundle and print the device tool's `run` call
    python benchmarks/gpu_run.py --prepare .device/bundle
    # 2. GPU machine, through the device tool's `run` (carry [".device/bundle"], timeout_s 600):
    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_run.py --bundle .device/bundle --out "$OUT" --budget 540
    # 3. CPU machine: check every sha256, reassemble the split files, unpack the archives
    python benchmarks/gpu_run.py --join FETCHED_FOLDER --into runs/gpu-run

    python benchmarks/gpu_run.py --bundle B --out DIR --device cpu --smoke   # the same run, tiny, on a CPU

The run, in order, each stage with its share of `--budget` (time a stage leaves passes to the next):
setup (unpack the bundle), train the face model, train the body model (progressive resolution from
the shipped 128 px checkpoints, the GPU recipes, bf16, channels_last, the largest batch that fits,
steps sized to the time left), the pipeline's generator stage from motion templates with the bf16
versus fp32 LPIPS check, the generator benchmark (eager first, torch.compile rows while time
remains), then the extras. Each stage but setup runs in its own process with a hard timeout, so a
hang or a CUDA error costs that stage only; results.json is rewritten after every stage, so a run
cut short leaves valid partial results. docs/gpu-run.md explains the bundle, the budget and the files.

Why a bundle: the GPU machine has no ../shared, no mediapipe and no network, and the working tree
plus carried paths may total 64 MiB; its files come back only from $OUT, at most 8 files of 16 MiB
(64 MiB together), so weights travel as tar.gz archives split into parts with a sha256 manifest.
"""

import argparse
import copy
import dataclasses
import gc
import gzip
import hashlib
import inspect
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "benchmarks"):  # the GPU machine runs from the tree: nothing is installed
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tsnet_hf.errors import InputError, TSNetError  # noqa: E402

MiB = 2**20
CARRY_LIMIT = 64 * MiB  # device tool: tracked + untracked-not-ignored files + carried paths
OUT_MAX_FILES, OUT_MAX_BYTES, OUT_MAX_FILE = 8, 64 * MiB, 16 * MiB  # what comes back from $OUT
PART_BYTES = OUT_MAX_FILE - 64 * 1024  # a margin under 16 MiB per returned file
MODES = ("face", "body")
RESULTS, LOG, MANIFEST, EXTRAS = "results.json", "log.txt", "manifest.json", "extras.tar.gz"
BUNDLE_INFO, BUNDLE_VERSION = "bundle.json", 1
VGG, ALEXNET, LPIPS_LIN = (
    "vgg16_imagenet_features.safetensors",
    "alexnet_imagenet_features.safetensors",
    "lpips_v0.1_lin_alex.safetensors",
)
INT8_SCALE = ".__int8_scale__"  # key suffix of a per-output-channel scale in an int8 state dict
# Wall budget shares, in run order. Training gets most; the benchmark's eager grid needs ~45 s on
# an H200 and each torch.compile row 20-60 s more; the pipeline stage and setup ~10-20 s each.
SHARES = {"setup": 0.03, "train_face": 0.35, "train_body": 0.35, "pipeline": 0.07, "bench": 0.18, "finish": 0.02}
TEMPLATES = {"face": "face_talking.npz", "body": "body_kpop.npz"}
LIVEPORTRAIT_MS = 15.0  # its networks per frame, RTX 4090, fp16, compiled (LivePortrait's report)
PROBE_TIMED_STEPS = 2
PROBE_HEADROOM = 0.85  # a probed batch may peak at this share of the GPU memory


# ----- small helpers ----------------------------------------------------------------------------------


def write_json(path, value) -> None:
    """Write JSON through a temporary file and a rename, so a reader (or a kill) never sees half."""
    path = Path(path)
    partial = path.with_name(f".tmp-{path.name}")
    partial.write_text(json.dumps(value, indent=1, default=str), encoding="utf-8")
    os.replace(partial, path)


def read_json(path, default=None):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(MiB), b""):
            digest.update(chunk)
    return digest.hexdigest()


def folder_bytes(folder) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def mib(count: int) -> str:
    return f"{count / MiB:.1f} MiB"


def tail(path, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def one_line(error: BaseException) -> str:
    """An exception as one short line for results.json."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}"[:300]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, dtype: torch.dtype):
    """bf16 autocast as the pipeline uses it; a no-op context for fp32."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


def is_oom(error: BaseException) -> bool:
    """Whether an exception is the GPU running out of memory (cuDNN reports some as RuntimeError)."""
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower()
    )


class Log:
    """Lines to stdout (the device tool returns its tail) and to $OUT/log.txt (returned whole)."""

    def __init__(self, path: Path | None):
        self.path, self.start = path, time.time()

    def __call__(self, line: str) -> None:
        line = f"[{time.time() - self.start:6.1f} s] {line}"
        print(line, flush=True)
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")


# ----- split files, the manifest, join --------------------------------------------------------------------


def split_into(source: Path, folder: Path, limit: int = PART_BYTES) -> dict:
    """Copy `source` into `folder`, as `NAME.part-00`, `NAME.part-01`, ... of at most `limit` bytes
    when it is larger. Returns its manifest entry {"bytes", "sha256"[, "parts": [{"name", "bytes",
    "sha256"}]]}."""
    entry = {"bytes": source.stat().st_size, "sha256": sha256_file(source)}
    if entry["bytes"] <= limit:
        shutil.copyfile(source, folder / source.name)
        return entry
    parts = []
    with open(source, "rb") as handle:
        for index, chunk in enumerate(iter(lambda: handle.read(limit), b"")):
            part = folder / f"{source.name}.part-{index:02d}"
            part.write_bytes(chunk)
            parts.append({"name": part.name, "bytes": len(chunk), "sha256": hashlib.sha256(chunk).hexdigest()})
    entry["parts"] = parts
    return entry


def entry_files(name: str, entry: dict) -> list[str]:
    """The file names an entry occupies in the output folder."""
    return [part["name"] for part in entry["parts"]] if "parts" in entry else [name]


def record_file(out: Path, name: str, entry: dict) -> None:
    """Add one file (and its parts) to out/manifest.json, rewritten whole each time."""
    manifest = read_json(out / MANIFEST) or {"version": 1, "files": {}}
    manifest["files"][name] = entry
    write_json(out / MANIFEST, manifest)


def join(fetched, into, extract: bool = True) -> list[Path]:
    """Reassemble and check the files a GPU run wrote, as listed in its manifest.json.

    Every part and every whole file must match its sha256; tar.gz archives are then unpacked into
    `into` (face-256/model/ is a checkpoint folder). results.json and log.txt, rewritten during the
    run and so not in the manifest, are copied as they are.

    Args:
        fetched: the folder holding the run's files (the device tool's files_at).
        into: where the joined files and the unpacked archives go (created).
    Returns:
        The joined files.
    Raises:
        InputError: the manifest is missing, a part is missing, or a checksum differs.
    """
    fetched, into = Path(fetched), Path(into)
    manifest = read_json(fetched / MANIFEST)
    if manifest is None:
        raise InputError(
            f"{fetched} has no readable {MANIFEST}: give the folder the GPU run's files were fetched into."
        )
    into.mkdir(parents=True, exist_ok=True)
    joined = []
    for name, entry in manifest["files"].items():
        joined.append(_join_one(fetched, into, name, entry))
        if extract and name.endswith(".tar.gz"):
            _extract(joined[-1], into)
    for name in (RESULTS, LOG):
        if (fetched / name).is_file() and (fetched / name).resolve() != (into / name).resolve():
            shutil.copyfile(fetched / name, into / name)
    return joined


def _join_one(fetched: Path, into: Path, name: str, entry: dict) -> Path:
    pieces = entry.get("parts") or [{"name": name, "bytes": entry["bytes"], "sha256": entry["sha256"]}]
    target, whole = into / name, hashlib.sha256()
    partial = into / f".joining-{name}"
    with open(partial, "wb") as sink:
        for piece in pieces:
            path = fetched / piece["name"]
            if not path.is_file():
                partial.unlink()
                raise InputError(f"{path} is missing: fetch all {len(pieces)} file(s) of {name} listed in {MANIFEST}.")
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() != piece["sha256"]:
                partial.unlink()
                raise InputError(f"{path} does not match its sha256 in {MANIFEST}: fetch it again.")
            whole.update(data)
            sink.write(data)
    if whole.hexdigest() != entry["sha256"]:
        partial.unlink()
        raise InputError(
            f"The parts of {name} join into a file whose sha256 differs from {MANIFEST}'s: fetch them again."
        )
    os.replace(partial, target)
    return target


def _extract(archive: Path, into: Path) -> None:
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():  # our own archives hold plain files under one folder
            unsafe = member.name.startswith("/") or ".." in Path(member.name).parts
            if unsafe or not (member.isfile() or member.isdir()):
                raise InputError(
                    f"{archive} holds an unexpected entry {member.name!r}: it is not an archive this script wrote."
                )
        tar.extractall(into)


# ----- compact weights: int8 per output channel, gzip ---------------------------------------------------


def quantize_int8(state: dict) -> dict:
    """Conv / linear weights (2+ dims) -> int8 with one fp32 scale per output channel (max |w| / 127);
    other tensors -> fp16. Half the bytes of fp16, error at most scale / 2 per weight."""
    out = {}
    for key, value in state.items():
        value = value.float()
        if value.ndim >= 2:
            scale = value.abs().flatten(1).amax(1).clamp_min(1e-12) / 127
            out[key] = torch.round(value / scale.view(-1, *[1] * (value.ndim - 1))).clamp(-127, 127).to(torch.int8)
            out[key + INT8_SCALE] = scale
        else:
            out[key] = value.half()
    return out


def dequantize_int8(state: dict) -> dict:
    """The inverse of `quantize_int8` (fp32 tensors); tensors without a scale are only cast."""
    out = {}
    for key, value in state.items():
        if key.endswith(INT8_SCALE):
            continue
        scale = state.get(key + INT8_SCALE)
        out[key] = value.float() if scale is None else value.float() * scale.view(-1, *[1] * (value.ndim - 1))
    return out


def save_gz(tensors: dict, path: Path) -> None:
    """safetensors bytes, gzipped (fp16 weights shrink by ~8 %, int8 ones more)."""
    from safetensors.torch import save

    path.write_bytes(gzip.compress(save({k: v.contiguous() for k, v in tensors.items()}), compresslevel=9))


def load_gz(path: Path) -> dict:
    from safetensors.torch import load

    return load(gzip.decompress(Path(path).read_bytes()))


def layer_index(key: str) -> int:
    """'features.24.weight' -> 24."""
    return int(key.split(".")[1])


def vgg_layers_used() -> int:
    """How many layers of VGG16's `features` the perceptual loss runs (up to relu5_1: 26); the
    convs after it need not travel."""
    from training.vision import VGGFeatures, import_torchvision

    return len(VGGFeatures(import_torchvision().models.vgg16(weights=None).features, "vgg16").features)


# ----- preparation on the CPU machine -----------------------------------------------------------------------


def tree_files(root: Path = ROOT) -> dict[str, int]:
    """Bytes of every file that travels without `carry` (tracked + untracked-not-ignored), by path."""
    try:
        listing = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root,
            capture_output=True,
            check=True,
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError) as error:
        raise InputError(
            f"Cannot list the repository's files with git ({error}): run --prepare inside the git checkout."
        ) from None
    sizes = {}
    for name in filter(None, listing.split("\0")):
        path = root / name
        if path.is_file():
            sizes[name] = path.stat().st_size
    return sizes


def git_state(root: Path = ROOT) -> dict:
    def git(*args):
        result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else None

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}


def prepare_weights(source: Path, folder: Path, vgg_format: str) -> dict:
    """VGG16 (only the layers the loss runs), AlexNet and the LPIPS linear weights, small.

    Returns the bundle.json record: the shapes of the VGG tensors left out (refilled with zeros
    on the GPU machine, where the strict loader wants them) and how many layers the loss uses.
    """
    from safetensors.torch import load_file

    for name in (VGG, ALEXNET, LPIPS_LIN):
        if not (source / name).is_file():
            raise InputError(
                f"{source / name} is missing: give --weights a folder with {VGG}, {ALEXNET} and {LPIPS_LIN} "
                "(../shared/weights has them)."
            )
    folder.mkdir(parents=True)
    used = vgg_layers_used()
    vgg = load_file(str(source / VGG))
    kept = {k: v for k, v in vgg.items() if layer_index(k) < used}
    save_gz(
        quantize_int8(kept) if vgg_format == "int8" else {k: v.half() for k, v in kept.items()}, folder / f"{VGG}.gz"
    )
    save_gz({k: v.half() for k, v in load_file(str(source / ALEXNET)).items()}, folder / f"{ALEXNET}.gz")
    shutil.copyfile(source / LPIPS_LIN, folder / LPIPS_LIN)
    return {
        "vgg_format": vgg_format,
        "vgg_layers_used": used,
        "vgg_dropped": {k: list(v.shape) for k, v in vgg.items() if layer_index(k) >= used},
    }


def prepare_init(kind: str, sources: dict, folder: Path) -> dict:
    """The 128 px checkpoints the GPU run starts from: int8 (default; two fp16 small models alone
    would fill the 64 MiB), fp16, "tree" (the GPU run reads checkpoints/ from the working tree) or
    "none" (train from scratch)."""
    record = {"kind": kind, "sources": {m: _in_tree(p) for m, p in sources.items()}}
    if kind == "none":
        return record
    for mode, path in sources.items():
        if not (Path(path) / "model.safetensors").is_file():
            raise InputError(
                f"{path} is not a checkpoint folder (no model.safetensors): export the CPU run first "
                f"(training/export.py), give --init-{mode}, or use --init none."
            )
    if kind == "tree":
        outside = [m for m, p in record["sources"].items() if Path(p).is_absolute()]
        if outside:
            raise InputError(
                f"--init tree reads the checkpoints from the working tree, but the {outside[0]} one is "
                "outside the checkout: use --init int8."
            )
        return record
    from safetensors.torch import load_file

    folder.mkdir(parents=True)
    for mode, path in sources.items():
        state = load_file(str(Path(path) / "model.safetensors"))
        save_gz(
            quantize_int8(state) if kind == "int8" else {k: v.half() for k, v in state.items()},
            folder / f"{mode}.safetensors.gz",
        )
        shutil.copyfile(Path(path) / "config.json", folder / f"{mode}.config.json")
    return record


def _in_tree(path) -> str:
    """A path relative to the checkout when it is inside it (as the GPU machine will see it)."""
    try:
        return Path(path).resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def raw_cache(source: Path, mode: str, size: int, work: Path, say) -> Path:
    """A cache of `source` at `size` px: `source` itself when it is one, else the videos
    preprocessed (mediapipe, minutes) into work/raw-MODE-SIZE, which a rerun reuses."""
    from training import preprocess

    if preprocess.is_cache_dir(source):
        made = preprocess.read_cache_settings(source)
        if made.mode != mode or made.size != size:
            raise InputError(
                f"{source} is a {made.mode} cache at {made.size} px, not {mode} at {size} px: give the "
                "videos or a matching cache."
            )
        return source
    if not Path(source).is_dir():
        raise InputError(f"{source} does not exist: give --{mode}-data a folder of videos or a cache.")
    target = work / f"raw-{mode}-{size}"
    say(f"preprocessing {source} into {target} (landmark detection: minutes)")
    preprocess.preprocess_folder(source, target, preprocess.CacheSettings(mode, size), progress=None)
    return target


def holdout_names(cache: Path, recipe: list[str]) -> tuple[list[str], str]:
    """The recipe's held-out names found in the cache, else (a synthetic cache) its last video."""
    names = json.loads((cache / "index.json").read_text(encoding="utf-8"))["videos"]
    found = [part for part in recipe if any(part in name for name in names)]
    if found:
        return found, "the recipe's hold-out"
    if len(names) < 2:
        raise InputError(f"{cache} holds {len(names)} video(s): training needs one to hold out and one to train on.")
    return [sorted(names)[-1]], "none of the recipe's names is in the cache: its last video"


def prepare_subject(cache: Path, holdout: list[str], size: int, path: Path, pool_size: int) -> dict:
    """A precomputed pipeline subject from the first held-out video: `pool_size` diverse inference
    crops (webp 95) and their landmarks, plus every row's landmarks (the alignment statistics):
    what RetargetPipeline's subject stage computes with mediapipe, which the GPU machine lacks."""
    import cv2

    from training.data import CachedVideo, central_view
    from tsnet_hf.selection import diverse_rows

    names = json.loads((cache / "index.json").read_text(encoding="utf-8"))["videos"]
    name = next(n for part in holdout for n in sorted(names) if part in n)
    video = CachedVideo(cache / name)
    rows = video.usable_rows
    rows = rows[np.linspace(0, len(rows) - 1, min(len(rows), 300)).round().astype(int)]
    images, points = central_view(video, rows, size)
    pool = diverse_rows(points, pool_size)
    encoded = [
        cv2.imencode(".webp", cv2.cvtColor(images[r], cv2.COLOR_RGB2BGR), [cv2.IMWRITE_WEBP_QUALITY, 95])[1]
        for r in pool
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        crops=np.concatenate(encoded).astype(np.uint8),
        offsets=np.cumsum([0] + [len(e) for e in encoded]),
        points=points[pool].astype(np.float32),
        frame_indices=rows[pool].astype(np.int64),
        all_points=points.astype(np.float16),
        size=np.int64(size),
        summary=np.str_(f"{name}: {len(pool)} pool crops of {len(rows)} rows"),
    )
    return {"video": name, "pool": int(len(pool)), "rows": int(len(rows))}


def frame_bytes_guess(storage: str, mode: str, size: int) -> float:
    """Bytes per stored frame at `size` px (training/README.md's measurements at 256 px, every frame)."""
    per_256 = {"mp4v": {"face": 2.5, "body": 4.5}}.get(storage, {"face": 4.5, "body": 4.5})[mode] * 1024
    return per_256 * (size / 256) ** 2


def fit_caches(raw: dict, target: Path, budget: int, storage: str, quality, stride: int | None, say) -> dict:
    """Compact caches of every mode with one frame stride, the smallest that fits in `budget` bytes
    (or the one given). A compact video frame costs more at larger strides (fewer frames to predict
    from), so each try re-measures. Returns {"frame_stride", "bytes", "frames": {mode: rows}}."""
    from training import preprocess

    rows = {
        m: sum(int(np.load(p / "detected.npy").sum()) for p in Path(c).iterdir() if (p / "detected.npy").is_file())
        for m, c in raw.items()
    }
    guess = stride or max(
        1,
        math.ceil(
            sum(rows[m] * frame_bytes_guess(storage, m, _cache_size(c)) for m, c in raw.items()) / max(budget, 1)
        ),
    )
    for _ in range(8):
        trial = target.with_name(f".{target.name}-stride-{guess}")
        shutil.rmtree(trial, ignore_errors=True)
        for mode, cache in raw.items():
            preprocess.convert_cache(cache, trial / mode, storage, quality, guess, progress=None)
        used = folder_bytes(trial)
        say(f"caches at --frame-stride {guess} ({storage}): {mib(used)} of {mib(budget)} left for them")
        if used <= budget:
            trial.rename(target)
            return {
                "frame_stride": guess,
                "bytes": used,
                "storage": storage,
                "quality": quality,
                "frames": {m: math.ceil(r / guess) for m, r in rows.items()},
            }
        shutil.rmtree(trial)
        if stride:
            raise InputError(
                f"At --frame-stride {stride} the caches take {mib(used)} but only {mib(budget)} are left under "
                "the carry limit: give a larger --frame-stride, or leave it out to search."
            )
        guess = max(guess + 1, math.ceil(guess * used / budget * 1.1))
    raise InputError(
        f"No frame stride up to {guess} fits the caches in {mib(budget)}: carry less (--init none, "
        "--vgg int8) or store smaller (--storage mp4v)."
    )


def _cache_size(cache: Path) -> int:
    return json.loads((Path(cache) / "index.json").read_text(encoding="utf-8"))["settings"]["size"]


def write_bundle_info(bundle: Path, record: dict) -> None:
    files = {
        str(p.relative_to(bundle)): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(bundle.rglob("*"))
        if p.is_file() and p.name != BUNDLE_INFO
    }
    write_json(bundle / BUNDLE_INFO, {**record, "files": files})


def run_invocation(bundle: Path, budget: int) -> tuple[str, list[str]]:
    """(command, carry) for the device tool's `run`."""
    relative = _in_tree(bundle)
    command = f'PYTHONUNBUFFERED=1 python3 benchmarks/gpu_run.py --bundle {relative} --out "$OUT" --budget {budget:g}'
    return command, [relative]


def prepare(args) -> int:
    """--prepare BUNDLE: build the carry bundle, check it fits, print the `run` call."""
    say = Log(None)
    bundle = Path(args.prepare).resolve()
    _check_bundle_location(bundle)
    work = Path(args.work).resolve() if args.work else ROOT / ".device" / "work"  # raw caches, kept for reruns
    limit = int(args.carry_limit_mib * MiB - args.margin_mib * MiB)
    tree = tree_files()
    tree_total = sum(tree.values())
    checkpoints = sum(v for k, v in tree.items() if k.startswith("checkpoints/"))
    say(f"working tree: {mib(tree_total)} travel without carry (checkpoints/: {mib(checkpoints)})")
    if args.init != "tree" and checkpoints:
        # The bundle carries the starting weights itself, so the shipped checkpoints need not travel:
        # they are moved aside for the run (docs/gpu-run.md), and only the rest of the tree counts.
        tree_total -= checkpoints
        say(
            f"checkpoints/ is carried in the bundle: move it aside for the run "
            f"(mv checkpoints ../checkpoints-aside; back after); the tree then takes {mib(tree_total)}"
        )
    if tree_total >= limit:
        raise InputError(
            f"The working tree alone is {mib(tree_total)} (checkpoints/ {mib(checkpoints)}), over the "
            f"{mib(limit)} the device tool carries: keep large files out of the tree before a GPU run."
        )
    partial = bundle.with_name(f".{bundle.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        record = build_bundle(args, partial, work, tree_total, limit, say)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    total = tree_total + folder_bytes(partial)
    if total > limit:
        shutil.rmtree(partial, ignore_errors=True)
        raise InputError(
            f"The bundle and the tree take {mib(total)}, over the {mib(limit)} limit: give a larger --frame-stride."
        )
    shutil.rmtree(bundle, ignore_errors=True)
    partial.rename(bundle)
    _print_invocation(bundle, record, total, args.budget)
    return 0


def build_bundle(args, partial: Path, work: Path, tree_total: int, limit: int, say) -> dict:
    """Fill `partial` with the bundle (see docs/gpu-run.md) and return its bundle.json record."""
    record = {
        "version": BUNDLE_VERSION,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "git": git_state(),
        "size": args.size,
        "tree_bytes": tree_total,
        "carry_limit": limit,
    }
    sources = {"face": Path(args.init_face), "body": Path(args.init_body)}
    record["init"] = prepare_init(args.init, sources, partial / "init")
    record["weights"] = prepare_weights(Path(args.weights), partial / "weights", args.vgg)
    raw = {
        "face": raw_cache(Path(args.face_data), "face", args.size, work, say),
        "body": raw_cache(Path(args.body_data), "body", args.size, work, say),
    }
    record["holdout"], record["holdout_source"], record["subject"] = {}, {}, {}
    pool_size = pipeline_defaults().pool_size
    for mode in MODES:
        recipe = json.loads((ROOT / "training" / "recipes" / f"gpu-{mode}.json").read_text(encoding="utf-8"))
        record["holdout"][mode], record["holdout_source"][mode] = holdout_names(raw[mode], recipe.get("holdout", []))
        record["subject"][mode] = prepare_subject(
            raw[mode], record["holdout"][mode], args.size, partial / "subject" / f"{mode}.npz", pool_size
        )
    fixed = tree_total + folder_bytes(partial) + 64 * 1024  # bundle.json
    say(f"weights, init and subjects: {mib(folder_bytes(partial))}")
    if fixed >= limit:
        raise InputError(
            f"The tree and the weights take {mib(fixed)} of the {mib(limit)} carry limit, which leaves "
            "nothing for the caches: use --init none (train from scratch), or --vgg int8."
        )
    record["caches"] = fit_caches(
        raw, partial / "data", limit - fixed, args.storage, args.quality, args.frame_stride, say
    )
    record["sources"] = {m: str(c) for m, c in raw.items()}
    write_bundle_info(partial, record)
    return record


def _check_bundle_location(bundle: Path) -> None:
    """`carry` takes ignored folders of the checkout: refuse a folder that would travel with the
    tree anyway; a folder outside the checkout (tests) only gets a warning."""
    try:
        relative = bundle.relative_to(ROOT)
    except ValueError:
        print(f"note: {bundle} is outside the checkout; carry it from a copy in .device/bundle.", flush=True)
        return
    ignored = subprocess.run(["git", "check-ignore", "-q", str(relative)], cwd=ROOT).returncode == 0
    if not ignored:
        raise InputError(
            f"{relative} is not ignored by git, so it would travel as part of the tree: use .device/bundle."
        )


def _print_invocation(bundle: Path, record: dict, total: int, budget: int) -> None:
    command, carry = run_invocation(bundle, budget)
    caches = record["caches"]
    print(
        f"\nBundle {bundle}: {mib(folder_bytes(bundle))}; with the working tree {mib(total)} of "
        f"{mib(record['carry_limit'])}. Caches: {caches['storage']} at --frame-stride {caches['frame_stride']} "
        f"({caches['frames']['face']} face, {caches['frames']['body']} body frames); init: {record['init']['kind']}."
    )
    print("\nRun it once on the GPU machine with the device tool's `run`:")
    print(f"  command:   {command}")
    print("  timeout_s: 600")
    print(f"  carry:     {json.dumps(carry)}")
    print("Then: python benchmarks/gpu_run.py --join FILES_AT --into runs/gpu-run   (docs/gpu-run.md)")


# ----- the GPU side: the bundle -------------------------------------------------------------------------------


def read_bundle(bundle: Path) -> dict:
    """bundle.json, after checking every file's sha256 (a carry cut short shows here, not mid-run)."""
    info = read_json(bundle / BUNDLE_INFO)
    if info is None or info.get("version") != BUNDLE_VERSION:
        raise InputError(
            f"{bundle} is not a bundle of this script (no {BUNDLE_INFO} of version {BUNDLE_VERSION}): "
            "build it with --prepare and carry it."
        )
    for name, entry in info["files"].items():
        path = bundle / name
        if not path.is_file() or path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            raise InputError(f"{path} is missing or differs from {BUNDLE_INFO}: prepare and carry the bundle again.")
    return info


def unpack_weights(bundle: Path, info: dict, folder: Path) -> dict:
    """The weights files train.py and LPIPS read, in `folder`: VGG16 with the layers the loss never
    runs refilled with zeros (the loader is strict), checked to be unused."""
    from safetensors.torch import save_file

    from training.vision import load_vgg

    folder.mkdir(parents=True, exist_ok=True)
    record = info["weights"]
    vgg = load_gz(bundle / "weights" / f"{VGG}.gz")
    vgg = {k: v.half() for k, v in (dequantize_int8(vgg) if record["vgg_format"] == "int8" else vgg).items()}
    vgg.update({k: torch.zeros(shape, dtype=torch.float16) for k, shape in record["vgg_dropped"].items()})
    save_file(vgg, str(folder / VGG))
    if len(load_vgg(folder / VGG).features) != record["vgg_layers_used"]:
        raise InputError(
            "This checkout's perceptual loss runs other VGG layers than the bundle kept: prepare it again."
        )
    save_file(load_gz(bundle / "weights" / f"{ALEXNET}.gz"), str(folder / ALEXNET))
    shutil.copyfile(bundle / "weights" / LPIPS_LIN, folder / LPIPS_LIN)
    return {name: str(folder / name) for name in (VGG, ALEXNET, LPIPS_LIN)}


def unpack_init(bundle: Path, info: dict, folder: Path) -> dict:
    """{mode: checkpoint folder} to start from (none: from scratch)."""
    from tsnet_hf import TSNet, TSNetConfig
    from tsnet_hf.hub import load_state_strict

    kind = info["init"]["kind"]
    if kind == "none":
        return {}
    if kind == "tree":  # paths relative to the checkout, which sits elsewhere on the GPU machine
        return {mode: str(ROOT / path) for mode, path in info["init"]["sources"].items()}
    from safetensors.torch import save_file

    dirs = {}
    for mode in MODES:
        config = bundle / "init" / f"{mode}.config.json"
        state = load_gz(bundle / "init" / f"{mode}.safetensors.gz")
        state = {k: v.float() for k, v in (dequantize_int8(state) if kind == "int8" else state).items()}
        load_state_strict(TSNet(TSNetConfig.from_json_file(config)), state, f"bundle init {mode}")  # fits its config
        # The two files TSNet.from_pretrained reads, written directly: setup needs no Hub mixin.
        (folder / mode).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(config, folder / mode / "config.json")
        save_file(state, str(folder / mode / "model.safetensors"))
        dirs[mode] = str(folder / mode)
    return dirs


def decode_check(cache: Path) -> str | None:
    """None when this OpenCV decodes the cache's first video, else why not (mp4v needs OpenCV's FFmpeg)."""
    from training import preprocess

    names = json.loads((cache / "index.json").read_text(encoding="utf-8"))["videos"]
    try:
        frames = preprocess.read_frames(cache / names[0])
        return None if len(frames) else "no frame decoded"
    except Exception as error:  # any failure means: do not train on it
        return one_line(error)


def machine_info() -> dict:
    """What the orchestrator can tell without touching CUDA (the stages report the GPU itself)."""
    import cv2

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cpus": os.cpu_count(),
        "opencv": cv2.__version__,
        "opencv_ffmpeg": any("FFMPEG" in line and "YES" in line for line in cv2.getBuildInformation().splitlines()),
    }
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        info["nvidia_smi"] = smi.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        info["nvidia_smi"] = None
    return info


def device_info(device: torch.device) -> dict:
    if device.type != "cuda":
        return {"device": "cpu", "threads": torch.get_num_threads()}
    props = torch.cuda.get_device_properties(device)
    return {
        "device": props.name,
        "gpu_memory_gib": round(props.total_memory / 2**30, 1),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "torch": torch.__version__,
    }


# ----- stage: train one model (a child process) --------------------------------------------------------------


def probe_batch(step, start: int, on_oom=None) -> tuple[int, float, list[dict]]:
    """The largest batch, halving from `start`, whose training step does not run out of memory.

    Args:
        step: callable(batch) -> seconds per step (raises torch.OutOfMemoryError when it does not fit).
        start: the first batch tried. on_oom: called after each failure (free the memory).
    Returns:
        (batch, seconds per step, every try as {"batch", "fits", "step_s"}).
    Raises:
        InputError: not even a batch of 1 fits.
    """
    tries, batch = [], max(1, int(start))
    while batch >= 1:
        failed = False
        try:
            seconds = step(batch)
        except Exception as error:  # only memory errors halve, the rest propagate
            if not is_oom(error):
                raise
            failed = True
        if not failed:
            tries.append({"batch": batch, "fits": True, "step_s": seconds})
            return batch, seconds, tries
        tries.append({"batch": batch, "fits": False, "step_s": None})
        if on_oom is not None:
            on_oom()  # outside the except block: its traceback no longer holds the tensors
        batch //= 2
    raise InputError("Not even one clip per step fits in the GPU's memory: use a smaller preset or resolution.")


def _probe_step(trainer, peaks: dict):
    """step(batch) -> seconds: PROBE_TIMED_STEPS real training steps on one clip repeated. A batch
    whose peak passes PROBE_HEADROOM of the GPU's memory counts as not fitting: the run itself
    also validates, and its allocator fragments over hundreds of steps."""
    from training.data import to_model_inputs

    item, device = trainer.dataset[0], trainer.accelerator.device

    def step(batch_size: int) -> float:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        items = torch.utils.data.default_collate([item] * batch_size)
        batch = to_model_inputs(items, device, trainer.config.mask_channels)
        trainer.optimise(batch)  # the first step at a shape pays cuDNN's algorithm search
        synchronize(device)
        start = time.perf_counter()
        for _ in range(PROBE_TIMED_STEPS):
            trainer.optimise(batch)
        synchronize(device)
        seconds = (time.perf_counter() - start) / PROBE_TIMED_STEPS
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device) / torch.cuda.get_device_properties(device).total_memory
            peaks[batch_size] = round(peak, 3)
            if peak > PROBE_HEADROOM:
                raise torch.OutOfMemoryError(f"batch {batch_size} peaks at {peak:.0%} of the GPU memory")
        return seconds

    return step


def _snapshot(trainer):
    model = trainer.accelerator.unwrap_model(trainer.model)
    return (
        {k: v.detach().clone() for k, v in model.state_dict().items()},
        copy.deepcopy(trainer.opt_g.state_dict()),
        copy.deepcopy(trainer.opt_d.state_dict()),
    )


def _restore(trainer, snapshot) -> None:
    """Undo the probe's optimiser steps: the run starts from the checkpoint as if never probed."""
    weights, opt_g, opt_d = snapshot
    trainer.accelerator.unwrap_model(trainer.model).load_state_dict(weights)
    trainer.opt_g.load_state_dict(opt_g)
    trainer.opt_d.load_state_dict(opt_d)


def _free(trainer) -> None:
    for optimizer in (trainer.opt_g, trainer.opt_d):
        optimizer.zero_grad(set_to_none=True)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def stage_train(args) -> None:
    """Build the Trainer once, probe the batch on it, size the steps to the time left, train, export.

    The probe's steps count in train.py's own clock (setup counts in --time-budget), and their
    weight updates are undone. Steps: 90 % of the time left over the probed seconds per step, so
    that the learning-rate schedule (warm-up = all steps, decay from half) runs to its end.
    """
    from training import train

    summary_path = Path(args.work) / f"train-{args.mode}.json"
    summary = {"mode": args.mode, "status": "building"}
    targs = train.parse_args(["--config", args.config])
    targs.steps = targs.warmup_steps = 10**6  # the probe runs reconstruction steps only, as the run
    trainer = train.Trainer(targs)
    summary.update(device_info(trainer.accelerator.device), built_s=round(trainer.elapsed(), 1), status="probing")
    write_json(summary_path, summary)
    snapshot, peaks = _snapshot(trainer), {}
    batch, step_s, tries = probe_batch(_probe_step(trainer, peaks), args.max_batch, lambda: _free(trainer))
    for attempt in tries:
        attempt["peak_memory_fraction"] = peaks.get(attempt["batch"])
    _restore(trainer, snapshot)
    _free(trainer)
    left = args.until - time.time() - args.reserve
    steps = max(1, int(0.9 * max(left, 0) / step_s))
    if args.max_steps:
        steps = min(steps, args.max_steps)
    _set_run_length(trainer, batch, steps, left)
    summary.update(
        batch=batch,
        step_s=round(step_s, 4),
        samples_per_s=round(batch / step_s, 1),
        probe=tries,
        steps_planned=steps,
        seconds_planned=round(max(left, 0), 1),
        status="training",
    )
    write_json(summary_path, summary)
    trainer.run()
    summary.update(
        steps_done=trainer.step, train_s=round(trainer.elapsed(), 1), history=trainer.history, status="exporting"
    )
    write_json(summary_path, summary)
    note = (
        f"Trained further at {trainer.config.image_size} px on {summary.get('device')} by benchmarks/gpu_run.py: "
        f"{trainer.step} steps of {batch} clips in {trainer.elapsed() / 60:.1f} min of wall time."
    )
    export_checkpoint(trainer.output, Path(args.work) / "export" / args.mode, Path(args.recipe), note)
    summary["status"] = "done"
    write_json(summary_path, summary)


def export_checkpoint(run: Path, target: Path, recipe: Path, note: str = "") -> None:
    """training/export.py's fp16 export; the note goes into the card where export() takes one."""
    from training.export import export

    extra = {"note": note} if "note" in inspect.signature(export).parameters else {}
    export(run, target, [], None, recipe, **extra)


def _set_run_length(trainer, batch: int, steps: int, seconds: float) -> None:
    from training import checkpoints as train_checkpoints

    args = trainer.args
    args.batch_size, args.steps, args.warmup_steps = batch, steps, steps
    args.save_every = args.image_every = max(1, steps // 2)  # one checkpoint on the way: a kill keeps it
    args.log_every = max(1, min(args.log_every, steps // 20))
    args.time_budget = (trainer.elapsed() + max(seconds, 1.0)) / 60
    train_checkpoints.write_json(trainer.output / "training_args.json", vars(args))


# ----- stage: generator benchmark (a child process) ---------------------------------------------------------


@dataclasses.dataclass
class BenchPlan:
    models: list  # (preset, output)
    ks: list
    batches: list  # [1, batched]
    repeats: int
    backend: str  # torch.compile backend: inductor on the GPU, eager (tracing only) in the smoke run
    compile_rows: int  # at most
    authors_frames: int

    @classmethod
    def for_run(cls, smoke: bool, batched: int) -> "BenchPlan":
        if smoke:
            return cls([("tiny", "decoder"), ("tiny", "blend")], [1, 3, 5], [1, 2], 1, "eager", 1, 2)
        return cls(
            [("paper", "decoder"), ("small", "decoder"), ("small", "blend")],
            [1, 3, 5],
            [1, batched],
            3,
            "inductor",
            99,
            8,
        )


def bench_specs(plan: BenchPlan) -> list[dict]:
    """Every row, most wanted first: the headline (the authors' way, then ours eager and compiled:
    first model, K = 3, bf16, batched), the eager grid, the authors' other K, the other compile rows."""
    ref, big = plan.models[0], plan.batches[-1]

    def ours(model, k, batch, dtype, compiled):
        return {
            "kind": "ours",
            "preset": model[0],
            "output": model[1],
            "K": k,
            "batch": batch,
            "dtype": dtype,
            "compile": compiled,
        }

    def authors(k):
        return {
            "kind": "authors",
            "preset": ref[0],
            "output": "decoder",
            "K": k,
            "batch": 1,
            "dtype": "fp32",
            "compile": False,
        }

    grid = [
        ours(m, k, b, d, False) for m in plan.models for k in plan.ks for b in plan.batches for d in ("bf16", "fp32")
    ]
    compiled = [
        ours(ref, 3, big, "bf16", True),
        ours(plan.models[-1], 3, big, "bf16", True),
        ours(ref, 3, 1, "bf16", True),
        ours(ref, 3, big, "fp32", True),
    ]
    compiled += [dict(s, compile=True) for s in grid if dict(s, compile=True) not in compiled]
    compiled = compiled[: plan.compile_rows]
    first = [authors(3), ours(ref, 3, big, "bf16", False), *compiled[:1]]
    specs = first + [s for s in grid if s not in first] + [authors(k) for k in plan.ks if k != 3]
    return specs + compiled[1:]


class BenchModels:
    """One model per (preset, output) at 256 px (the preset's size in the smoke run), random weights
    (speed does not depend on them), channels_last as the pipeline on CUDA; the authors' version
    shares the decoder model's weights."""

    def __init__(self, device: torch.device):
        self.device, self.models = device, {}

    def get(self, preset: str, output: str, authors: bool = False):
        from tsnet_hf import TSNet, preset_config

        key = (preset, output, authors)
        if key not in self.models:
            torch.manual_seed(0)
            config = preset_config(preset, "face", **({"output": output} if output != "decoder" else {}))
            if authors:
                model = TSNet(dataclasses.replace(config, authors_compat=True)).eval()
                model.load_state_dict(self.get(preset, output).state_dict())
                self.models[key] = model.to(self.device)  # their code: NCHW fp32
            else:
                self.models[key] = TSNet(config).eval().to(self.device, memory_format=self._format())
        return self.models[key]

    def _format(self):
        return torch.channels_last if self.device.type == "cuda" else torch.contiguous_format


def _peak_mib(device: torch.device):
    return round(torch.cuda.max_memory_allocated(device) / MiB) if device.type == "cuda" else None


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def measure_ours(spec: dict, models: BenchModels, plan: BenchPlan, gmacs: dict) -> dict:
    """Frames/s of `generate` for a batch of driving masks from a subject encoded once (not counted)."""
    from bench_generator import counted_flops, synthetic_inputs

    from common import best_time

    device = models.device
    model = models.get(spec["preset"], spec["output"])
    dtype = torch.bfloat16 if spec["dtype"] == "bf16" else torch.float32
    subject, masks, driving = synthetic_inputs(model.config, spec["K"], spec["batch"])
    subject, masks = subject.to(device), masks.to(device)
    driving = driving.to(device).contiguous(memory_format=models._format())
    row = dict(spec)
    with torch.inference_mode():
        key = (spec["preset"], spec["output"], spec["K"])
        if key not in gmacs:  # multiply-adds per frame, fp32, once per model and K
            memory = model.encode_subject(subject, masks)
            gmacs[key] = counted_flops(lambda: model.generate(memory, driving[:1])) / 2e9
        with autocast(device, dtype):
            memory = model.encode_subject(subject, masks)
        generate = model.generate
        if spec["compile"]:
            torch._dynamo.reset()  # a fresh cache per row: no recompile limit, no stale graphs
            generate = torch.compile(model.generate, backend=plan.backend, dynamic=False)

        def call():
            with autocast(device, dtype):
                generate(memory, driving)

        if spec["compile"]:
            start = time.perf_counter()
            call()
            synchronize(device)
            row["compile_s"] = round(time.perf_counter() - start, 1)
        _reset_peak(device)
        seconds = best_time(call, repeats=plan.repeats, warmup=1)
        row["peak_mib"] = _peak_mib(device)
    return {
        **row,
        "s_per_call": seconds,
        "ms_per_frame": 1000 * seconds / spec["batch"],
        "frames_per_s": spec["batch"] / seconds,
        "gmac_per_frame": round(gmacs[key], 2),
    }


def measure_authors(spec: dict, models: BenchModels, plan: BenchPlan) -> dict:
    """The authors' way (bench_generator.py's imitation): fp32, batch 1, the subject re-encoded
    for every driving frame, the plain fusion block."""
    from bench_generator import counted_flops, synthetic_inputs

    from common import best_time

    device = models.device
    model = models.get(spec["preset"], "decoder", authors=True)
    subject, masks, driving = synthetic_inputs(model.config, spec["K"], plan.authors_frames)
    subject, masks, driving = subject.to(device), masks.to(device), driving.to(device)

    def frame(i):
        memory = model.encode_subject(subject, masks, precompute_fusion=False)
        return model.generate(memory, driving[i : i + 1])

    def call():
        for i in range(plan.authors_frames):
            frame(i)

    with torch.inference_mode():
        gmac = counted_flops(lambda: frame(0)) / 2e9
        _reset_peak(device)
        seconds = best_time(call, repeats=plan.repeats, warmup=1) / plan.authors_frames
        peak = _peak_mib(device)
    return {
        **spec,
        "s_per_call": seconds,
        "ms_per_frame": 1000 * seconds,
        "frames_per_s": 1 / seconds,
        "gmac_per_frame": round(gmac, 2),
        "peak_mib": peak,
    }


def stage_bench(args) -> None:
    """Rows one by one into work/bench.jsonl (a kill keeps those done); compile rows only while
    the time left exceeds the last compile's duration."""
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes per row: let cuDNN pick its fastest convs
    elif args.smoke:
        torch.set_num_threads(1)
    plan = BenchPlan.for_run(args.smoke, args.bench_batch)
    models, gmacs, path = BenchModels(device), {}, Path(args.work) / "bench.jsonl"
    # PyTorch runs fp32 convolutions as TF32 on this GPU unless told otherwise: say so beside the rows.
    write_json(
        Path(args.work) / "bench-device.json",
        {
            **device_info(device),
            "fp32_convs_tf32": torch.backends.cudnn.allow_tf32,
            "fp32_matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
        },
    )
    compile_cost = 5.0 if args.smoke else 40.0
    for spec in bench_specs(plan):
        left = args.until - time.time()
        if left < (compile_cost if spec["compile"] else 2.0):
            row = {**spec, "skipped": f"{left:.0f} s left"}
        else:
            start = time.perf_counter()
            try:
                if spec["kind"] == "authors":
                    row = measure_authors(spec, models, plan)
                else:
                    row = measure_ours(spec, models, plan, gmacs)
            except Exception as error:  # one failed row (OOM, compile error) must not end the stage
                row = {**spec, "error": one_line(error)}
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            if spec["compile"]:
                compile_cost = max(compile_cost, time.perf_counter() - start)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")


def bench_summary(rows: list[dict]) -> dict:
    """The headline per K: ours (first model, bf16, largest batch, best of eager / compiled) against
    the authors' way measured in the same run, and the issue's targets at K = 3."""
    done = [r for r in rows if "frames_per_s" in r]
    if not done:
        return {}
    authors = {r["K"]: r for r in done if r["kind"] == "authors"}
    ref = next((r["preset"], r["output"]) for r in rows if r["kind"] == "ours")
    big = max(r["batch"] for r in rows if r["kind"] == "ours")
    summary = {"model": f"{ref[0]} {ref[1]}", "batch": big, "per_K": {}}
    for k, base in sorted(authors.items()):
        ours = [
            r
            for r in done
            if r["kind"] == "ours"
            and (r["preset"], r["output"]) == ref
            and r["K"] == k
            and r["batch"] == big
            and r["dtype"] == "bf16"
        ]
        if not ours:
            continue
        best = max(ours, key=lambda r: r["frames_per_s"])
        summary["per_K"][k] = {
            "authors_fps": round(base["frames_per_s"], 1),
            "ours_fps": round(best["frames_per_s"], 1),
            "ours_compiled": best["compile"],
            "speedup": round(best["frames_per_s"] / base["frames_per_s"], 1),
            "ours_ms_per_frame": round(best["ms_per_frame"], 3),
        }
    k3 = summary["per_K"].get(3)
    if k3:
        summary["targets_K3"] = {
            "fps_at_least_1000": k3["ours_fps"] >= 1000,
            "speedup_at_least_20x": k3["speedup"] >= 20,
            "vs_liveportrait_15ms": round(LIVEPORTRAIT_MS / k3["ours_ms_per_frame"], 1),
        }
    return summary


def bench_markdown(rows: list[dict]) -> str:
    header = [
        "way",
        "preset",
        "output",
        "K",
        "batch",
        "dtype",
        "mode",
        "frames/s",
        "ms/frame",
        "peak GPU MiB",
        "compile s",
        "GMAC/frame",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        mode = "compile" if r["compile"] else "eager"
        if "frames_per_s" in r:
            cells = [
                f"{r['frames_per_s']:.1f}",
                f"{r['ms_per_frame']:.3f}",
                r.get("peak_mib") or "-",
                r.get("compile_s") or "-",
                r.get("gmac_per_frame", "-"),
            ]
        else:
            cells = [r.get("error") or f"skipped ({r.get('skipped')})", "", "", "", ""]
        lines.append(
            "| "
            + " | ".join(
                str(c) for c in [r["kind"], r["preset"], r["output"], r["K"], r["batch"], r["dtype"], mode, *cells]
            )
            + " |"
        )
    return "\n".join(lines)


# ----- stage: pipeline from templates + bf16 check (a child process) ---------------------------------------


def pipeline_defaults(**overrides):
    """RetargetPipeline.__call__'s defaults (the RunOptions a Run takes), with overrides."""
    from tsnet_hf.options import RunOptions

    return RunOptions(**overrides)


def load_subject(path: Path, size: int) -> dict:
    """A bundle subject, its crops (S, size, size, 3) uint8 RGB and landmarks scaled to `size`."""
    import cv2

    with np.load(path, allow_pickle=False) as data:
        buffer, offsets = data["crops"], data["offsets"]
        crops = np.stack(
            [
                cv2.cvtColor(cv2.imdecode(buffer[a:b], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
                for a, b in zip(offsets[:-1], offsets[1:])
            ]
        )
        subject = {
            "crops": crops,
            "points": data["points"].astype(np.float32),
            "frame_indices": data["frame_indices"],
            "all_points": data["all_points"].astype(np.float32),
            "summary": str(data["summary"]),
        }
    scale = size / crops.shape[1]
    if scale != 1:
        subject["crops"] = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in crops])
        for key in ("points", "all_points"):
            subject[key][..., :2] *= scale
    return subject


class Cv2VideoWriter:
    """tsnet_hf.video.VideoWriter's interface over OpenCV's mp4v writer: the GPU machine has no
    ffmpeg program (imageio-ffmpeg), and the run keeps these videos only to sample a few frames."""

    def __init__(self, path, fps, audio_from=None, crf=18, preset="medium"):
        self.path, self.fps, self.writer, self.frames_written = Path(path), float(fps), None, 0

    def write(self, frame: np.ndarray) -> None:
        import cv2

        if self.writer is None:
            size = (frame.shape[1], frame.shape[0])
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, size)
        self.writer.write(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR))
        self.frames_written += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()

    def abort(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def bundle_run(pipe, options, subject: dict, workdir: Path):
    """A tsnet_hf.runner.Run whose subject stage takes the bundle's precomputed crops and landmarks
    instead of detecting them (no mediapipe there); every later stage is the pipeline's own."""
    from tsnet_hf.masks import draw_masks, labels_to_onehot
    from tsnet_hf.runner import Run, SubjectPool

    class BundleSubjectRun(Run):
        def _prepare_subject(self, _subject, _mode):
            labels = draw_masks(subject["points"], (self.size, self.size))
            onehot = labels_to_onehot(torch.from_numpy(labels).long(), self.pipe.model.config.mask_channels)
            with self.timer("encode subject"):
                memory = self.pipe.encode(subject["crops"], onehot)
            return SubjectPool(
                subject["crops"],
                subject["points"],
                labels,
                subject["frame_indices"],
                subject["all_points"],
                memory,
                subject["summary"],
                None,
            )

    return BundleSubjectRun(pipe, options, None, workdir)


def pipeline_timings(
    model, subject: dict, mode: str, device: torch.device, batch: int, max_frames, workdir: Path
) -> dict:
    """Two runs (cold, then warm) from the motion template: seconds per stage and frames/s."""
    import tsnet_hf.runner as runner  # the run's writers: runner imports VideoWriter at its top
    from tsnet_hf.landmarks import LandmarkTrack
    from tsnet_hf.pipeline import RetargetPipeline

    track = LandmarkTrack.load(ROOT / "tsnet_hf" / "assets" / "templates" / TEMPLATES[mode])
    pipe = RetargetPipeline(model, device=device)
    options = pipeline_defaults(mode=mode, batch_size=batch, max_frames=max_frames)
    original, runner.VideoWriter = runner.VideoWriter, Cv2VideoWriter
    runs = {}
    try:
        for name in ("cold", "warm"):
            synchronize(device)
            start = time.perf_counter()
            result = bundle_run(pipe, options, subject, workdir / f"{mode}-{name}").execute(None, track)
            synchronize(device)
            total = time.perf_counter() - start
            runs[name] = {
                "frames": result.num_frames,
                "total_s": round(total, 3),
                "frames_per_s": round(result.num_frames / total, 1),
                "stages_s": {k: round(v, 3) for k, v in result.timings.items()},
            }
    finally:
        runner.VideoWriter = original
    runs.update(
        template=TEMPLATES[mode],
        batch=batch,
        dtype=str(pipe.dtype).replace("torch.", ""),
        channels_last=pipe.memory_format == torch.channels_last,
    )
    return runs


def bf16_check(model, subject: dict, lpips, device: torch.device, frames: int) -> dict:
    """LPIPS between the bf16 (autocast) and fp32 outputs on real frames: the subject's first K = 3
    pool crops drive-reconstruct its other pool crops (their masks); also each against the truth."""
    from tsnet_hf.masks import draw_masks, labels_to_onehot
    from tsnet_hf.utils import to_model_frames

    size, channels = model.config.image_size, model.config.mask_channels
    model = model.to(
        device, memory_format=torch.channels_last if device.type == "cuda" else torch.contiguous_format
    ).eval()
    crops, points = subject["crops"], subject["points"]
    frames_in = to_model_frames(crops, device)
    masks = labels_to_onehot(torch.from_numpy(draw_masks(points, (size, size))).long(), channels).float().to(device)
    targets = slice(3, 3 + frames)
    outputs = {}
    with torch.inference_mode():
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            with autocast(device, dtype):
                memory = model.encode_subject(frames_in[None, :3], masks[None, :3])
                outputs[name] = model.generate(memory, masks[targets]).image.float().clamp(-1, 1)
        truth = frames_in[targets]
        between = lpips(outputs["bf16"], outputs["fp32"]).flatten()
        fp32_truth = lpips(outputs["fp32"], truth).flatten()
        bf16_truth = lpips(outputs["bf16"], truth).flatten()
    return {
        "frames": int(between.numel()),
        "lpips_bf16_vs_fp32_mean": float(between.mean()),
        "lpips_bf16_vs_fp32_max": float(between.max()),
        "lpips_fp32_vs_truth": float(fp32_truth.mean()),
        "lpips_bf16_vs_truth": float(bf16_truth.mean()),
        "max_abs_pixel_diff": float((outputs["bf16"] - outputs["fp32"]).abs().max()),
        "within_0.005": bool(between.mean() < 0.005),
    }


def pick_model(work: Path, mode: str):
    """The GPU-trained model when it was exported, else the one it started from: (folder, which)."""
    exported, init = work / "export" / mode, work / "init-dirs.json"
    if (exported / "model.safetensors").is_file():
        return exported, "trained in this run"
    folder = (read_json(init) or {}).get(mode)
    return (Path(folder), "the init checkpoint (no trained model)") if folder else (None, "none")


def stage_pipeline(args) -> None:
    from training.lpips import load_lpips
    from tsnet_hf import TSNet

    device, work = torch.device(args.device), Path(args.work)
    if device.type == "cpu" and args.smoke:
        torch.set_num_threads(1)
    weights = work / "weights"
    lpips = load_lpips(weights / ALEXNET, weights / LPIPS_LIN).to(device)
    path, results = work / "pipeline.json", {"device": device_info(device)}
    for mode in MODES:
        folder, which = pick_model(work, mode)
        if folder is None:
            results[mode] = {"status": "skipped: no model"}
            continue
        try:
            model = TSNet.from_pretrained(folder)
            subject = load_subject(Path(args.bundle) / "subject" / f"{mode}.npz", model.config.image_size)
            entry = {"model": which, "size": model.config.image_size}
            entry["bf16_check"] = bf16_check(model, subject, lpips, device, 4 if args.smoke else 13)
            entry["pipeline"] = pipeline_timings(
                model, subject, mode, device, 4 if args.smoke else 32, 12 if args.smoke else None, work / "pipeline"
            )
            entry["status"] = "done"
            _sample_frames(work / "pipeline" / f"{mode}-warm" / "side_by_side.mp4", work / f"pipeline-{mode}.jpg")
        except Exception as error:  # the other mode may still run
            entry = {"model": which, "status": f"failed: {one_line(error)}"}
        results[mode] = entry
        write_json(path, results)


def _sample_frames(video: Path, target: Path, count: int = 3) -> None:
    """A few frames of the side-by-side video, stacked, as a small JPEG to bring back."""
    import cv2

    capture = cv2.VideoCapture(str(video))
    frames = []
    while len(frames) < 30:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    if frames:
        picked = [frames[i] for i in np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)]
        cv2.imwrite(str(target), np.concatenate(picked), [cv2.IMWRITE_JPEG_QUALITY, 80])


# ----- the orchestrator ------------------------------------------------------------------------------------------


class GpuRun:
    """One GPU run: the deadlines, the stages in their own processes, the files under --out."""

    def __init__(self, args):
        self.args, self.smoke, self.device = args, args.smoke, args.device
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        for stale in [*(self.out / n for n in (RESULTS, LOG, MANIFEST)), *self.out.glob("*.tar.gz*")]:
            stale.unlink(missing_ok=True)  # a rerun into the same folder starts clean
        self.work = Path(args.work) if args.work else Path(_temp_dir())
        (self.work / "logs").mkdir(parents=True, exist_ok=True)
        self.bundle = Path(args.bundle).resolve()
        self.t0, self.budget = time.time(), float(args.budget)
        self.log = Log(self.out / LOG)
        self.results = {
            "version": 1,
            "status": "running",
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "budget_s": self.budget,
            "smoke": self.smoke,
            "device": self.device,
            "command": " ".join(sys.argv),
            "stages": {},
        }
        self.deadlines, elapsed = {}, 0.0
        for stage, share in SHARES.items():
            elapsed += share * self.budget
            self.deadlines[stage] = self.t0 + elapsed
        self.results["plan_s"] = {s: round(share * self.budget, 1) for s, share in SHARES.items()}
        self.size = None

    def save(self) -> None:
        self.results["elapsed_s"] = round(time.time() - self.t0, 1)
        write_json(self.out / RESULTS, self.results)

    def stage(self, name: str, status: str, **fields) -> None:
        self.results["stages"][name] = {"status": status, "at_s": round(time.time() - self.t0, 1), **fields}
        self.log(f"{name}: {status}")
        self.save()

    # ----- running ----------------------------------------------------------------------------------------

    def execute(self) -> int:
        self.save()
        try:
            if not self.setup():
                return self.finish("failed")
            for mode in MODES:
                self.train(mode)
            self.pipeline()
            self.bench()
            return self.finish(self.overall())
        except _Stopped as signal_name:
            return self.finish(f"stopped by {signal_name}")
        except Exception as error:  # whatever broke, the results so far are written
            import traceback

            self.log(traceback.format_exc())
            return self.finish(f"failed: {one_line(error)}")

    def overall(self) -> str:
        """done (every stage done), cut short (a stage skipped or stopped by its time) or partial."""
        states = [s["status"] for s in self.results["stages"].values()]
        if all(s == "done" for s in states):
            return "done"
        if any(s.startswith(("skipped", "cut short")) for s in states):
            return "cut short"
        return "partial: a stage failed"

    def child(self, name: str, argv: list, until: float) -> dict:
        """Run `gpu_run.py --stage ...` in its own process group until `until` plus a grace, then
        stop it; its output goes to work/logs/NAME.log."""
        log_path = self.work / "logs" / f"{name}.log"
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            *argv,
            "--work",
            str(self.work),
            "--bundle",
            str(self.bundle),
            "--device",
            self.device,
            "--until",
            f"{until:.3f}",
            *(["--smoke"] if self.smoke else []),
        ]
        grace = 5.0 if self.smoke else 20.0
        start = time.time()
        with open(log_path, "ab") as handle:
            # Its own process group (to stop it with its loader workers), but not its own session:
            # the device tool ends a command's processes with it, and would leave a new session running.
            process = subprocess.Popen(
                command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, env=env, process_group=0
            )
            try:
                code = process.wait(timeout=max(1.0, until + grace - time.time()))
            except subprocess.TimeoutExpired:
                _stop(process)
                code = None
            except BaseException:  # a signal to this process: stop the stage too
                _stop(process)
                raise
        result = {"exit_code": code, "timed_out": code is None, "seconds": round(time.time() - start, 1)}
        if code != 0:
            result["log_tail"] = tail(log_path)
        return result

    # ----- setup ----------------------------------------------------------------------------------------------

    def setup(self) -> bool:
        try:
            if self.device == "cuda" and not torch.cuda.is_available():
                raise InputError(
                    "CUDA is not available here: run on the GPU machine, or test with --device cpu --smoke."
                )
            info = read_bundle(self.bundle)
            self.info, self.size = info, info["size"]
            self.weights = unpack_weights(self.bundle, info, self.work / "weights")
            self.init = unpack_init(self.bundle, info, self.work / "init")
            write_json(self.work / "init-dirs.json", self.init)
            self.decode = {m: decode_check(self.bundle / "data" / m) for m in MODES}
            self.results["machine"] = machine_info()
            kept = ("created", "git", "size", "init", "caches", "holdout", "subject")
            self.results["bundle"] = {k: info[k] for k in kept}
            self.stage("setup", "done", decode_errors=self.decode)
            return True
        except Exception as error:  # reported in results.json, the run ends there
            self.stage("setup", f"failed: {one_line(error)}")
            return False

    # ----- training -------------------------------------------------------------------------------------------

    def train(self, mode: str) -> None:
        name, stage = f"train_{mode}", f"{mode}-{self.size}"
        until = self.deadlines[name]
        minimum = 3.0 if self.smoke else 45.0
        if self.decode[mode]:
            return self.stage(name, f"skipped: this OpenCV cannot read the {mode} cache ({self.decode[mode]})")
        if until - time.time() < minimum:
            return self.stage(name, f"skipped: {until - time.time():.0f} s left of its share")
        config = self.training_config(mode)
        reserve = min(25.0, 0.15 * (until - time.time())) if not self.smoke else 1.0
        argv = [
            "--stage",
            "train",
            "--mode",
            mode,
            "--config",
            str(config),
            "--reserve",
            str(reserve),
            "--recipe",
            str(ROOT / "training" / "recipes" / f"gpu-{mode}.json"),
            "--max-batch",
            str(2 if self.smoke else self.args.max_batch),
            *(["--max-steps", "3"] if self.smoke else []),
        ]
        self.log(f"{name}: {until - time.time():.0f} s")
        run = self.child(f"train-{mode}", argv, until)
        summary = read_json(self.work / f"train-{mode}.json", {})
        exported = self.work / "export" / mode
        if not (exported / "model.safetensors").is_file():
            summary["fallback_export"] = self.export_newest(mode, exported)
        status = "done" if run["exit_code"] == 0 else "cut short" if run["timed_out"] else "failed"
        if summary.get("steps_done") == 0:  # the budget ran out before the first step: nothing new to ship
            shutil.rmtree(exported, ignore_errors=True)
            status = "cut short: no training step in the time left"
        if (exported / "model.safetensors").is_file():
            summary["archive"] = self.pack_model(mode, stage, exported)
        elif ":" not in status:
            status += ": no checkpoint to export"
        self.results.setdefault("train", {})[mode] = {**summary, "process": run}
        self.stage(name, status)

    def training_config(self, mode: str) -> Path:
        """The GPU recipe with this run's paths: bundle cache, unpacked weights and init, the
        bundle's hold-out, a clip span that keeps the recipe's time window at the cache's stride."""
        recipe = json.loads((ROOT / "training" / "recipes" / f"gpu-{mode}.json").read_text(encoding="utf-8"))
        stride = self.info["caches"]["frame_stride"]
        config = {
            **recipe,
            "data": str(self.bundle / "data" / mode),
            "output": str(self.work / "runs" / mode),
            "resolution": self.size,
            "holdout": self.info["holdout"][mode],
            "quiet": True,
            "span": max(round(30 / stride), recipe.get("k", 3) + recipe.get("targets", 1)),
            "vgg_weights": self.weights[VGG],
            "lpips_alexnet": self.weights[ALEXNET],
            "lpips_lin": self.weights[LPIPS_LIN],
        }
        if mode in self.init:
            config["init_from"] = self.init[mode]
        else:  # from scratch: the shipped design
            config.pop("init_from", None)
            config.update(preset="small", output_path="blend", frame_weights="learned")
        if self.device == "cpu":
            config["cpu"] = True
        if self.smoke:
            config.update(workers=0, val_clips=2, log_every=1, threads=1)
        path = self.work / f"config-{mode}.json"
        write_json(path, config)
        return path

    def export_newest(self, mode: str, target: Path) -> str:
        """Export the newest complete checkpoint of a run its stage could not finish."""
        try:
            export_checkpoint(
                self.work / "runs" / mode,
                target,
                ROOT / "training" / "recipes" / f"gpu-{mode}.json",
                "Exported from the newest checkpoint of a GPU run cut short (benchmarks/gpu_run.py).",
            )
            return "exported the newest checkpoint"
        except Exception as error:  # nothing to export is a result, not a crash
            return f"none: {one_line(error)}"

    def pack_model(self, mode: str, name: str, exported: Path) -> dict:
        """name.tar.gz: the fp16 checkpoint (name/model/) and the run's logs, split when over 16 MiB."""
        run = self.work / "runs" / mode
        members = {f"{name}/model/{f}": exported / f for f in ("config.json", "model.safetensors", "README.md")}
        members.update({f"{name}/{f}": run / f for f in ("log.txt", "metrics.jsonl", "training_args.json")})
        members[f"{name}/stage.log"] = self.work / "logs" / f"train-{mode}.log"
        members[f"{name}/train.json"] = self.work / f"train-{mode}.json"
        grids = sorted((run / "images").glob("*.png"))
        if grids and _jpeg(grids[-1], self.work / f"grid-{mode}.jpg"):
            members[f"{name}/grid.jpg"] = self.work / f"grid-{mode}.jpg"
        return self.deliver(f"{name}.tar.gz", members)

    def deliver(self, archive_name: str, members: dict) -> dict:
        """tar.gz `members` (name in the archive -> file) into --out, split, in the manifest,
        unless it would break the device tool's limits on what comes back."""
        archive = self.work / archive_name
        with tarfile.open(archive, "w:gz", compresslevel=6) as tar:
            for arcname, path in members.items():
                if Path(path).is_file():
                    tar.add(path, arcname)
        size = archive.stat().st_size
        parts = math.ceil(size / PART_BYTES)
        files, used = self.out_usage()
        if files + parts + 3 > OUT_MAX_FILES or used + size > OUT_MAX_BYTES - MiB:  # 3: results, log, manifest
            return {
                "name": archive_name,
                "bytes": size,
                "returned": False,
                "why": f"{files} files / {mib(used)} under --out already: over the device tool's limits",
            }
        entry = split_into(archive, self.out)
        record_file(self.out, archive_name, entry)
        self.log(f"wrote {archive_name}: {mib(size)} in {len(entry_files(archive_name, entry))} file(s)")
        return {"name": archive_name, "bytes": size, "returned": True, "files": entry_files(archive_name, entry)}

    def out_usage(self) -> tuple[int, int]:
        manifest = read_json(self.out / MANIFEST) or {"files": {}}
        names = [n for name, e in manifest["files"].items() for n in entry_files(name, e)]
        return len(names), sum((self.out / n).stat().st_size for n in names if (self.out / n).is_file())

    # ----- pipeline and benchmark -------------------------------------------------------------------------------

    def pipeline(self) -> None:
        until = self.deadlines["pipeline"]
        if until - time.time() < (3 if self.smoke else 10):
            return self.stage("pipeline", f"skipped: {until - time.time():.0f} s left")
        run = self.child("pipeline", ["--stage", "pipeline"], until)
        results = read_json(self.work / "pipeline.json", {})
        self.results["pipeline"] = {**results, "process": run}
        modes_done = all(results.get(m, {}).get("status") == "done" for m in MODES)
        self.stage(
            "pipeline",
            "cut short" if run["timed_out"] else "done" if run["exit_code"] == 0 and modes_done else "failed",
        )

    def bench(self) -> None:
        until = self.deadlines["bench"]
        if until - time.time() < (3 if self.smoke else 10):
            return self.stage("bench", f"skipped: {until - time.time():.0f} s left")
        run = self.child("bench", ["--stage", "bench", "--bench-batch", str(self.args.bench_batch)], until)
        rows = [json.loads(line) for line in _lines(self.work / "bench.jsonl")]
        self.results["bench"] = {
            "device": read_json(self.work / "bench-device.json", {}),
            "rows": rows,
            "summary": bench_summary(rows),
            "markdown": bench_markdown(rows),
            "process": run,
        }
        self.stage(
            "bench", "done" if run["exit_code"] == 0 else "cut short" if run["timed_out"] else "failed", rows=len(rows)
        )

    # ----- the end ----------------------------------------------------------------------------------------------

    def finish(self, status: str) -> int:
        """The extras archive (stage logs, benchmark rows, pipeline frames) if the limits allow,
        the final results.json, and a summary on stdout."""
        try:
            members = {f"extras/{p.name}": p for p in sorted((self.work / "logs").glob("*.log"))}
            members.update(
                {
                    f"extras/{p.name}": p
                    for p in sorted(self.work.glob("*.json"))
                    + sorted(self.work.glob("*.jpg"))
                    + [self.work / "bench.jsonl"]
                    if p.is_file() and not p.name.startswith("config-")
                }
            )
            self.results["extras"] = self.deliver(EXTRAS, members)
        except OSError as error:
            self.results["extras"] = {"returned": False, "why": one_line(error)}
        self.results["status"] = status
        self.results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        self.results["out_files"] = sorted(p.name for p in self.out.iterdir() if p.is_file())
        self.save()
        self.print_summary()
        return 0 if status == "done" else 1

    def print_summary(self) -> None:
        for mode, entry in self.results.get("train", {}).items():
            history = (entry.get("history") or [{}])[-1]
            self.log(
                f"train {mode}: batch {entry.get('batch')}, {entry.get('steps_done')} steps, "
                f"{entry.get('samples_per_s')} samples/s probed, validation {json.dumps(history)}"
            )
        for mode in MODES:
            check = self.results.get("pipeline", {}).get(mode, {}).get("bf16_check")
            if check:
                self.log(
                    f"bf16 vs fp32 ({mode}): LPIPS {check['lpips_bf16_vs_fp32_mean']:.5f} "
                    f"({'within' if check['within_0.005'] else 'NOT within'} 0.005)"
                )
        bench = self.results.get("bench", {})
        if bench.get("markdown"):
            print(bench["markdown"], flush=True)
            print(json.dumps(bench.get("summary"), indent=1), flush=True)
        self.log(f"{self.results['status']}: {self.results['out_files']} in {self.out}")


class _Stopped(Exception):
    """SIGTERM / SIGINT: stop the stage in flight, write what there is."""


def _on_signal(signum, frame):
    raise _Stopped(signal.Signals(signum).name)


def _stop(process) -> None:
    """SIGTERM to a stage's own process group (its data loader workers too), SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _temp_dir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="gpu_run-")


def _lines(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError:
        return []


def _jpeg(png: Path, target: Path) -> bool:
    """An image grid at half size as JPEG (a 256 px grid is megabytes as PNG; the return is 64 MiB)."""
    import cv2

    image = cv2.imread(str(png))
    if image is None:
        return False
    image = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)
    return bool(cv2.imwrite(str(target), image, [cv2.IMWRITE_JPEG_QUALITY, 85]))


# ----- command line ------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    what = parser.add_mutually_exclusive_group()
    what.add_argument(
        "--prepare", metavar="BUNDLE", help="build the carry bundle here (an ignored folder: .device/bundle)"
    )
    what.add_argument("--join", metavar="FETCHED", help="check, reassemble and unpack the files a GPU run wrote")
    what.add_argument("--stage", choices=("train", "bench", "pipeline"), help=argparse.SUPPRESS)
    run = parser.add_argument_group("the GPU run")
    run.add_argument("--bundle", default=str(ROOT / ".device" / "bundle"), help="the carried bundle (.device/bundle)")
    run.add_argument("--out", default=os.environ.get("OUT"), help="results folder ($OUT when set)")
    run.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    run.add_argument("--smoke", action="store_true", help="tiny models, a few steps: test the whole run on a CPU")
    run.add_argument(
        "--budget", type=float, default=None, help="wall seconds for the whole run (default 540; 120 with --smoke)"
    )
    run.add_argument(
        "--max-batch", type=int, default=128, help="training batch probed first, halved until it fits (128)"
    )
    run.add_argument(
        "--bench-batch", type=int, default=64, help="driving frames per generate call in the batched rows (64)"
    )
    run.add_argument("--work", help="scratch folder (default: a new temporary folder)")
    prep = parser.add_argument_group("--prepare")
    shared = ROOT.parent / "shared"
    prep.add_argument(
        "--face-data",
        default=str(shared / "data" / "face"),
        help="face videos, or a face cache at --size (../shared/data/face)",
    )
    prep.add_argument(
        "--body-data",
        default=str(shared / "data" / "dance"),
        help="dance videos, or a body cache at --size (../shared/data/dance)",
    )
    prep.add_argument(
        "--weights",
        default=str(shared / "weights"),
        help=f"folder with {VGG}, {ALEXNET}, {LPIPS_LIN} (../shared/weights)",
    )
    prep.add_argument(
        "--init",
        choices=("int8", "fp16", "tree", "none"),
        default="int8",
        help="how the 128 px checkpoints travel: int8 (default), fp16, tree (read from the working tree), "
        "none (train from scratch)",
    )
    prep.add_argument(
        "--init-face",
        default=str(ROOT / "checkpoints" / "face-blend-128"),
        help="the face checkpoint to start from (checkpoints/face-blend-128)",
    )
    prep.add_argument(
        "--init-body",
        default=str(ROOT / "checkpoints" / "body-blend-128"),
        help="the body checkpoint to start from (checkpoints/body-blend-128)",
    )
    prep.add_argument(
        "--vgg",
        choices=("int8", "fp16"),
        default="int8",
        help="how the perceptual network travels (int8 moves the loss by 0.2 %%, frees 9.6 MiB for data)",
    )
    prep.add_argument("--size", type=int, default=256, help="training resolution of the GPU run (256)")
    prep.add_argument(
        "--storage", choices=("mp4v", "webp", "jpeg"), default="mp4v", help="compact cache storage (mp4v)"
    )
    prep.add_argument("--quality", type=int, default=None, help="webp / jpeg quality")
    prep.add_argument(
        "--frame-stride", type=int, default=None, help="keep every n-th cached frame (default: the smallest that fits)"
    )
    prep.add_argument("--carry-limit-mib", type=float, default=CARRY_LIMIT / MiB, help=argparse.SUPPRESS)
    prep.add_argument("--margin-mib", type=float, default=1.0, help="MiB left free for later edits of the tree (1)")
    joining = parser.add_argument_group("--join")
    joining.add_argument(
        "--into", default=str(ROOT / "runs" / "gpu-run"), help="where joined files and archives go (runs/gpu-run)"
    )
    stage = parser.add_argument_group("stages (internal)")
    for option, kind in (("--until", float), ("--reserve", float), ("--max-steps", int)):
        stage.add_argument(option, type=kind, help=argparse.SUPPRESS)
    for option in ("--mode", "--config", "--recipe"):
        stage.add_argument(option, help=argparse.SUPPRESS)
    return parser


STAGES = {"train": stage_train, "bench": stage_bench, "pipeline": stage_pipeline}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.stage:
            STAGES[args.stage](args)
            return 0
        if args.join:
            joined = join(args.join, args.into)
            print(f"joined and checked {len(joined)} file(s) into {args.into}: {', '.join(p.name for p in joined)}")
            return 0
        if args.budget is None:
            args.budget = 120.0 if args.smoke else 540.0
        if args.prepare:
            return prepare(args)
        if not args.out:
            raise InputError("Give --out DIR (on the GPU machine the device tool sets $OUT).")
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _on_signal)
        return GpuRun(args).execute()
    except TSNetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
