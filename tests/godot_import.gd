# Print what Godot 3's glTF importer made of an imported scene, as one JSON line starting "LYRA_JSON ".
# Run in a project whose editor has imported the file already (tests/clients.py does both):
#     godot3-server --path PROJECT -s godot_import.gd res://FILE.glb
extends SceneTree


func describe(node):
	var entry = {"name": node.name, "type": node.get_class(), "children": []}
	if node is MeshInstance and node.mesh:
		var triangles = 0
		for surface in range(node.mesh.get_surface_count()):
			var arrays = node.mesh.surface_get_arrays(surface)
			var indices = arrays[Mesh.ARRAY_INDEX]
			triangles += (indices.size() if indices else arrays[Mesh.ARRAY_VERTEX].size()) / 3
		entry["triangles"] = triangles
		entry["visible"] = node.visible
	if node is CollisionShape and node.shape:
		entry["shape"] = node.shape.get_class()
		if node.shape is ConcavePolygonShape:
			entry["faces"] = node.shape.get_faces().size() / 3
	for child in node.get_children():
		entry["children"].append(describe(child))
	return entry


func _init():
	var arguments = OS.get_cmdline_args()
	var scene = load(arguments[arguments.size() - 1])
	if scene == null:
		print("LYRA_JSON null")
	else:
		print("LYRA_JSON " + to_json(describe(scene.instance())))
	quit()
