"""Train a TS-Net generator on a folder of videos (paper section 3.2), on a CPU or one or many GPUs.

    python training/train.py --data VIDEOS --mode face --preset small --output runs/face-small
    accelerate launch --multi_gpu --num_processes 4 training/train.py --data VIDEOS ... --mixed-precision bf16
    python training/train.py --output runs/face-small --resume                 # continue exactly
    python training/train.py --data SUBJECT_VIDEOS --init-from runs/face-small/final ...   # fine-tune

`--data` is a folder of videos (preprocessed first into `--cache-dir`, training/preprocess.py) or a
cache folder. One step (`train_step`), as the authors: generate B*T frames from B clips (K subject
frames and T targets each), one discriminator update, then one generator update (training/losses.py),
with Adam (0.5, 0.999), G lr 2e-4 and D lr 1e-4, constant and then decaying linearly to 0.
Options: training/options.py; the run folder and resuming: training/checkpoints.py; `--resume`
draws the same clips an uninterrupted run would (training/data.py), so on a CPU the next losses are equal.
"""

import argparse
import dataclasses
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python training/train.py`: import as the `training` package
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch
from tqdm.auto import tqdm

import tsnet_hf
from training import checkpoints, data
from training.discriminators import PatchDiscriminator, face_crop_size
from training.evaluate import image_metrics
from training.logs import RunLog, loss_line
from training.losses import Losses, LossWeights
from training.lpips import load_lpips
from training.model_card import card_fields, training_settings
from training.options import adopt_saved_settings, parse_args
from training.preprocess import CacheSettings, is_cache_dir, make_writable_dir, preprocess_folder
from training.vision import load_vgg
from tsnet_hf import TSNet, TSNetConfig, preset_config
from tsnet_hf.errors import CheckpointError, ConfigError, TSNetError
from tsnet_hf.upload import create_and_upload

PAPER_BATCH = {"face": 15, "body": 10}


def learning_rate(base: float, step: int, total: int, decay_start: float) -> float:
    """The authors' schedule: `base` until decay_start * total, then linear to 0 at `total`."""
    start = int(round(decay_start * total))
    if step < start:
        return base
    return base * max(0.0, 1.0 - (step - start) / max(1, total - start))


def _requires_grad(modules, flag: bool):
    for module in modules:
        if module is not None:
            for parameter in module.parameters():
                parameter.requires_grad_(flag)


def train_step(
    accelerator, losses, model, d, face_d, opt_g, opt_d, batch, adversarial: bool = True
) -> tuple[dict, object]:
    """One discriminator update, then one generator update, as the authors (adversarial=False: the
    generator update alone, without discriminator terms: the reconstruction warm-up).

    Args:
        accelerator: an accelerate.Accelerator (autocast, backward, unwrapping).
        losses: training.losses.Losses. model: the generator. d, face_d: discriminators
            (face_d None for faces), as returned by `accelerator.prepare`.
        opt_g, opt_d: their optimisers. batch: a training.data.Batch on the device.
    Returns:
        (detached loss parts incl. "l1" of the output in [0, 1], the generator's TSNetOutput).
    """
    with accelerator.autocast():
        output = model(batch.subject_frames, batch.subject_masks, batch.driving_masks)
    d_parts = {}
    if adversarial:
        _requires_grad([d, face_d], True)
        with accelerator.autocast():
            d_loss, d_parts = losses.discriminator(
                d, face_d, output.image, batch.targets, batch.driving_masks, batch.face_boxes
            )
        opt_d.zero_grad(set_to_none=True)
        accelerator.backward(d_loss)
        opt_d.step()
    _requires_grad([d, face_d], False)  # the generator step only reads them, through the plain modules
    plain_d = accelerator.unwrap_model(d)
    plain_face_d = accelerator.unwrap_model(face_d) if face_d is not None else None
    with accelerator.autocast():
        g_loss, g_parts = losses.generator(
            plain_d, plain_face_d, output, batch.targets, batch.driving_masks, batch.face_boxes, adversarial=adversarial
        )
    opt_g.zero_grad(set_to_none=True)
    accelerator.backward(g_loss)
    opt_g.step()
    l1 = (output.image.detach().float().clamp(-1, 1) - batch.targets).abs().mean() / 2  # images in [0, 1]
    return {**d_parts, **g_parts, "l1": l1}, output


# ----- setup --------------------------------------------------------------------------------------


class Trainer:
    """One training run: `__init__` builds data, models and optimisers (resuming a checkpoint where
    asked), `run` loops over the steps with logs, validation and checkpoints."""

    def __init__(self, args: argparse.Namespace):
        from accelerate import Accelerator  # heavy, and only needed to train: not at import time

        self.args = args
        self.output = make_writable_dir(args.output, "output folder", "--output")
        self.resume_from = checkpoints.find_resume(self.output, args.resume) if args.resume else None
        if self.resume_from is not None:
            adopt_saved_settings(args, checkpoints.read_state(self.resume_from)["args"], self.resume_from)
        if args.mixed_precision == "fp16" and (args.cpu or not torch.cuda.is_available()):
            raise ConfigError("fp16 mixed precision needs a GPU: use --mixed-precision no (or bf16).")
        if args.threads:
            torch.set_num_threads(args.threads)
        self.accelerator = Accelerator(mixed_precision=args.mixed_precision, cpu=args.cpu)
        self.main = self.accelerator.is_main_process
        self.log = RunLog(self.output, self.main)
        if self.main:
            for folder in (self.output, self.output / checkpoints.CHECKPOINTS):
                checkpoints.clean_interrupted_writes(folder)
        self.accelerator.wait_for_everyone()
        self.step = 0
        self.history = []  # validation results, newest last
        self.seconds = 0.0  # wall time of all invocations of this run, saved in the training state
        self.started = time.monotonic()
        self._build()

    def _build(self):
        args = self.args
        self.model, self.config = self._build_generator()
        args.mode, args.resolution = self.config.mode, self.config.image_size
        if args.batch_size is None:
            args.batch_size = PAPER_BATCH[self.config.mode]
        self._build_losses()  # before the data: a missing weights file fails at once, not after preprocessing
        self.lpips = self._build_lpips()
        self._build_data()
        betas = (args.beta1, args.beta2)
        self.opt_g = torch.optim.Adam(self.model.parameters(), lr=args.lr_g, betas=betas)
        d_params = list(self.d.parameters()) + (list(self.face_d.parameters()) if self.face_d else [])
        self.opt_d = torch.optim.Adam(d_params, lr=args.lr_d, betas=betas)
        if self.resume_from is not None:
            self._resume(self.resume_from)
        if args.channels_last:
            for module in (self.model, self.d, self.face_d):
                if module is not None:
                    module.to(memory_format=torch.channels_last)
        (self.model, self.d, self.face_d, self.opt_g, self.opt_d) = self.accelerator.prepare(
            self.model, self.d, self.face_d, self.opt_g, self.opt_d
        )
        if self.main:
            checkpoints.write_json(self.output / "training_args.json", vars(args))
        if args.tensorboard:
            self.log.open_tensorboard()

    def _build_generator(self) -> tuple[TSNet, TSNetConfig]:
        args = self.args
        torch.manual_seed(args.seed)
        if self.resume_from is not None:  # the architecture of the checkpoint; its weights come later
            config = TSNetConfig.from_json_file(self.resume_from / "config.json")
            return TSNet(config).train(), config
        size = args.resolution or data.cache_resolution(args.data)
        if not args.init_from:
            overrides = {"image_size": size} if size else {}
            if args.output_path != "decoder":
                overrides.update(output=args.output_path, frame_weights=args.frame_weights)
            config = preset_config(args.preset or "paper", args.mode, **overrides)
            return TSNet(config).train(), config
        model = TSNet.from_pretrained(args.init_from)
        config = model.config
        if args.mode and args.mode != config.mode:
            raise ConfigError(
                f"{args.init_from} is a {config.mode} model but --mode is {args.mode}: "
                f"fine-tune it with --mode {config.mode}."
            )
        if size and size != config.image_size:  # progressive resolution: the convs do not depend on it
            config = dataclasses.replace(config, image_size=size)
            resized = TSNet(config)
            resized.load_state_dict(model.state_dict())
            model = resized
        return model.train(), config

    def _build_data(self):
        args = self.args
        cache = Path(args.data)
        if not is_cache_dir(cache):
            name = f"{Path(args.data).resolve().name}-{args.mode}-{args.resolution}"
            cache = Path(args.cache_dir or Path("cache") / name)
            args.cache_dir = str(cache)
            if self.main:
                settings = CacheSettings(
                    args.mode, args.resolution, frame_stride=args.frame_stride, max_frames=args.max_frames
                )
                print(preprocess_folder(args.data, cache, settings, progress=print).summary(), flush=True)
            self.accelerator.wait_for_everyone()
        videos = data.open_cache(cache, args.mode, args.resolution)
        if args.holdout:
            self.train_sources, self.val_sources = data.split_by_name(videos, args.holdout)
        else:
            self.train_sources, self.val_sources = data.split_sources(
                videos, args.val_fraction, args.seed, args.val_split
            )
        self.split = (
            "none"
            if not self.val_sources
            else "name (--holdout)"
            if args.holdout
            else "time"
            if args.val_split == "time" or len(videos) < 2
            else "video"
        )
        self.video_names = sorted(v.name for v in videos)
        self.data_name = data.cache_source_name(cache)
        augment = (
            data.Augment.none() if args.no_augment else data.Augment(scale=args.jitter_scale, offset=args.jitter_offset)
        )
        self.dataset = data.ClipDataset(
            self.train_sources, args.resolution, args.k, args.targets, args.span, augment, seed=args.seed
        )
        self.val_dataset = (
            data.ClipDataset(
                self.val_sources,
                args.resolution,
                args.k,
                args.targets,
                args.span,
                data.Augment.none(),
                seed=args.seed + 1,
            )
            if self.val_sources
            else None
        )

    def _build_losses(self):
        args, config = self.args, self.config
        vgg = None if args.no_vgg else load_vgg(args.vgg_weights).to(self.accelerator.device)
        self.vgg_name = "none (--no-vgg)" if vgg is None else vgg.name
        weights = LossWeights(
            feature_matching=args.lambda_fm,
            perceptual=args.lambda_vgg,
            transformation=args.lambda_tra,
            gradient=args.lambda_grad,
            l1=args.lambda_l1,
        )
        self.losses = Losses(config.mode, weights, vgg, face_crop_size(config.image_size))
        self.d = PatchDiscriminator(3 + config.mask_channels)
        self.face_d = PatchDiscriminator(3) if config.mode == "body" else None
        if args.init_from and self.resume_from is None:
            checkpoints.load_discriminators_from(args.init_from, self.d, self.face_d)

    def _build_lpips(self):
        """LPIPS for validation, when weights are given or available offline; else None."""
        args = self.args
        try:
            metric = load_lpips(args.lpips_alexnet or "auto", args.lpips_lin)
        except TSNetError as error:
            if args.lpips_alexnet or args.lpips_lin:
                raise
            self.log.say(f"validation without LPIPS: {error}")
            return None
        return metric.to(self.accelerator.device)

    def _resume(self, folder: Path):
        """Generator, discriminators, optimisers, step and history of a checkpoint (before `prepare`)."""
        state = checkpoints.load_checkpoint(
            folder, self.model, self.d, self.face_d, self.opt_g, self.opt_d, self.video_names
        )
        self.step, self.history = int(state["step"]), state.get("history", [])
        self.seconds = float(state.get("seconds", 0.0))
        if state.get("world_size", 1) != self.accelerator.num_processes:
            self.log.say(
                f"note: {folder} was trained on {state.get('world_size')} process(es), this run uses "
                f"{self.accelerator.num_processes}: the clips drawn from now on differ from an "
                "uninterrupted run."
            )
        self.log.forget_after(self.step)
        self.log.say(f"resumed from {folder} at step {self.step}")

    # ----- steps, validation, checkpoints ---------------------------------------------------------

    def optimise(self, batch) -> tuple[dict, object]:
        """`train_step` at the scheduled learning rates; the discriminators join after --warmup-steps."""
        args = self.args
        for optimizer, base in ((self.opt_g, args.lr_g), (self.opt_d, args.lr_d)):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(base, self.step, args.steps, args.decay_start)
        return train_step(
            self.accelerator,
            self.losses,
            self.model,
            self.d,
            self.face_d,
            self.opt_g,
            self.opt_d,
            batch,
            adversarial=self.step >= args.warmup_steps,
        )

    @torch.no_grad()
    def validate(self) -> dict | None:
        """Self-reconstruction metrics on the fixed validation clips, averaged over all processes."""
        if self.val_dataset is None:
            return None
        accelerator, args = self.accelerator, self.args
        self.model.eval()
        indices = list(range(args.val_clips))[accelerator.process_index :: accelerator.num_processes]
        # A process with no clip still runs one (and drops it): gathering needs every process.
        chunks = [indices[i : i + args.batch_size] for i in range(0, len(indices), args.batch_size)] or [[0]]
        sums = {}
        for chunk in chunks:
            items = torch.utils.data.default_collate([self.val_dataset[i] for i in chunk])
            batch = data.to_model_inputs(items, accelerator.device, self.config.mask_channels)
            with accelerator.autocast():
                output = self.model(batch.subject_frames, batch.subject_masks, batch.driving_masks)
            for name, values in image_metrics(output.image, batch.targets, self.lpips).items():
                sums.setdefault(name, []).append(values if indices else values[:0])
        self.model.train()
        result = {"step": self.step}
        for name, values in sums.items():  # sum and count over processes (their clip counts differ)
            values = torch.cat(values).float()
            total = accelerator.reduce(torch.stack([values.sum(), values.new_tensor(len(values))]), reduction="sum")
            result[name] = float(total[0] / total[1])
        self.history.append(result)
        return result

    def save(self, final: bool = False) -> Path | None:
        """Write a checkpoint atomically (main process); the final one also goes to output/final."""
        self.accelerator.wait_for_everyone()
        target = None
        if self.main:
            unwrap = self.accelerator.unwrap_model
            state = {
                "step": self.step,
                "args": vars(self.args),
                "videos": self.video_names,
                "history": self.history,
                "seconds": self.elapsed(),
                "world_size": self.accelerator.num_processes,
                "torch": torch.__version__,
                "tsnet_hf": tsnet_hf.__version__,
            }
            card = self._card()

            def write(folder):
                checkpoints.save_checkpoint(
                    folder,
                    unwrap(self.model),
                    unwrap(self.d),
                    unwrap(self.face_d) if self.face_d is not None else None,
                    self.opt_g,
                    self.opt_d,
                    state,
                    card,
                )

            folder = self.output / checkpoints.CHECKPOINTS / checkpoints.step_name(self.step)
            target = checkpoints.write_atomically(folder, write)
            if final:
                target = checkpoints.write_atomically(self.output / "final", write)
            checkpoints.prune_checkpoints(self.output, self.args.keep_checkpoints)
        self.accelerator.wait_for_everyone()
        return target

    def _card(self) -> dict:
        """`render_model_card` keyword arguments for a checkpoint at the current step."""
        settings = training_settings(
            self.args,
            self.config,
            step=self.step,
            processes=self.accelerator.num_processes,
            train_sources=self.train_sources,
            val_sources=self.val_sources,
            split=self.split,
            vgg_name=self.vgg_name,
            minutes=self.elapsed() / 60,
        )
        return card_fields(self.args, self.config, settings, self.history, self.split, self.data_name)

    # ----- the loop -------------------------------------------------------------------------------

    def elapsed(self) -> float:
        """Wall seconds of this run so far, over all its invocations (setup and saving included)."""
        return self.seconds + time.monotonic() - self.started

    def _out_of_time(self, deadline: float) -> bool:
        """Whether the budget is spent; all processes agree (any process past the deadline stops them all)."""
        late = torch.tensor(float(time.monotonic() >= deadline), device=self.accelerator.device)
        if self.accelerator.num_processes == 1:
            return bool(late)
        return bool(self.accelerator.reduce(late, reduction="sum") > 0)

    def progress_bar(self):
        """The bar `run` advances by one per step: steps done of --steps."""
        return tqdm(
            total=self.args.steps, initial=self.step, disable=not self.main or self.args.quiet, dynamic_ncols=True
        )

    def _log_losses(self, sums: dict, counts: dict, count: int, seconds: float) -> dict:
        """Log the mean of each loss part over the `counts[part]` steps that had it (discriminator terms
        are missing from warm-up steps), and the samples per second of `count` steps in `seconds`."""
        accelerator, args = self.accelerator, self.args
        means = {k: float(accelerator.reduce(v / counts[k], reduction="mean")) for k, v in sums.items()}
        samples = count * args.batch_size * args.targets * accelerator.num_processes / max(seconds, 1e-9)
        lr = self.opt_g.param_groups[0]["lr"]
        self.log.record("train", self.step, self.elapsed() / 60, {**means, "lr_g": lr, "samples_per_s": samples})
        self.log.say(loss_line(means, self.step, args.steps, lr, samples))
        return means

    def _log_validation(self):
        result = self.validate()
        if result is None:
            return
        self.log.record("val", self.step, self.elapsed() / 60, {k: v for k, v in result.items() if k != "step"})
        text = " ".join(f"{k} {v:.4f}" for k, v in result.items() if k != "step")
        self.log.say(f"validation at step {self.step}: {text}")

    def run(self) -> Path | None:
        """Train from the current step to --steps (or until --time-budget); returns the final
        checkpoint folder (main process)."""
        args, accelerator = self.args, self.accelerator
        params = sum(p.numel() for p in accelerator.unwrap_model(self.model).parameters()) / 1e6
        self.log.say(
            f"training a {self.config.mode} TS-Net ({params:.1f} M parameters, {self.config.image_size} px)"
            f" on {len(self.train_sources)} video(s) ({len(self.val_sources)} for validation, held out by "
            f"{self.split}), {accelerator.num_processes} process(es) on {accelerator.device}, steps "
            f"{self.step} -> {args.steps}"
        )
        sampler = data.StepSampler(
            self.step, args.steps, args.batch_size, accelerator.process_index, accelerator.num_processes
        )
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_size=args.batch_size,
            sampler=sampler,
            num_workers=args.workers,
            pin_memory=accelerator.device.type == "cuda",
        )
        bar = self.progress_bar()
        sums, counts, count, busy = {}, {}, 0, 0.0  # busy: seconds in steps (not saving or validation)
        # The budget covers the whole run: a resumed run gets what its earlier invocations left.
        deadline = None if args.time_budget is None else time.monotonic() + 60 * args.time_budget - self.elapsed()
        for items in loader:
            if deadline is not None and self._out_of_time(deadline):
                self.log.say(
                    f"time budget of {args.time_budget:g} min reached at step {self.step}: saving; "
                    "continue with --resume"
                )
                break
            started = time.perf_counter()
            batch = data.to_model_inputs(items, accelerator.device, self.config.mask_channels)
            parts, output = self.optimise(batch)
            self.step += 1
            for name, value in parts.items():
                sums[name] = sums.get(name, 0.0) + value.detach().float()
                counts[name] = counts.get(name, 0) + 1
            count += 1
            busy += time.perf_counter() - started
            bar.update(1)
            if self.step % args.log_every == 0 or self.step == args.steps:
                means = self._log_losses(sums, counts, count, busy)
                bar.set_postfix({k: f"{means[k]:.3f}" for k in ("d", "g", "l1") if k in means})
                sums, counts, count, busy = {}, {}, 0, 0.0
            if self.step % args.image_every == 0:
                self.log.save_grid(batch, output, self.config.mode, checkpoints.step_name(self.step))
            if args.val_every and self.step % args.val_every == 0 and self.step < args.steps:
                self._log_validation()
            if self.step % args.save_every == 0 and self.step < args.steps:
                self.save()
        bar.close()
        if count:
            self._log_losses(sums, counts, count, busy)
        if not self.history or self.history[-1]["step"] != self.step:
            self._log_validation()
        final = self.save(final=True)
        if final is not None:
            self.log.say(f"final checkpoint: {final}")
        return final


def push_to_hub(folder: Path, repo_id: str, private: bool = False) -> str:
    """Upload a checkpoint folder (without its training state) to a Hub model repository.

    Raises:
        CheckpointError: the upload failed (not logged in, no network, no permission).
    """

    def failure(error):
        return CheckpointError(
            f"Could not push {folder} to the Hub repository {repo_id} ({type(error).__name__}); "
            f"log in with `hf auth login`, check the network, then run `hf upload {repo_id} "
            f"{folder}`."
        )

    info = create_and_upload(
        folder,
        repo_id,
        "model",
        {"private": private},
        {"ignore_patterns": [f"{checkpoints.STATE_DIR}/*"]},
        "Upload TS-Net checkpoint (tsnet-hf)",
        failure,
    )
    return str(getattr(info, "commit_url", info))


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
        final = Trainer(args).run()
        if args.push_to_hub and final is not None:
            print(f"pushed to {push_to_hub(final, args.push_to_hub, args.hub_private)}", flush=True)
    except TSNetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
