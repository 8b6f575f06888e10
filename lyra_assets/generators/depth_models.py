"""Monocular depth models from local weights: ONNX files through onnxruntime, Marigold through diffusers.

Nothing is downloaded. A model gives relative depth for one RGB image: either affine-invariant inverse depth
("disparity": Depth-Anything V2 and MiDaS, whose published ONNX exports take an N x 3 x H x W image and give
N x H x W or N x 1 x H x W) or affine-invariant depth ("depth": Marigold). The generator turns it into metres.
onnxruntime, diffusers and torch are imported here, only when the depth generator is chosen.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import cv2
import numpy as np

from ..errors import LyraAssetsError

Kind = Literal["disparity", "depth"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # Depth-Anything V2 and MiDaS v2.1 small both normalise with these
IMAGENET_STD = (0.229, 0.224, 0.225)
PATCH = 14  # Depth-Anything's ViT patch: a dynamic-size input must be a multiple of it
DOWNLOAD_HELP = (
    "download a depth model and point [depth] model (or --depth-model) at it: on a CPU, Depth-Anything-V2-Small "
    "as ONNX (about 99 MB, Apache-2.0: `huggingface-cli download onnx-community/depth-anything-v2-small "
    "onnx/model.onnx --local-dir models/depth-anything-v2-small`, then model = "
    "\"models/depth-anything-v2-small/onnx/model.onnx\"), or MiDaS v2.1 small (model-small.onnx from "
    "github.com/isl-org/MiDaS releases, MIT); on a GPU, a Marigold folder (`huggingface-cli download "
    "prs-eth/marigold-depth-v1-1 --local-dir models/marigold`)"
)
MARIGOLD = "MarigoldDepthPipeline"


@dataclass(frozen=True)
class RelativeDepth:
    values: np.ndarray  # (H, W) float32 at the input image's size
    kind: Kind


class DepthModel(Protocol):
    """What the generator asks of a depth model. `K` and `c2w` are the camera the image was taken with:
    metric models may use the intrinsics; the image-only models here ignore both."""

    description: str

    def __call__(self, rgb: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> RelativeDepth: ...


def load_depth_model(path: Path | None, device: str, kind: Kind | None, input_size: int | None,
                     steps: int) -> DepthModel:
    """The model at `path`: an .onnx file, or a diffusers Marigold folder. Raises what to download if absent."""
    if path is None:
        raise LyraAssetsError(f"the depth generator needs a depth model: {DOWNLOAD_HELP}")
    if not path.exists():
        raise LyraAssetsError(f"depth model {path} not found (relative paths are from the current folder); "
                              f"{DOWNLOAD_HELP}")
    if path.is_dir():
        return MarigoldDepth(path, device, steps)
    if path.suffix.lower() != ".onnx":
        raise LyraAssetsError(f"depth model {path}: give an .onnx file or a diffusers Marigold folder; "
                              f"{DOWNLOAD_HELP}")
    return OnnxDepth(path, device, kind or "disparity", input_size)


def onnx_providers(device: str) -> list[str]:
    import onnxruntime

    available = onnxruntime.get_available_providers()
    if device == "cuda" and "CUDAExecutionProvider" not in available:
        raise LyraAssetsError("[depth] device = \"cuda\" but onnxruntime has no CUDA provider here; install "
                              "onnxruntime-gpu, or set device = \"cpu\"")
    wanted = {"cpu": [], "cuda": ["CUDAExecutionProvider"], "auto": ["CUDAExecutionProvider"]}[device]
    return [p for p in wanted if p in available] + ["CPUExecutionProvider"]


class OnnxDepth:
    """A Depth-Anything-style ONNX export: one N x 3 x H x W float image in, one relative depth map out."""

    def __init__(self, path: Path, device: str, kind: Kind, input_size: int | None) -> None:
        import onnxruntime

        try:
            self.session = onnxruntime.InferenceSession(str(path), providers=onnx_providers(device))
        except LyraAssetsError:
            raise
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
            raise LyraAssetsError(f"depth model {path}: onnxruntime cannot load it ({exc}); {DOWNLOAD_HELP}") from exc
        self.path, self.kind = path, kind
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or not _dim_is(inputs[0].shape[1], 3):
            raise LyraAssetsError(f"depth model {path}: expected one image input N x 3 x H x W, the model has "
                                  f"{[(i.name, i.shape) for i in inputs]}")
        self.input = inputs[0].name
        self.dtype = np.float16 if inputs[0].type == "tensor(float16)" else np.float32  # fp16 exports exist
        self.output = outputs[0].name
        _check_output_shape(path, outputs[0].shape)
        h, w = inputs[0].shape[2:]
        self.fixed = (h, w) if isinstance(h, int) and isinstance(w, int) else None
        self.input_size = input_size or 518  # Depth-Anything's training size; the longer side when dynamic
        self.description = f"ONNX {path.name} ({self.session.get_providers()[0]}, {kind})"

    def __call__(self, rgb: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> RelativeDepth:
        h, w = rgb.shape[:2]
        if self.fixed is not None:
            size_h, size_w = self.fixed
        else:  # keep the aspect ratio, both sides multiples of the patch size
            scale = self.input_size / max(h, w)
            size_h = max(PATCH, round(h * scale / PATCH) * PATCH)
            size_w = max(PATCH, round(w * scale / PATCH) * PATCH)
        x = cv2.resize(rgb, (size_w, size_h), interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255.0
        x = (x - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)
        (out,) = self.session.run([self.output], {self.input: x.transpose(2, 0, 1)[None].astype(self.dtype)})
        _check_output_shape(self.path, out.shape)
        values = np.asarray(out, np.float32).reshape(out.shape[-2:])
        return RelativeDepth(cv2.resize(values, (w, h), interpolation=cv2.INTER_LINEAR), self.kind)


def _check_output_shape(path: Path, shape) -> None:
    if not (len(shape) == 3 or len(shape) == 4 and _dim_is(shape[1], 1)):
        raise LyraAssetsError(f"depth model {path}: its output has shape {list(shape)}; a depth model gives one map "
                              "per image, N x H x W or N x 1 x H x W (e.g. Depth-Anything-V2's ONNX export)")


def _dim_is(dim, size: int) -> bool:
    """onnxruntime gives fixed dimensions as ints, symbolic ones as names or None: those may be anything."""
    return not isinstance(dim, int) or dim == size


def pipeline_class(folder: Path) -> str:
    """The pipeline class a diffusers folder was saved as (its model_index.json), or a clear error."""
    index = folder / "model_index.json"
    try:
        return str(json.loads(index.read_text(encoding="utf-8"))["_class_name"])
    except (OSError, ValueError, KeyError) as exc:
        raise LyraAssetsError(f"{folder}: not a diffusers pipeline folder (no readable model_index.json with "
                              f"_class_name: {exc})") from exc


def torch_device(device: str) -> str:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise LyraAssetsError("[depth] device = \"cuda\" but torch sees no CUDA GPU; set device = \"cpu\" or "
                              "\"auto\"")
    return "cuda" if device in ("cuda", "auto") and torch.cuda.is_available() else "cpu"


def load_pipeline(cls, folder: Path, device: str):
    """A diffusers pipeline from a local folder only (never the Hub), half precision on a GPU, quietly."""
    import torch
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()  # our own progress bar reports the frames
    transformers_logging.disable_progress_bar()
    try:
        half = {"torch_dtype": torch.float16} if device == "cuda" else {}
        pipe = cls.from_pretrained(str(folder), local_files_only=True, **half)
    except (OSError, ValueError) as exc:
        raise LyraAssetsError(f"{folder}: diffusers cannot load this folder ({exc})") from exc
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class MarigoldDepth:
    """diffusers' MarigoldDepthPipeline from a local folder: affine-invariant depth in [0, 1]."""

    def __init__(self, folder: Path, device: str, steps: int) -> None:
        found = pipeline_class(folder)
        if found != MARIGOLD:
            raise LyraAssetsError(f"depth model {folder}: a {found} folder, not a {MARIGOLD}; {DOWNLOAD_HELP}")
        from diffusers import MarigoldDepthPipeline

        self.device = torch_device(device)
        self.pipe = load_pipeline(MarigoldDepthPipeline, folder, self.device)
        self.steps = steps
        self.kind: Kind = "depth"
        self.description = f"diffusers {MARIGOLD} {folder.name} ({self.device}, {steps} steps)"

    def __call__(self, rgb: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> RelativeDepth:
        import torch
        from PIL import Image

        generator = torch.Generator(device=self.device).manual_seed(0)  # the same image gives the same depth
        out = self.pipe(Image.fromarray(rgb), num_inference_steps=self.steps, ensemble_size=1,
                        output_type="np", generator=generator)
        values = np.asarray(out.prediction, np.float32).reshape(out.prediction.shape[1:3])
        h, w = rgb.shape[:2]
        return RelativeDepth(cv2.resize(values, (w, h), interpolation=cv2.INTER_LINEAR), "depth")
