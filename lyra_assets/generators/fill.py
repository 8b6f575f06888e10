"""Filling the holes of a frame: what the camera sees that the memory does not hold.

Classical by default (CPU, no weights): the remembered texture mirrored into the hole, as the layout
generator extends its walls, so floors and walls continue with their own pattern; OpenCV's Telea
inpainting smooths cracks a few pixels wide, where a mirror would show. Or a diffusers inpainting pipeline
from a local folder (Stable Diffusion 2 inpainting, SDXL inpainting, FLUX Fill) with the job's prompt.
Either way only the holes change: every remembered pixel is kept exactly.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
from scipy import ndimage

from ..errors import LyraAssetsError
from .depth_models import load_pipeline, pipeline_class, torch_device
from .layout import mirror_fill

INPAINT_RADIUS = 5  # pixels of known neighbourhood Telea's method looks at
CRACK_PX = 2  # hole pixels at most this far from a remembered one are smoothed (Telea), the rest mirrored
INPAINT_PIPELINES = ("StableDiffusionInpaintPipeline", "StableDiffusionXLInpaintPipeline", "FluxFillPipeline")


class Fill(Protocol):
    description: str

    def __call__(self, rgb: np.ndarray, holes: np.ndarray, prompt: str | None) -> np.ndarray: ...


class ClassicalFill:
    description = "classical: mirror extension, Telea inpainting for cracks"

    def __call__(self, rgb: np.ndarray, holes: np.ndarray, prompt: str | None) -> np.ndarray:
        mirrored = mirror_fill(rgb, ~holes)  # mid grey when the memory holds nothing in view
        if holes.all():
            return mirrored
        smooth = cv2.inpaint(rgb, holes.astype(np.uint8), INPAINT_RADIUS, cv2.INPAINT_TELEA)
        crack = ndimage.distance_transform_edt(holes) <= CRACK_PX
        return np.where(crack[..., None], smooth, mirrored)


class DiffusersInpaint:
    """An inpainting pipeline from a local diffusers folder; generation is seeded, so reruns agree."""

    def __init__(self, folder: Path, device: str, steps: int, seed: int) -> None:
        if not folder.is_dir():
            raise LyraAssetsError(f"[depth] inpaint {folder}: no such folder; download an inpainting pipeline "
                                  "(e.g. `huggingface-cli download stabilityai/stable-diffusion-2-inpainting "
                                  "--local-dir models/sd2-inpaint`) or remove `inpaint` for the classical fill")
        found = pipeline_class(folder)
        if found not in INPAINT_PIPELINES:
            raise LyraAssetsError(f"[depth] inpaint {folder}: a {found} folder, not an inpainting pipeline "
                                  f"({', '.join(INPAINT_PIPELINES)})")
        from diffusers import AutoPipelineForInpainting

        self.device = torch_device(device)
        self.pipe = load_pipeline(AutoPipelineForInpainting, folder, self.device)
        self.steps, self.seed = steps, seed
        self.description = f"diffusers {found} {folder.name} ({self.device}, {steps} steps)"

    def __call__(self, rgb: np.ndarray, holes: np.ndarray, prompt: str | None) -> np.ndarray:
        import torch
        from PIL import Image

        h, w = rgb.shape[:2]
        size_h, size_w = max(8, h // 8 * 8), max(8, w // 8 * 8)  # latent diffusion works on multiples of 8
        generator = torch.Generator(device=self.device).manual_seed(self.seed)
        out = self.pipe(prompt=prompt or "", image=Image.fromarray(rgb),
                        mask_image=Image.fromarray(holes.astype(np.uint8) * 255), height=size_h, width=size_w,
                        num_inference_steps=self.steps, generator=generator, output_type="np").images[0]
        painted = cv2.resize(np.clip(np.asarray(out) * 255 + 0.5, 0, 255).astype(np.uint8), (w, h),
                             interpolation=cv2.INTER_CUBIC)
        return np.where(holes[..., None], painted, rgb)
