"""Checkpoint -> ``encoder.onnx`` + ``decoder.onnx`` + ``model.json``, validated.

The encoder graph is the model's own (``SamEncoder``). The decoder graph is, by
default, ``FastSamDecoder`` (``modeling/fast_decoder.py``; the torch backend runs it
too): the same maths as ``SamDecoder``, rewritten so that the per-prompt work is about
half (that module's docstring says how). It equals ``SamDecoder`` within float
rounding (~1e-5 on logits); export checks it, and ``--decoder-graph plain`` exports
``SamDecoder`` as is.

Upscaling to the image size is not in the graph (see ``postprocess.py``).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from . import __version__
from .geometry import EMBED_DIM, EMBED_SIZE, IMAGE_SIZE, LOW_RES_SIZE
from .modeling import SamDecoder, SamEncoder, load_sam
from .modeling.fast_decoder import FastSamDecoder
from .runtime.base import DECODER_INPUT_NAMES, DECODER_OUTPUT_NAMES, ENCODER_INPUT_NAMES, ENCODER_OUTPUT_NAMES
from .transforms import PIXEL_MEAN_RGB, PIXEL_STD_RGB
from .variants import DEFAULT_VARIANT, PROMPT_GUIDED_DECODER, always_three_masks, check_variant
from .weights import MOBILE_SAM_SHA256, PROMPT_GUIDED_DECODER_SHA256, everything_defaults, sha256_file

MODEL_JSON = "model.json"
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
FORMAT_VERSION = 1
DEFAULT_OPSET = 17
DECODER_GRAPHS = ("fast", "plain")

# validation tolerances: ORT against PyTorch on the same weights. Absolute 1e-3 is
# the project's parity tolerance; a relative term keeps it meaningful for weights
# whose outputs are large (real logits reach tens).
VALIDATE_ATOL = 1e-3
VALIDATE_RTOL = 1e-4

DYNAMIC_AXES = {
    "point_coords": {0: "num_prompts", 1: "num_points"},
    "point_labels": {0: "num_prompts", 1: "num_points"},
    "mask_input": {0: "num_mask_inputs"},
    "has_mask_input": {0: "num_mask_inputs"},
    "iou_predictions": {0: "num_prompts"},
    "low_res_masks": {0: "num_prompts"},
}


class ExportError(RuntimeError):
    """Export failed (a tool is missing, or the exported graph does not match PyTorch)."""


# ---------------------------------------------------------------------------------
# ONNX writing
# ---------------------------------------------------------------------------------
def _dedupe_constants(path: Path, min_elements: int = 1024) -> int:
    """Merge identical large constants (the exporter writes the positional encoding
    once per use) into one initializer. Returns the bytes saved."""
    import hashlib

    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    seen: dict[tuple, str] = {}
    rename: dict[str, str] = {}
    keep_nodes = []
    saved = 0
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            array = numpy_helper.to_array(node.attribute[0].t)
            if array.size >= min_elements:
                key = (array.dtype.str, array.shape, hashlib.sha256(array.tobytes()).hexdigest())
                name = node.output[0]
                if key in seen:
                    rename[name] = seen[key]
                    saved += array.nbytes
                else:
                    seen[key] = name
                    graph.initializer.append(numpy_helper.from_array(array, name))
                continue  # a large constant becomes an initializer either way
        keep_nodes.append(node)
    if not rename and len(keep_nodes) == len(graph.node):
        return 0
    for node in keep_nodes:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    del graph.node[:]
    graph.node.extend(keep_nodes)
    onnx.save(model, str(path))
    return saved


def _export_onnx(module: nn.Module, args: tuple, path: Path, input_names, output_names, opset: int,
                 dynamic_axes: dict | None) -> None:
    """TorchScript-based exporter (no onnxscript dependency); writes via a temp file."""
    import warnings

    tmp = path.with_suffix(".onnx.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape arithmetic: all static or symbolic here
        torch.onnx.export(
            module,
            args,
            str(tmp),
            dynamo=False,
            opset_version=opset,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )
    _dedupe_constants(tmp)
    os.replace(tmp, path)


def example_decoder_inputs(batch: int = 2, points: int = 3) -> tuple[torch.Tensor, ...]:
    """Tracing inputs for the decoder (values do not matter; shapes are symbolic)."""
    coords = torch.linspace(0, IMAGE_SIZE - 1, batch * points * 2).reshape(batch, points, 2)
    labels = torch.tensor([1.0, 0.0, -1.0, 2.0, 3.0]).repeat(batch * points)[: batch * points].reshape(batch, points)
    return (
        torch.zeros(1, EMBED_DIM, EMBED_SIZE, EMBED_SIZE),
        coords,
        labels,
        torch.zeros(1, 1, LOW_RES_SIZE, LOW_RES_SIZE),
        torch.zeros(1),
    )


def build_decoder(sam, num_mask_outputs: int = 4, graph: str = "fast") -> nn.Module:
    if graph not in DECODER_GRAPHS:
        raise ValueError(f"decoder graph must be one of {DECODER_GRAPHS}, not '{graph}'")
    module = FastSamDecoder(sam, num_mask_outputs) if graph == "fast" else SamDecoder(sam, num_mask_outputs)
    return module.eval()


def export_encoder(sam, path: Path, opset: int = DEFAULT_OPSET) -> None:
    encoder = SamEncoder(sam).eval()
    with torch.no_grad():
        _export_onnx(
            encoder,
            (torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE),),
            path,
            ENCODER_INPUT_NAMES,
            ENCODER_OUTPUT_NAMES,
            opset,
            None,
        )


def export_decoder(sam, path: Path, opset: int = DEFAULT_OPSET, num_mask_outputs: int = 4, graph: str = "fast") -> None:
    decoder = build_decoder(sam, num_mask_outputs, graph)
    with torch.no_grad():
        _export_onnx(decoder, example_decoder_inputs(), path, DECODER_INPUT_NAMES, DECODER_OUTPUT_NAMES, opset,
                     DYNAMIC_AXES)


def _io_spec(path: Path) -> dict:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}

    def spec(values):
        out = []
        for v in values:
            if v.name in inits:
                continue
            dims = [d.dim_param if d.dim_param else d.dim_value for d in v.type.tensor_type.shape.dim]
            dtype = onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name
            out.append({"name": v.name, "shape": dims, "dtype": dtype})
        return out

    ops = sorted({n.op_type for n in model.graph.node})
    return {"inputs": spec(model.graph.input), "outputs": spec(model.graph.output), "ops": ops}


# ---------------------------------------------------------------------------------
# Validation: ONNX Runtime against PyTorch
# ---------------------------------------------------------------------------------
def validation_image(height: int = 768, width: int = 1024, seed: int = 0) -> np.ndarray:
    """A deterministic RGB test image with structure (gradients, discs, noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([xx / width * 255, yy / height * 255, (xx + yy) / (width + height) * 255], -1)
    for _ in range(12):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(20, 200)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
    image += rng.normal(0, 8, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def validation_prompts(seed: int = 0) -> list[tuple[str, tuple[np.ndarray, ...]]]:
    """Decoder input sets covering every graph path: single points with padding, box
    batches, mixed labels, batched and shared mask inputs."""
    rng = np.random.default_rng(seed)

    def coords(b, n):
        return rng.uniform(0, IMAGE_SIZE, (b, n, 2)).astype(np.float32)

    no_mask = np.zeros((1, 1, LOW_RES_SIZE, LOW_RES_SIZE), np.float32)
    no_flag = np.zeros((1,), np.float32)
    boxes = np.sort(coords(5, 2), axis=1)
    mixed_labels = np.array([[1, 0, 2, 3], [1, 1, 0, -1], [0, 1, -1, -1]], np.float32)
    masks = rng.normal(0, 4, (3, 1, LOW_RES_SIZE, LOW_RES_SIZE)).astype(np.float32)
    return [
        ("1 point + padding", (coords(1, 2), np.array([[1, -1]], np.float32), no_mask, no_flag)),
        ("5 boxes", (boxes, np.tile(np.array([[2, 3]], np.float32), (5, 1)), no_mask, no_flag)),
        ("3 prompts x 4 points, batched masks", (coords(3, 4), mixed_labels, masks, np.array([1, 0, 1], np.float32))),
        ("2 prompts, one shared mask", (coords(2, 1), np.ones((2, 1), np.float32), masks[:1], np.ones((1,), np.float32))),
    ]


def _ort_session(path: Path):
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - a base dependency
        raise ExportError("export validation needs onnxruntime: pip install onnxruntime") from exc
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _close(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    """(max abs difference, allowed difference)."""
    if got.shape != want.shape:
        raise ExportError(f"shape mismatch: ONNX {got.shape} vs PyTorch {want.shape}")
    diff = float(np.abs(got.astype(np.float64) - want).max()) if got.size else 0.0
    allowed = VALIDATE_ATOL + VALIDATE_RTOL * float(np.abs(want).max() if want.size else 0.0)
    return diff, allowed


def validate_export(sam, out_dir: Path, num_mask_outputs: int, graph: str, log: Callable[[str], None] = print,
                    encoder: bool = True) -> dict:
    """Run the ONNX files with ONNX Runtime (CPU) against PyTorch; raise ExportError on mismatch."""
    from .transforms import ImagePreprocessor, resize_longest_side

    report: dict = {}
    failures = []
    image = ImagePreprocessor()(resize_longest_side(validation_image()))
    with torch.no_grad():
        torch_embedding = SamEncoder(sam).eval()(torch.from_numpy(image)).numpy()
    if encoder:
        session = _ort_session(out_dir / ENCODER_FILE)
        (onnx_embedding,) = session.run(None, {ENCODER_INPUT_NAMES[0]: image})
        diff, allowed = _close(onnx_embedding, torch_embedding)
        report["encoder_max_abs_diff"] = diff
        log(f"  encoder: max |onnx - torch| = {diff:.2e} (allowed {allowed:.1e})")
        if not np.isfinite(diff) or diff > allowed:
            failures.append(f"encoder embedding differs by {diff:.3g} (allowed {allowed:.3g})")

    decoder = SamDecoder(sam, num_mask_outputs).eval()  # the reference graph, whatever was exported
    session = _ort_session(out_dir / DECODER_FILE)
    worst = {name: 0.0 for name in DECODER_OUTPUT_NAMES}
    for label, (coords, labels, mask_input, has_mask) in validation_prompts():
        inputs = (torch_embedding, coords, labels, mask_input, has_mask)
        with torch.no_grad():
            want = [t.numpy() for t in decoder(*(torch.from_numpy(a) for a in inputs))]
        got = session.run(list(DECODER_OUTPUT_NAMES), dict(zip(DECODER_INPUT_NAMES, inputs)))
        for name, g, w in zip(DECODER_OUTPUT_NAMES, got, want):
            diff, allowed = _close(g, w)
            worst[name] = max(worst[name], diff)
            if not np.isfinite(diff) or diff > allowed:
                failures.append(f"decoder {name} on '{label}' differs by {diff:.3g} (allowed {allowed:.3g})")
    report["decoder_max_abs_diff"] = worst
    log(
        "  decoder: max |onnx - torch| = "
        + ", ".join(f"{k} {v:.2e}" for k, v in worst.items())
        + f" over {len(validation_prompts())} prompt sets"
    )
    ops = set(_io_spec(out_dir / DECODER_FILE)["ops"])
    banned = ops & {"OneHot", "Tile", "Resize", "Upsample"}
    if banned:
        failures.append(f"decoder graph contains {sorted(banned)}: the embedding must broadcast and upscaling stay outside")
    if failures:
        raise ExportError("exported ONNX does not match PyTorch:\n  " + "\n  ".join(failures))
    report["passed"] = True
    return report


# ---------------------------------------------------------------------------------
# The whole export
# ---------------------------------------------------------------------------------
@dataclass
class ExportResult:
    out_dir: Path
    info: dict
    seconds: float
    files: list[Path] = field(default_factory=list)


def _versions() -> dict:
    import onnx

    versions = {"mobilesam_ros": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
                "python": sys.version.split()[0]}
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:  # pragma: no cover
        pass
    return versions


def _make_dirs(path: Path) -> list[Path]:
    """mkdir -p, returning the directories it created (outermost first)."""
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    path.mkdir(parents=True, exist_ok=True)
    return list(reversed(missing))


def export_model(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    single_mask: bool = False,
    decoder_graph: str = "fast",
    variant: str = DEFAULT_VARIANT,
    decoder_checkpoint: str | os.PathLike | None = None,
    validate: bool = True,
    encoder: bool = True,
    log: Callable[[str], None] = print,
) -> ExportResult:
    """Export a checkpoint to ``out_dir`` (encoder.onnx, decoder.onnx, model.json).

    ``variant`` ("mobilesam", "tinysam") is recorded in model.json and decides how every
    runtime decodes prompts (TinySAM: always the three multimask outputs, so
    ``single_mask`` is refused). ``decoder_checkpoint``: MobileSAMv2's
    ``Prompt_guided_Mask_Decoder.pt``, whose prompt encoder and mask decoder replace the
    checkpoint's (recorded in model.json with its sha256).

    With ``validate`` (the default) both graphs run in ONNX Runtime against PyTorch on
    the same weights and a mismatch raises ``ExportError``. On any failure nothing this
    export wrote stays behind (no model.json, no ONNX files, no directory it created).
    ``encoder=False`` re-exports only the decoder into a directory that already has an
    encoder (tests, experiments).
    """
    started = time.perf_counter()
    checkpoint, out = Path(checkpoint), Path(out_dir)
    variant = check_variant(variant)
    _check_export_request(out, opset, decoder_graph, variant, single_mask, decoder_checkpoint, encoder)
    num_mask_outputs = 1 if single_mask else 4
    # everything that can fail on the inputs fails before anything is written
    sam = load_sam(checkpoint, decoder_checkpoint)
    digest = sha256_file(checkpoint)
    prompt_decoder = _prompt_decoder_record(decoder_checkpoint)

    created = _make_dirs(out)
    written: list[Path] = []
    try:
        stale = out / MODEL_JSON
        if stale.exists():
            stale.unlink()  # never leave a model.json that describes other files
        _write_graphs(sam, out, opset, num_mask_outputs, decoder_graph, encoder, written, log)
        validation = {"skipped": True}
        if validate:
            log("validating with ONNX Runtime against PyTorch ...")
            validation = validate_export(sam, out, num_mask_outputs, decoder_graph, log, encoder=encoder)
        info = _model_info(sam, out, checkpoint, digest, variant, prompt_decoder, opset, num_mask_outputs,
                           decoder_graph, validation)
        tmp = out / (MODEL_JSON + ".tmp")
        written.append(tmp)
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        os.replace(tmp, out / MODEL_JSON)
    except BaseException:
        _remove_partial_export(written, created)
        raise
    seconds = time.perf_counter() - started
    log(f"wrote {out / MODEL_JSON} ({seconds:.1f} s in all)")
    return ExportResult(out, info, seconds, [out / ENCODER_FILE, out / DECODER_FILE, out / MODEL_JSON])


def _check_export_request(out: Path, opset: int, decoder_graph: str, variant: str, single_mask: bool,
                          decoder_checkpoint, encoder: bool) -> None:
    """Refuse a request that cannot give a usable directory, before any work."""
    if opset < 17:
        raise ValueError(f"opset {opset} is too old: LayerNormalization needs opset 17 or newer")
    if decoder_graph not in DECODER_GRAPHS:
        raise ValueError(f"decoder graph must be one of {DECODER_GRAPHS}, not '{decoder_graph}'")
    if single_mask and always_three_masks(variant):
        raise ValueError(
            f"--single-mask is refused for {variant}: its reference decodes every prompt with the three "
            "multimask outputs (tokens 1..3) and never trained or evaluated the single-mask output"
        )
    if decoder_checkpoint is not None and variant != DEFAULT_VARIANT:
        raise ValueError(
            f"--decoder-checkpoint is MobileSAMv2's prompt-guided decoder, used with MobileSAM's encoder; it does "
            f"not go with --variant {variant}"
        )
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    if not encoder and not (out / ENCODER_FILE).exists():
        raise ValueError(f"{out / ENCODER_FILE} is missing: export the encoder too (drop --decoder-only)")


def _prompt_decoder_record(decoder_checkpoint) -> dict | None:
    """model.json's record of MobileSAMv2's prompt-guided decoder (None without one)."""
    if decoder_checkpoint is None:
        return None
    decoder_digest = sha256_file(decoder_checkpoint)
    return {
        "kind": PROMPT_GUIDED_DECODER,
        "file": Path(decoder_checkpoint).name,
        "sha256": decoder_digest,
        # the official file's sha256 is not published (see weights.py): None = unknown
        "official": None if PROMPT_GUIDED_DECODER_SHA256 is None else decoder_digest == PROMPT_GUIDED_DECODER_SHA256,
    }


def _write_graphs(sam, out: Path, opset: int, num_mask_outputs: int, decoder_graph: str, encoder: bool,
                  written: list[Path], log: Callable[[str], None]) -> None:
    """encoder.onnx (unless ``encoder`` is False) and decoder.onnx; each path goes on
    ``written`` before its file is begun, so a failure removes what was started."""
    encoder_path, decoder_path = out / ENCODER_FILE, out / DECODER_FILE
    if encoder:
        t = time.perf_counter()
        written.append(encoder_path)
        export_encoder(sam, encoder_path, opset)
        log(f"wrote {encoder_path} ({encoder_path.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - t:.1f} s)")
    t = time.perf_counter()
    written.append(decoder_path)
    export_decoder(sam, decoder_path, opset, num_mask_outputs, decoder_graph)
    log(
        f"wrote {decoder_path} ({decoder_path.stat().st_size / 1e6:.1f} MB, {decoder_graph} graph, "
        f"{num_mask_outputs} mask output{'s' if num_mask_outputs > 1 else ''}, {time.perf_counter() - t:.1f} s)"
    )


def _model_info(sam, out: Path, checkpoint: Path, digest: str, variant: str, prompt_decoder: dict | None,
                opset: int, num_mask_outputs: int, decoder_graph: str, validation: dict) -> dict:
    """The content of model.json for the graphs just written."""
    encoder_path, decoder_path = out / ENCODER_FILE, out / DECODER_FILE
    info = {
        "format": "mobilesam_ros.onnx",
        "format_version": FORMAT_VERSION,
        "variant": variant,
        "checkpoint": {"file": checkpoint.name, "sha256": digest, "official": digest == MOBILE_SAM_SHA256},
        "prompt_decoder": prompt_decoder,
        "opset": opset,
        "precision": "fp32",
        "num_mask_outputs": num_mask_outputs,
        "decoder_graph": decoder_graph,
        "image_size": IMAGE_SIZE,
        "embedding_shape": [1, EMBED_DIM, EMBED_SIZE, EMBED_SIZE],
        "low_res_size": LOW_RES_SIZE,
        "preprocessing": {
            "resize": "longest side to 1024, PIL bilinear",
            "pixel_mean": list(PIXEL_MEAN_RGB),
            "pixel_std": list(PIXEL_STD_RGB),
            "pad": "zeros, bottom and right, to 1024x1024",
        },
        "encoder": {"file": ENCODER_FILE, "sha256": sha256_file(encoder_path), **_io_spec(encoder_path)},
        "decoder": {"file": DECODER_FILE, "sha256": sha256_file(decoder_path), **_io_spec(decoder_path)},
        "exported_with": _versions(),
        "exported_at": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "validation": validation,
    }
    if prompt_decoder is None:
        recorded = everything_defaults(sam.state_dict())
        if recorded is not None:  # the toy-world model: segment-everything thresholds that suit it
            info["everything"] = {"note": "recommended thresholds for the toy-world model (docs: Segment "
                                          "everything, 'Thresholds recorded per model')", **recorded}
    for part in ("encoder", "decoder"):
        info[part].pop("ops")
    return info


def _remove_partial_export(written: list[Path], created: list[Path]) -> None:
    """Undo a failed export: the files it began (and their .tmp), then the directories
    it created, innermost first, while they are empty."""
    for path in written:
        for leftover in (path, path.with_suffix(path.suffix + ".tmp")):
            leftover.unlink(missing_ok=True)
    for directory in reversed(created):
        try:
            directory.rmdir()  # only if empty: never what someone else put there
        except OSError:
            break
