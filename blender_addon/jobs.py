"""From the sidebar's settings to a running pipeline: the concept image as a file, the camera path as a
trajectory.npz, the command line. Plain functions, shared by the modal and the synchronous operator path."""
from __future__ import annotations

import os
import re
import shutil
import tempfile

import bpy
import numpy as np

from . import camera_path, importer, preferences, protocol
from .properties import DEFAULT_PRESET
from .runner import PipelineError, PipelineRun


class Job:
    """A started pipeline and the temporary folder holding the files made for it."""

    def __init__(self, run: PipelineRun, temp_dir: str) -> None:
        self.run = run
        self.temp_dir = temp_dir

    def close(self) -> None:
        self.run.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def start(context) -> Job:
    """Prepare the inputs of the scene's job and start the pipeline on them; PipelineError if it cannot."""
    return _started(context, lambda temp_dir: protocol.build_command(preferences.get(context).base_command(),
                                                                      build_request(context, temp_dir)))


def start_extend(context, root) -> Job:
    """Start extending the level `root` heads: from the scene camera's animation (placed around the level)
    when the camera path is on, else by the chosen preset from the walkthrough's last pose."""
    return _started(context, lambda temp_dir: protocol.extend_command(preferences.get(context).base_command(),
                                                                       extend_request(context, root, temp_dir)))


def _started(context, command) -> Job:
    temp_dir = tempfile.mkdtemp(prefix="lyra_assets_")
    try:
        return Job(PipelineRun(command(temp_dir)), temp_dir)
    except (PipelineError, ValueError):
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise


def extend_request(context, root, temp_dir: str) -> protocol.ExtendRequest:
    settings = context.scene.lyra_assets
    glb = root.get(importer.SOURCE_PROPERTY, "")
    folder = os.path.dirname(glb)
    if not glb or not os.path.isdir(os.path.join(folder, "walkthrough")):
        raise PipelineError(f"{root.name}: its output folder ({folder or 'unknown'}) has no walkthrough to extend; "
                            "generate the level again")
    trajectory = ""
    if settings.use_camera_path:
        trajectory = os.path.join(temp_dir, "camera_path.npz")
        export_camera_path(context, trajectory, level_matrix=np.array(root.matrix_world))
    preset = "" if settings.extend_preset == DEFAULT_PRESET else settings.extend_preset
    return protocol.ExtendRequest(folder, preset=preset, trajectory=trajectory, frames=settings.frames)


def build_request(context, temp_dir: str) -> protocol.BuildRequest:
    settings = context.scene.lyra_assets
    prefs = preferences.get(context)
    trajectory = ""
    if settings.use_camera_path:
        trajectory = os.path.join(temp_dir, "camera_path.npz")
        export_camera_path(context, trajectory)
    return protocol.BuildRequest(
        image=concept_image_file(settings, temp_dir),
        out_dir=prefs.output_folder(),
        preset=prefs.default_preset if settings.preset == DEFAULT_PRESET else settings.preset,
        generator=settings.generator.strip() or prefs.default_generator.strip(),
        trajectory=trajectory,
        frames=settings.frames,
        lods=settings.lod_count,
        lod0_triangles=settings.lod0_triangles,
        texture_size=settings.texture_size,
        force=settings.force,
    )


def concept_image_file(settings, temp_dir: str) -> str:
    """The concept image as a file the pipeline can read."""
    if settings.image_source == 'FILE':
        path = bpy.path.abspath(settings.image_path)
        if not settings.image_path or not os.path.isfile(path):
            raise PipelineError(f"concept image {settings.image_path or '(none)'} not found: choose an image file")
        return os.path.abspath(path)
    image = settings.image
    if image is None:
        raise PipelineError("choose an image from the Image Editor, or switch the concept image to File")
    path = bpy.path.abspath(image.filepath, library=image.library) if image.filepath else ""
    if image.source == 'FILE' and image.packed_file is None and not image.is_dirty and os.path.isfile(path):
        return os.path.abspath(path)  # the file on disk is exactly what Blender shows
    return save_image_copy(image, temp_dir)


def save_image_copy(image, folder: str) -> str:
    """Write an image that has no (up-to-date) file of its own to folder as a PNG, named after the image:
    the pipeline names the asset after the file."""
    stem = re.sub(r"[^\w.-]+", "_", os.path.splitext(image.name)[0]).strip("._") or "image"
    target = os.path.join(folder, stem + ".png")
    if image.type in {'RENDER_RESULT', 'COMPOSITING'}:
        image.save_render(target)  # only these need (and allow) the render pipeline's colour management
        return target
    # A copy, so the user's image keeps its own file path and format.
    copy = image.copy()
    try:
        copy.filepath_raw = target
        copy.file_format = 'PNG'
        copy.save()
    finally:
        bpy.data.images.remove(copy)
    return target


def export_camera_path(context, path: str, level_matrix: np.ndarray | None = None) -> None:
    """The scene camera over the scene's frame range, as a Lyra trajectory.npz in the pipeline's axes:
    relative to its first pose, or in the frame of the level whose root has world matrix level_matrix."""
    scene = context.scene
    camera = scene.camera
    if camera is None or camera.type != 'CAMERA':
        raise PipelineError("the scene has no active camera to take the walkthrough path from")
    lens = camera.data
    if lens.type != 'PERSP':
        raise PipelineError(f"camera {camera.name} is {lens.type.lower()}; a walkthrough needs a perspective camera")
    if lens.shift_x != 0 or lens.shift_y != 0:
        raise PipelineError(f"camera {camera.name} has a lens shift; set Shift X and Y to 0 "
                            "(the pipeline's cameras have a centred principal point)")
    render = scene.render
    if render.pixel_aspect_x != render.pixel_aspect_y:
        raise PipelineError("the render's pixel aspect is not 1:1; the pipeline's cameras have square pixels")
    frames = range(scene.frame_start, scene.frame_end + 1, scene.frame_step)
    if len(frames) < 2:
        raise PipelineError("the scene's frame range has fewer than 2 frames; a walkthrough path needs more")
    width = render.resolution_x * render.resolution_percentage // 100
    height = render.resolution_y * render.resolution_percentage // 100

    matrices, focal = [], []
    current = scene.frame_current, scene.frame_subframe
    try:
        for frame in frames:
            scene.frame_set(frame)
            evaluated = camera.evaluated_get(context.evaluated_depsgraph_get())  # constraints and drivers too
            matrices.append(np.array(evaluated.matrix_world))
            data = evaluated.data
            focal.append(camera_path.focal_length_px(data.lens, data.sensor_width, data.sensor_height,
                                                     data.sensor_fit, width, height))
    finally:
        scene.frame_set(current[0], subframe=current[1])
    arrays = camera_path.lyra_trajectory(np.stack(matrices), np.array(focal), width, height, level_matrix)
    camera_path.write_npz(path, arrays)
