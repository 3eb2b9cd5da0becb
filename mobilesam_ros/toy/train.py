"""Train the toy-world model, first phase: the decoder on the seeded random encoder.

    python -m mobilesam_ros.toy.train --work out/toy-train            # cache, train, write
    python -m mobilesam_ros.toy.train --work out/toy-train --steps 3000 --scenes 320

What is trained and why: the image encoder (TinyViT) keeps the seeded random
weights of a synthetic checkpoint (rounded to float16 so they ship compactly and
exactly); its features before the neck are computed once per training scene and
cached, so a step costs only the neck, the prompt encoder and the mask decoder.
Those three are trained (4.8 M parameters) on procedurally drawn scenes
(:mod:`mobilesam_ros.toy.scenes`) with SAM's recipe adapted to random features: object-weighted BCE + dice loss,
best-of-three for the multimask tokens 1..3, token 0 always, MSE on the IoU head,
prompts of every kind (tight and jittered boxes, one point, several points with
background points, box + point, a shifted earlier mask as ``mask_input``).

The program is seeded and resumable (``--work`` keeps the feature cache and a
state file written every ``--save-every`` steps; run the same command again to go
on). It prints progress and, every ``--eval-every`` steps, the held-out IoU of
box and point prompts at low resolution. The product, ``WORK/toy_world.npz``, is
what :mod:`mobilesam_ros.toy.model` turns into a checkpoint; the full-resolution
evaluation through the real predictor is ``python -m mobilesam_ros.toy.evaluate``.
The second phase, :mod:`mobilesam_ros.toy.finetune`, starts from that product and
trains the encoder too (a random encoder caps what this phase can reach).
Needs PyTorch (the ``[export]`` extra); CPU only.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..geometry import LOW_RES_SIZE
from ..transforms import ImagePreprocessor, apply_coords, preprocess_shape, resize_longest_side
from .model import TRAINED_PREFIXES, base_state_dict, save_trained
from .scenes import Scene, make_scene

TRAIN_SEED0 = 10_000  # training scenes use seeds TRAIN_SEED0 + i; evaluation never does
HELD_OUT_SEED0 = 1_000_000
SIZES = ((640, 480), (640, 480), (640, 480), (640, 480), (640, 480), (640, 480), (480, 640), (800, 600),
         (1024, 768), (512, 384))


def training_scene(index: int) -> Scene:
    """Training scene ``index``: its seed also picks the size and background style."""
    seed = TRAIN_SEED0 + index
    rng = np.random.default_rng(seed + 7_777_777)
    width, height = SIZES[int(rng.integers(len(SIZES)))]
    style = "gradient" if rng.random() < 0.65 else "blotches"
    return make_scene(seed, width, height, style)


def held_out_scene(index: int, style: str = "gradient") -> Scene:
    """Held-out scene of the demo's style (640x480, sizes 50-180 px) or another background."""
    return make_scene(HELD_OUT_SEED0 + index + (0 if style == "gradient" else 500_000), 640, 480, style)


