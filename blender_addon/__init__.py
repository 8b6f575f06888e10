"""Lyra Assets for Blender: one concept image in, an LOD-grouped level asset in the scene.

The pipeline runs outside Blender, as the `lyra-assets` command line in a subprocess; this add-on builds its
command line, reads its JSON progress lines and imports the .glb it writes. protocol, runner and camera_path
import no bpy, so they are tested outside Blender; the bpy modules are imported only when Blender registers
the add-on.
"""


def register():
    import bpy

    from . import operators, panels, preferences, properties

    bpy.utils.register_class(preferences.LyraAssetsPreferences)
    bpy.utils.register_class(properties.LyraAssetsSettings)
    bpy.types.Scene.lyra_assets = bpy.props.PointerProperty(type=properties.LyraAssetsSettings)
    for cls in operators.classes + panels.classes:
        bpy.utils.register_class(cls)


def unregister():
    import bpy

    from . import operators, panels, preferences, properties

    if operators.STATE.running:  # a job left running would outlive the add-on that owns its process
        operators.STATE.job.run.cancel()
        operators.STATE.end()
    for cls in reversed(operators.classes + panels.classes):
        bpy.utils.unregister_class(cls)
    del bpy.types.Scene.lyra_assets
    bpy.utils.unregister_class(properties.LyraAssetsSettings)
    bpy.utils.unregister_class(preferences.LyraAssetsPreferences)
