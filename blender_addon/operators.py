"""Generate (modal while Blender's UI runs; synchronous from scripts and headless), Cancel, Refresh presets,
and switching the shown LOD.

Invoked from the UI, Generate starts the pipeline and returns; a window-manager timer then wakes the modal
handler on the main thread, which drains the pipeline's events, moves the progress bar and does every bpy
call (the import at the end included). Blender run headless calls `execute` even for INVOKE_DEFAULT, so
`execute` runs the same job to the end before it returns and registers no timer.
"""
from __future__ import annotations

import bpy

from . import importer, jobs
from .importer import ImportFailed
from .properties import CATALOGUE
from .protocol import JobProgress, ProgressEvent
from .runner import PipelineError

TIMER_S = 0.2


class JobState:
    """The one job this Blender runs at a time, as the panel shows it."""

    def __init__(self) -> None:
        self.job: jobs.Job | None = None
        self.progress = JobProgress()
        self.error = ""  # the last failure, in the pipeline's own words
        self.cancel_requested = False

    @property
    def running(self) -> bool:
        return self.job is not None

    def begin(self, job: jobs.Job) -> None:
        self.job, self.progress, self.error, self.cancel_requested = job, JobProgress(), "", False

    def on_event(self, event) -> None:
        if isinstance(event, ProgressEvent):
            self.progress.update(event)

    def end(self) -> None:
        if self.job is not None:
            self.job.close()
        self.job = None


STATE = JobState()


def _start(operator, context) -> bool:
    STATE.error = ""
    try:
        STATE.begin(jobs.start(context))
    except (PipelineError, ValueError) as exc:
        _fail(operator, str(exc))
        return False
    return True


def _finish(operator, context) -> set[str]:
    """After the pipeline's output has ended: import what it built, or say why there is nothing."""
    run = STATE.job.run
    try:
        outputs = run.outputs()
        if "glb" not in outputs:
            raise PipelineError("lyra-assets named no .glb among its outputs")
        root = importer.import_asset(context, outputs["glb"])
    except (PipelineError, ImportFailed) as exc:
        if run.cancelled:
            operator.report({'WARNING'}, "Lyra Assets: cancelled")
        else:
            _fail(operator, str(exc))
        return {'CANCELLED'}
    finally:
        STATE.end()
    operator.report({'INFO'}, f"Lyra Assets: imported {root.name} from {outputs['glb']}")
    return {'FINISHED'}


def _fail(operator, message: str) -> None:
    STATE.error = message
    operator.report({'ERROR'}, message)


class LYRA_ASSETS_OT_generate(bpy.types.Operator):
    bl_idname = "lyra_assets.generate"
    bl_label = "Generate"
    bl_description = "Build a level asset from the concept image and import it into the scene"
    bl_options = {'REGISTER', 'UNDO'}

    @classmethod
    def poll(cls, context):
        return not STATE.running

    def execute(self, context):
        if not _start(self, context):
            return {'CANCELLED'}
        try:
            STATE.job.run.wait(STATE.on_event)
        except BaseException:  # Ctrl+C in a script: stop the pipeline rather than leave it running
            STATE.job.run.cancel()
            STATE.end()
            raise
        return _finish(self, context)

    def invoke(self, context, event):
        if not _start(self, context):
            return {'CANCELLED'}
        wm = context.window_manager
        self._timer = wm.event_timer_add(TIMER_S, window=context.window)
        wm.modal_handler_add(self)
        _show(context)
        return {'RUNNING_MODAL'}

    def modal(self, context, event):
        if not STATE.running:  # the add-on was disabled, which cancelled the job
            self._stop_timer(context)
            return {'CANCELLED'}
        if event.type == 'ESC' or STATE.cancel_requested:
            STATE.job.run.cancel()
        elif event.type != 'TIMER':
            return {'PASS_THROUGH'}
        for pipeline_event in STATE.job.run.poll():
            STATE.on_event(pipeline_event)
        if not STATE.job.run.ended:
            _show(context)
            return {'RUNNING_MODAL'}
        self._stop_timer(context)
        result = _finish(self, context)
        _show(context)
        return result

    def cancel(self, context):
        """Blender ends the modal handler without asking (a file is being loaded, Blender quits)."""
        STATE.job.run.cancel()
        STATE.end()
        self._stop_timer(context)

    def _stop_timer(self, context):
        context.window_manager.event_timer_remove(self._timer)
        context.workspace.status_text_set(None)


def _show(context) -> None:
    """The job's progress in the status bar and in every 3D viewport's sidebar."""
    if STATE.running:
        context.workspace.status_text_set(f"Lyra Assets: {STATE.progress.text}  (Esc to cancel)")
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == 'VIEW_3D':
                area.tag_redraw()


class LYRA_ASSETS_OT_cancel(bpy.types.Operator):
    bl_idname = "lyra_assets.cancel"
    bl_label = "Cancel"
    bl_description = "Stop the running job"

    @classmethod
    def poll(cls, context):
        return STATE.running

    def execute(self, context):
        STATE.cancel_requested = True  # the modal handler stops the job on its next tick
        return {'FINISHED'}


class LYRA_ASSETS_OT_refresh_presets(bpy.types.Operator):
    bl_idname = "lyra_assets.refresh_presets"
    bl_label = "Refresh Presets"
    bl_description = "Ask the pipeline for its walkthrough presets again"

    def execute(self, context):
        CATALOGUE.load(context)
        if CATALOGUE.error:
            self.report({'ERROR'}, CATALOGUE.error)
            return {'CANCELLED'}
        return {'FINISHED'}


class LYRA_ASSETS_OT_show_lod(bpy.types.Operator):
    bl_idname = "lyra_assets.show_lod"
    bl_label = "Show LOD"
    bl_description = "Show this level of detail of the active asset and hide the others"
    bl_options = {'REGISTER', 'UNDO'}

    level: bpy.props.IntProperty(name="Level", min=0)

    @classmethod
    def poll(cls, context):
        return importer.asset_root(context.active_object) is not None

    def execute(self, context):
        root = importer.asset_root(context.active_object)
        if self.level >= len(importer.lod_objects(root)):
            self.report({'ERROR'}, f"{root.name} has no LOD{self.level}")
            return {'CANCELLED'}
        importer.show_lod(root, self.level)
        return {'FINISHED'}


classes = (LYRA_ASSETS_OT_generate, LYRA_ASSETS_OT_cancel, LYRA_ASSETS_OT_refresh_presets,
           LYRA_ASSETS_OT_show_lod)