# --- features and targets -------------------------------------------------------------------
class FeatureCache:
    """Pre-neck encoder features (320, 64, 64) float32 per scene, on disk, made once."""

    def __init__(self, folder: Path, encoder: torch.nn.Module) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.encoder = encoder
        self.preprocess = ImagePreprocessor()

    @torch.no_grad()
    def _compute(self, image: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(self.preprocess(resize_longest_side(image)).copy())
        x = self.encoder.patch_embed(x)
        for layer in self.encoder.layers:
            x = layer(x)
        size = self.encoder.embedding_size
        return x.view(1, size, size, -1).permute(0, 3, 1, 2).contiguous().numpy()[0]

    def has(self, name: str) -> bool:
        return (self.folder / f"{name}.npy").is_file()

    def get(self, name: str, image: np.ndarray) -> np.ndarray:
        path = self.folder / f"{name}.npy"
        if path.is_file():
            return np.load(path)
        features = self._compute(image)
        np.save(path.with_suffix(".tmp.npy"), features)
        path.with_suffix(".tmp.npy").replace(path)
        return features


def low_res_target(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (256, 256) float32 coverage in the decoder's low-res frame
    (the image resized to 1024 on its long side, padded bottom/right)."""
    h, w = preprocess_shape(*mask.shape)
    lh, lw = max(1, round(h / 4)), max(1, round(w / 4))
    out = np.zeros((LOW_RES_SIZE, LOW_RES_SIZE), np.float32)
    out[:lh, :lw] = cv2.resize(mask.astype(np.float32), (lw, lh), interpolation=cv2.INTER_AREA)
    return out


# --- prompts --------------------------------------------------------------------------------
def _sample_points(rng: np.random.Generator, mask: np.ndarray, count: int) -> np.ndarray:
    """Points inside the mask, preferring its interior (as a person clicks)."""
    eroded = cv2.erode(mask.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    ys, xs = np.nonzero(eroded if eroded.sum() >= 10 else mask)
    pick = rng.integers(0, len(xs), count)
    return np.stack([xs[pick] + 0.5, ys[pick] + 0.5], 1).astype(np.float32)


def _background_points(rng: np.random.Generator, mask: np.ndarray, box: np.ndarray, count: int) -> np.ndarray:
    h, w = mask.shape
    x0, y0, x1, y1 = box
    pad = 0.3 * max(x1 - x0, y1 - y0)
    xs0, ys0 = int(max(0, x0 - pad)), int(max(0, y0 - pad))
    xs1, ys1 = int(min(w, x1 + pad)), int(min(h, y1 + pad))
    region = ~mask[ys0:ys1, xs0:xs1]
    ys, xs = np.nonzero(region)
    if len(xs) == 0:
        return np.zeros((0, 2), np.float32)
    pick = rng.integers(0, len(xs), count)
    return np.stack([xs[pick] + xs0 + 0.5, ys[pick] + ys0 + 0.5], 1).astype(np.float32)


def jitter_box(rng: np.random.Generator, box: np.ndarray, size: tuple[int, int], amount: float) -> np.ndarray:
    """SAM's box noise: each side moves by N(0, amount x side length), at most 20 px."""
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    noise = rng.normal(0, amount, 4) * np.array([bw, bh, bw, bh])
    noise = np.clip(noise, -20, 20)
    h, w = size
    out = box + noise
    return np.array([np.clip(out[0], 0, w - 1), np.clip(out[1], 0, h - 1),
                     np.clip(out[2], out[0] + 2, w), np.clip(out[3], out[1] + 2, h)], np.float32)


def make_prompt(rng: np.random.Generator, scene: Scene, index: int,
                kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(coords (N, 2) original pixels, labels (N,), mask_input (256, 256) or None) as SAM's
    predictor builds them: points, then box corners (labels 2, 3), or one padding point
    when there is no box."""
    mask = scene.masks[index]
    box = scene.boxes()[index]
    size = mask.shape
    pad = (np.zeros((1, 2), np.float32), np.array([-1], np.float32))
    mask_input = None
    if kind == "box":
        b = jitter_box(rng, box, size, 0.0 if rng.random() < 0.3 else 0.06)
        return b.reshape(2, 2), np.array([2, 3], np.float32), None
    if kind == "point":
        pts = _sample_points(rng, mask, 1)
        return np.concatenate([pts, pad[0]]), np.concatenate([np.ones(1, np.float32), pad[1]]), None
    if kind == "points":
        fg = _sample_points(rng, mask, int(rng.integers(2, 4)))
        bg = _background_points(rng, mask, box, int(rng.integers(0, 3)))
        pts = np.concatenate([fg, bg])
        labels = np.concatenate([np.ones(len(fg), np.float32), np.zeros(len(bg), np.float32)])
        return np.concatenate([pts, pad[0]]), np.concatenate([labels, pad[1]]), None
    if kind == "box+point":
        b = jitter_box(rng, box, size, 0.06)
        pts = _sample_points(rng, mask, 1)
        return (np.concatenate([pts, b.reshape(2, 2)]), np.array([1, 2, 3], np.float32), None)
    if kind == "refine":  # an earlier mask of the object, moved a little (as tracking feeds it)
        target = low_res_target(mask)
        shift = rng.integers(-4, 5, 2)
        moved = np.roll(target, tuple(shift), axis=(0, 1))
        k = int(rng.integers(1, 4)) * 2 + 1
        moved = cv2.GaussianBlur(moved, (k, k), 0)
        mask_input = ((moved - 0.5) * rng.uniform(8, 24)).astype(np.float32)
        b = jitter_box(rng, box, size, 0.08)
        return b.reshape(2, 2), np.array([2, 3], np.float32), mask_input
    raise ValueError(kind)


PROMPT_KINDS = ("box", "point", "points", "box+point", "refine")
PROMPT_WEIGHTS = (0.42, 0.34, 0.09, 0.06, 0.09)  # the evaluated kinds (box, point) most


# --- model parts ----------------------------------------------------------------------------
class TrainableParts(torch.nn.Module):
    """The neck, prompt encoder and mask decoder of a :class:`Sam`, trained together."""

    def __init__(self, sam) -> None:
        super().__init__()
        self.neck = sam.image_encoder.neck
        self.prompt_encoder = sam.prompt_encoder
        self.mask_decoder = sam.mask_decoder
        self.register_buffer("image_pe", sam.prompt_encoder.get_dense_pe().detach(), persistent=False)

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        return self.neck(features)

    def decode(self, embedding: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor,
               mask_input: torch.Tensor, has_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sparse = self.prompt_encoder.embed_points(coords, labels)
        dense = self.prompt_encoder.embed_masks(mask_input, has_mask)
        return self.mask_decoder(embedding, self.image_pe, sparse, dense)


def weighted_bce(logits: torch.Tensor, target: torch.Tensor, power: float = 0.5) -> torch.Tensor:
    """Per-mask BCE with the object's pixels weighted by (background / object) ** power.

    Random encoder features give the decoder a weak signal; measured here: SAM's focal
    loss (x20) + dice collapsed to empty masks (held-out box IoU 0.02 after 200 steps),
    fully class-balanced BCE (power 1) bloats masks well past the objects (the spike in
    the issue). The square root gets training going; it still bloats small objects, so
    a last, low-rate phase uses plain BCE (power 0) to tighten the masks.
    """
    pos = target.flatten(-2).sum(-1).clamp(min=1.0)
    neg = (1 - target).flatten(-2).sum(-1).clamp(min=1.0)
    pos_weight = (neg / pos).pow(power).clamp(1.0, 10.0)[..., None, None]
    loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight, reduction="none")
    return loss.flatten(-2).mean(-1)


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    prob = logits.sigmoid().flatten(-2)
    target = target.flatten(-2)
    return 1 - (2 * (prob * target).sum(-1) + 1) / (prob.sum(-1) + target.sum(-1) + 1)


def mask_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    pred = (logits > 0).flatten(-2)
    truth = (target > 0.5).flatten(-2)
    inter = (pred & truth).sum(-1).float()
    union = (pred | truth).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))


def prompt_batch(rng, scene: Scene, kinds: list[str], objects: list[int], make=make_prompt):
    """Group the prompts of one scene by point count (no extra padding tokens, as the
    predictor does); yield tensors per group with their targets. ``make`` builds one
    prompt (:func:`make_prompt`'s signature; the fine-tune adds tracking-like kinds)."""
    h, w = scene.image.shape[:2]
    input_size = preprocess_shape(h, w)
    groups: dict[int, list] = {}
    for kind, obj in zip(kinds, objects):
        coords, labels, mask_input = make(rng, scene, obj, kind)
        coords = apply_coords(coords, (h, w), input_size)
        groups.setdefault(len(labels), []).append((coords, labels, mask_input, obj, kind))
    for items in groups.values():
        coords = torch.from_numpy(np.stack([i[0] for i in items]))
        labels = torch.from_numpy(np.stack([i[1] for i in items]))
        mask_in = np.stack([i[2] if i[2] is not None else np.zeros((LOW_RES_SIZE,) * 2, np.float32) for i in items])
        has_mask = torch.tensor([0.0 if i[2] is None else 1.0 for i in items])
        targets = torch.from_numpy(np.stack([low_res_target(scene.masks[i[3]]) for i in items]))
        yield coords, labels, torch.from_numpy(mask_in)[:, None], has_mask, targets, [i[4] for i in items]


def prompt_losses(masks: torch.Tensor, iou_pred: torch.Tensor, targets: torch.Tensor, kinds: list[str],
                  pos_weight_power: float = 0.5) -> torch.Tensor:
    """SAM's loss for (B, 4, 256, 256) logits: token 0 always; best of tokens 1..3; IoU MSE."""
    masks = masks.float()
    t = targets[:, None].expand_as(masks)
    per_mask = weighted_bce(masks, t, pos_weight_power) + dice_loss(masks, t)  # (B, 4)
    best_multi = per_mask[:, 1:].min(dim=1).values
    # one point is ambiguous: token 0 is not SAM's answer for it, weigh it less
    w0 = torch.tensor([0.5 if k == "point" else 1.0 for k in kinds])
    loss = w0 * per_mask[:, 0] + best_multi
    with torch.no_grad():
        true_iou = mask_iou(masks, t)
    loss = loss + F.mse_loss(iou_pred.float(), true_iou, reduction="none").mean(1)
    return loss


# --- evaluation at low resolution, during training --------------------------------------------
@torch.no_grad()
def low_res_eval(parts: TrainableParts, held_out: list[tuple[Scene, np.ndarray]], seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    box_iou, point_iou = [], []
    for scene, features in held_out:
        emb = parts.embed(torch.from_numpy(features)[None])
        objects = list(range(len(scene.masks)))
        for kind, store in (("box-tight", box_iou), ("point", point_iou)):
            for coords, labels, mask_in, has_mask, targets, _ in prompt_batch(
                    rng, scene, ["point" if kind == "point" else "box"] * len(objects), objects):
                if kind == "box-tight":  # exact boxes, no jitter
                    h, w = scene.image.shape[:2]
                    boxes = scene.boxes()[objects].reshape(-1, 2, 2)
                    coords = torch.from_numpy(apply_coords(boxes, (h, w), preprocess_shape(h, w)))
                masks, iou_pred = parts.decode(emb, coords, labels, mask_in, has_mask)
                ious = mask_iou(masks, targets[:, None].expand_as(masks))
                if kind == "point":
                    pick = iou_pred[:, 1:].argmax(1) + 1
                    store.extend(ious[torch.arange(len(pick)), pick].tolist())
                else:
                    store.extend(ious[:, 0].tolist())
    return {"box": float(np.mean(box_iou)), "point": float(np.mean(point_iou))}


# --- shared by both training phases -----------------------------------------------------------
def adamw(named_parameters, lr: float) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only (not norms, biases, embeddings, tokens)."""
    named = list(named_parameters)
    decayed = [p.ndim >= 2 and "embed" not in n and "tokens" not in n for n, p in named]
    return torch.optim.AdamW([{"params": [p for (_, p), d in zip(named, decayed) if d], "weight_decay": 1e-4},
                              {"params": [p for (_, p), d in zip(named, decayed) if not d], "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.999))


def warmup_cosine(step: int, lr: float, warmup: int, steps: int) -> float:
    """Linear warm-up, then cosine decay to 2 % of ``lr`` at ``steps``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


# --- the program ----------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mobilesam_ros.toy.train", description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="folder for the feature cache, state and product")
    parser.add_argument("--scenes", type=int, default=320, help="training scenes (default 320)")
    parser.add_argument("--steps", type=int, default=2400, help="optimiser steps (default 2400)")
    parser.add_argument("--scenes-per-step", type=int, default=2)
    parser.add_argument("--prompts-per-scene", type=int, default=6)
    parser.add_argument("--lr", type=float, default=6e-4)
    parser.add_argument("--warmup", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--eval-every", type=int, default=200)
    parser.add_argument("--save-every", type=int, default=50)
    parser.add_argument("--held-out", type=int, default=16, help="held-out scenes for the running evaluation")
    parser.add_argument("--pos-weight-power", type=float, default=0.5,
                        help="BCE weight of object pixels = (background/object) ** this (default 0.5; 0 = plain BCE, "
                             "for the final tightening phase)")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                        help="bfloat16 autocast for the decoder (about 2x faster on CPUs with AVX-512 bf16)")
    args = parser.parse_args(argv)
    for name in ("scenes", "steps", "scenes_per_step", "prompts_per_scene", "eval_every", "save_every"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def cached_scenes(cache: FeatureCache, num_train: int, num_held_out: int) -> tuple[list, list]:
    """The training scenes' features (index, features) and the held-out (scene, features),
    encoded once by the frozen encoder and cached, with progress."""
    t0 = time.time()
    train_scenes: list[tuple[int, np.ndarray]] = []
    encoded = 0  # scenes encoded by this run (the rest came from the cache)
    for i in range(num_train):
        name = f"train-{i:05d}"
        encoded += not cache.has(name)
        train_scenes.append((i, cache.get(name, training_scene(i).image)))
        if (i + 1) % 20 == 0 or i + 1 == num_train:
            rate = (time.time() - t0) / max(1, encoded)
            left = sum(not cache.has(f"train-{j:05d}") for j in range(i + 1, num_train))
            print(f"[cache] {i + 1}/{num_train} training scenes ready ({encoded} encoded now, "
                  f"{rate:.2f} s each, ~{rate * left / 60:.1f} min left)", flush=True)
    held_out = [held_out_scene(j) for j in range(num_held_out)]
    return train_scenes, [(s, cache.get(f"heldout-{j:05d}", s.image)) for j, s in enumerate(held_out)]


def train_step(parts: TrainableParts, train_scenes: list, rng: np.random.Generator, args: argparse.Namespace) -> float:
    """One step's gradients (the caller steps the optimiser): ``scenes_per_step`` scenes,
    ``prompts_per_scene`` prompts each, every prompt group decoded against its scene's
    embedding. Returns the step's loss."""
    total = 0.0
    for pick in rng.choice(len(train_scenes), args.scenes_per_step, replace=False):
        index, features = train_scenes[pick]
        scene = training_scene(index)
        objects = [int(o) for o in rng.integers(0, len(scene.masks), args.prompts_per_scene)]
        kinds = [str(k) for k in rng.choice(PROMPT_KINDS, args.prompts_per_scene, p=PROMPT_WEIGHTS)]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            emb = parts.embed(torch.from_numpy(features)[None])
            for coords, labels, mask_in, has_mask, targets, group_kinds in prompt_batch(rng, scene, kinds, objects):
                masks, iou_pred = parts.decode(emb, coords, labels, mask_in, has_mask)
                loss = prompt_losses(masks, iou_pred, targets, group_kinds, args.pos_weight_power).sum()
                loss = loss / (args.scenes_per_step * args.prompts_per_scene)
                loss.backward(retain_graph=True)  # the embedding is shared by the groups
                total += float(loss.detach())
    return total


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from ..modeling.sam import Sam

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    sam = Sam()
    sam.load_state_dict(base_state_dict())
    sam.eval()
    t0 = time.time()
    train_scenes, held_out = cached_scenes(FeatureCache(work / "features", sam.image_encoder), args.scenes, args.held_out)

    parts = TrainableParts(sam)
    parts.train()
    for p in sam.image_encoder.parameters():
        p.requires_grad_(False)
    for p in parts.parameters():
        p.requires_grad_(True)
    optim = adamw(parts.named_parameters(), args.lr)

    def lr_at(step: int) -> float:
        return warmup_cosine(step, args.lr, args.warmup, args.steps)

    state_path = work / "state.pt"
    history: list[dict] = []
    step = 0
    if state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        parts.load_state_dict(state["parts"])
        optim.load_state_dict(state["optim"])
        step, history = state["step"], state["history"]
        print(f"[train] resuming at step {step}", flush=True)

    def save() -> None:
        torch.save({"parts": parts.state_dict(), "optim": optim.state_dict(), "step": step, "history": history,
                    "rng": rng.bit_generator.state}, state_path.with_suffix(".tmp"))
        state_path.with_suffix(".tmp").replace(state_path)

    rng = np.random.default_rng([args.seed, step])  # a resumed run draws on from its step
    start, losses = time.time(), []
    steps_at_start = step
    while step < args.steps:
        for group in optim.param_groups:
            group["lr"] = lr_at(step)
        optim.zero_grad(set_to_none=True)
        losses.append(train_step(parts, train_scenes, rng, args))
        torch.nn.utils.clip_grad_norm_(parts.parameters(), 1.0)
        optim.step()
        step += 1
        if step % 10 == 0:
            per_step = (time.time() - start) / (step - steps_at_start)
            print(f"[train] step {step}/{args.steps} loss {np.mean(losses[-10:]):.4f} lr {lr_at(step):.2e} "
                  f"{per_step:.2f} s/step, ~{per_step * (args.steps - step) / 60:.0f} min left", flush=True)
        if step % args.eval_every == 0 or step == args.steps:
            parts.eval()
            result = low_res_eval(parts, held_out)
            parts.train()
            result.update(step=step, loss=float(np.mean(losses[-args.eval_every:])), minutes=(time.time() - t0) / 60)
            history.append(result)
            print(f"[eval] step {step}: held-out low-res IoU box {result['box']:.3f} point {result['point']:.3f}",
                  flush=True)
        if step % args.save_every == 0 or step == args.steps:
            save()

    trained = {k: v for k, v in sam.state_dict().items() if k.startswith(TRAINED_PREFIXES)}
    product = save_trained(work / "toy_world.npz", trained)
    (work / "history.json").write_text(json.dumps(history, indent=1))
    print(f"[done] wrote {product} ({product.stat().st_size / 1e6:.1f} MB) after {step} steps", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
