"""The embedded generator's geometry: tests that fail if poses, intrinsics, depth or texturing are wrong."""
import cv2
import numpy as np
import pytest
from scenes import BoxScene, OpenGroundScene

from lyra_assets.generators.layout import LayoutGenerator, LayoutHints, fit_room, mirror_fill
from lyra_assets.generators import open_scene
from lyra_assets.generators.layout import detect_segments
from lyra_assets.generators.open_scene import continue_texture
from lyra_assets.images import ConceptImage, load_concept_image
from lyra_assets.motions import camera_path
from lyra_assets.presets import available_presets, load_preset
from lyra_assets.progress import silent
from lyra_assets.trajectory import CameraPath, intrinsics_from_fov, pixel_rays, project
from lyra_assets.walkthrough import Walkthrough

SMALL = {"camera": {"width": 256, "height": 148}, "path": {"frames": 21}}


@pytest.fixture(scope="module")
def image(example_image):
    return load_concept_image(example_image)


def _walk(image, preset_name, overrides=SMALL, hints=None):
    preset = load_preset(preset_name, overrides=overrides)
    generator = LayoutGenerator(preset, hints or {})
    path, notes = camera_path(preset, generator.survey(image))
    return generator, generator.generate(image, path, silent), notes


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / max(mse, 1e-12))


def test_the_example_corridor_is_a_room(image):
    generator = LayoutGenerator(load_preset("walk_forward"), {})
    fit = generator._fit(image).fit
    assert fit["case"] == "room" and fit["room_max_m"][1] == 1.6


def test_vanishing_point_of_the_example_is_found(image):
    _, fit = fit_room(image.pixels, 60.0, 1.6, LayoutHints())
    assert fit["vanishing_point_source"] == "detected"
    # The example is rendered looking straight down a corridor: its vanishing point is the image centre.
    assert np.allclose(fit["vanishing_point"], [480, 270], atol=6)
    assert abs(fit["back_wall"][3] - 365.5) < 8  # the back wall's foot, where the floor tiles end


def test_return_leg_frames_are_identical(image):
    _, walk, _ = _walk(image, "walk_and_return")
    n = len(walk)
    assert not np.array_equal(walk.frames[0], walk.frames[n // 2])  # it did move
    for i in range(n):
        assert np.array_equal(walk.frames[i], walk.frames[n - 1 - i]), i
        assert np.array_equal(walk.depth[i], walk.depth[n - 1 - i])


def test_reprojection_with_depth_and_poses_matches(image):
    _, walk, _ = _walk(image, "orbit")
    path = walk.path
    for i, j in [(0, 6), (5, 12), (20, 14)]:
        rays = pixel_rays(path.K[j], path.width, path.height)
        points = (rays * walk.depth[j][..., None]) @ path.c2w[j, :3, :3].T + path.c2w[j, :3, 3]
        uv, z = project(path.K[i], np.linalg.inv(path.c2w[i]), points)
        warped = cv2.remap(walk.frames[i], (uv[..., 0] - 0.5).astype(np.float32),
                           (uv[..., 1] - 0.5).astype(np.float32), cv2.INTER_LINEAR)
        seen_i = cv2.remap(walk.observed[i].astype(np.uint8), (uv[..., 0] - 0.5).astype(np.float32),
                           (uv[..., 1] - 0.5).astype(np.float32), cv2.INTER_NEAREST)
        inside = (uv[..., 0] > 1) & (uv[..., 0] < path.width - 1) & (uv[..., 1] > 1) & (uv[..., 1] < path.height - 1)
        both = inside & (z > 0) & walk.observed[j] & (seen_i > 0)
        assert both.mean() > 0.3
        assert psnr(warped[both], walk.frames[j][both]) >= 30.0, (i, j)


def test_reprojection_check_fails_with_a_wrong_pose(image):
    _, walk, _ = _walk(image, "strafe")
    path = walk.path
    wrong = path.c2w[0].copy()
    wrong[0, 3] += 0.15  # 15 cm off
    rays = pixel_rays(path.K[10], path.width, path.height)
    points = (rays * walk.depth[10][..., None]) @ path.c2w[10, :3, :3].T + path.c2w[10, :3, 3]
    uv, _ = project(path.K[0], np.linalg.inv(wrong), points)
    warped = cv2.remap(walk.frames[0], (uv[..., 0] - 0.5).astype(np.float32),
                       (uv[..., 1] - 0.5).astype(np.float32), cv2.INTER_LINEAR)
    assert psnr(warped[20:-20, 40:-40], walk.frames[10][20:-20, 40:-40]) < 30.0


def test_depth_is_exact_on_the_room_surfaces(image):
    generator, walk, _ = _walk(image, "look_around")
    room = generator._fit(image).room
    path = walk.path
    for i in (0, 7, 15):
        rays = pixel_rays(path.K[i], path.width, path.height).reshape(-1, 3)
        points = (rays * walk.depth[i].reshape(-1, 1)) @ path.c2w[i, :3, :3].T + path.c2w[i, :3, 3]
        assert np.abs(room.clearance(points)).max() < 1e-3  # every point lies on a face of the box


def test_first_frame_reproduces_the_concept_image(image):
    _, walk, _ = _walk(image, "walk_forward")
    K_in = intrinsics_from_fov(60.0, image.width, image.height)
    rays = pixel_rays(walk.path.K[0], walk.path.width, walk.path.height)
    uv, _ = project(K_in, np.eye(4), rays)
    expected = cv2.remap(cv2.GaussianBlur(image.pixels, (0, 0), 1.0), (uv[..., 0] - 0.5).astype(np.float32),
                         (uv[..., 1] - 0.5).astype(np.float32), cv2.INTER_AREA)
    seen = walk.observed[0]
    assert seen.mean() > 0.9
    assert psnr(cv2.GaussianBlur(walk.frames[0], (0, 0), 0.5)[seen], expected[seen]) > 28.0


def test_look_around_marks_synthesised_pixels(image):
    _, walk, _ = _walk(image, "look_around")
    assert walk.observed[0].mean() > 0.9
    assert walk.observed[len(walk) // 2].mean() < 0.1  # facing backwards: nothing of it was in the image


@pytest.mark.parametrize("name", sorted(available_presets()))
def test_no_camera_comes_closer_than_the_margin(image, name):
    preset = load_preset(name, overrides={"path": {"frames": 41}})
    generator = LayoutGenerator(preset, {})
    space = generator.survey(image)
    path, notes = camera_path(preset, space)
    centres = np.concatenate([path.centres, (path.centres[1:] + path.centres[:-1]) / 2])
    assert space.clearance(centres).min() >= preset.scene.margin_m - 1e-6
    assert notes["min_clearance_m"] >= preset.scene.margin_m - 1e-6
    assert np.allclose(path.c2w[0], np.eye(4))


def test_a_path_that_would_enter_a_wall_is_shortened(image):
    preset = load_preset("walk_forward", overrides={"path": {"distance_m": 40.0, "frames": 21}})
    generator = LayoutGenerator(preset, {})
    space = generator.survey(image)
    path, notes = camera_path(preset, space)
    assert notes["shortened"]["factor"] < 1.0
    assert space.depth - path.centres[-1, 2] == pytest.approx(preset.scene.margin_m, abs=0.02)


def test_sidecar_hints_are_used(image):
    hints = {"vanishing_point": [400, 300], "back_wall": [300, 200, 520, 380]}
    _, fit = fit_room(image.pixels, 60.0, 1.7, LayoutHints(**hints))
    assert fit["vanishing_point"] == [400, 300] and fit["vanishing_point_source"] == "sidecar"
    assert fit["back_wall"] == [300, 200, 520, 380] and fit["room_max_m"][1] == 1.7
    with pytest.raises(Exception, match="must contain the vanishing point"):
        fit_room(image.pixels, 60.0, 1.6, LayoutHints(vanishing_point=[100, 100], back_wall=[300, 200, 520, 380]))


def test_an_image_without_lines_falls_back_to_a_default_room():
    rng = np.random.default_rng(0)
    blurry = cv2.GaussianBlur(rng.integers(0, 255, (200, 300, 3), dtype=np.uint8), (0, 0), 8)
    room, fit = fit_room(blurry, 60.0, 1.6, LayoutHints())
    assert fit["vanishing_point_source"] == "default" and fit["vanishing_point"] == [150, 100]
    assert room.hi[2] > 2.0 and room.lo[0] < 0 < room.hi[0]


def test_generation_is_deterministic(image):
    a = _walk(image, "strafe")[1]
    b = _walk(image, "strafe")[1]
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.depth, b.depth)


def test_mirror_fill_reflects_the_pattern():
    stripes = np.zeros((10, 40, 3), np.uint8)
    stripes[:, ::4] = 255
    known = np.zeros((10, 40), bool)
    known[:, :20] = True
    filled = mirror_fill(stripes, known)
    assert np.array_equal(filled[:, :20], stripes[:, :20])
    assert np.array_equal(filled[:, 20:39], stripes[:, 18::-1])  # column 19 + k shows column 19 - k


# -- open scenes: ground, pop-ups, sky ---------------------------------------------------------------------

OPEN_SIZE = (320, 184)


def _open_image(scene, pitch_deg=0.0):
    """The scene's first view as a concept image, with its true depth (0 = sky) and the camera pose."""
    a = np.radians(pitch_deg)
    pose = np.eye(4)
    pose[:3, :3] = [[1, 0, 0], [0, np.cos(a), np.sin(a)], [0, -np.sin(a), np.cos(a)]]  # looks down by pitch
    K = intrinsics_from_fov(60.0, *OPEN_SIZE)
    truth = scene.render(CameraPath(pose[None], K, *OPEN_SIZE))
    return ConceptImage(truth.frames[0], f"open{pitch_deg}", f"sha-{id(scene)}-{pitch_deg}"), truth.depth[0], pose


@pytest.fixture(scope="module")
def plaza():
    return _open_image(OpenGroundScene())


def test_outdoor_horizon_ground_and_popups_match_the_truth(plaza):
    image, true_depth, _ = plaza
    generator = LayoutGenerator(load_preset("walk_forward", overrides={"camera": {"width": 320, "height": 184}}), {})
    layout = generator._fit(image)
    fit = layout.fit
    assert fit["case"] == "outdoor" and "sky" in fit["case_reason"]
    assert abs(fit["horizon_px"] - OPEN_SIZE[1] / 2) < 2.0 and abs(fit["pitch_deg"]) < 1.0
    assert fit["camera_height_m"] == 1.6
    # Both blocks stand where they touch the ground: their fronts are 7 m and 11 m away.
    assert any(abs(d - 7.0) < 1.0 for d in fit["popup_depth_m"]), fit["popup_depth_m"]
    assert any(abs(d - 11.0) < 1.5 for d in fit["popup_depth_m"]), fit["popup_depth_m"]
    _, depth, observed = layout.render(layout.scene.K_concept, np.eye(4), *OPEN_SIZE)
    sky, solid = true_depth == 0, true_depth > 0
    assert observed.mean() > 0.9
    # The sky has no depth (so fusion and the collider ignore it); everything else has close to true depth.
    assert np.mean(depth[sky] == 0) > 0.97
    both = solid & (depth > 0)
    assert both.sum() > 0.9 * solid.sum()
    assert np.median(np.abs(depth[both] - true_depth[both]) / true_depth[both]) < 0.05


def test_outdoor_revisits_are_identical_and_the_sky_stays_unknown(plaza, tmp_path):
    image = plaza[0]
    preset = load_preset("walk_and_return", overrides=SMALL)
    generator = LayoutGenerator(preset, {})
    path, _ = camera_path(preset, generator.survey(image))
    walk = generator.generate(image, path, silent, memory=None)
    n = len(walk)
    assert not np.array_equal(walk.frames[0], walk.frames[n // 2])
    for i in range(n):
        assert np.array_equal(walk.frames[i], walk.frames[n - 1 - i])
        assert np.array_equal(walk.depth[i], walk.depth[n - 1 - i])
    assert (walk.depth == 0).mean() > 0.2  # the sky, in every frame
    assert walk.labelled is not None and walk.labelled.ndim == 3
    assert walk.info["generator"]["layout"]["case"] == "outdoor"
    again = Walkthrough.load(walk.save(tmp_path / "walk"))  # the labelling travels with the folder
    assert np.array_equal(again.labelled, walk.labelled) and (tmp_path / "walk" / "labelled.png").exists()


def test_no_camera_walks_into_a_popup():
    blocking = OpenGroundScene(blocks=[(np.array([-1.0, -1.0, 6.0]), np.array([1.5, 1.6, 7.0]))])
    image = _open_image(blocking)[0]
    preset = load_preset("walk_forward",
                         overrides={"path": {"distance_m": 20.0, "frames": 21}, "camera": SMALL["camera"]})
    generator = LayoutGenerator(preset, {})
    space = generator.survey(image)
    path, notes = camera_path(preset, space)
    assert notes["shortened"]["factor"] < 1.0
    # It stops the margin short of the block's front (6 m), not at the horizon.
    assert 4.5 < path.centres[-1, 2] < 6.0 - preset.scene.margin_m + 0.15
    assert space.clearance(path.centres).min() >= preset.scene.margin_m - 1e-6


def test_an_aerial_view_is_recognised_and_its_height_can_be_given():
    aerial = OpenGroundScene(eye_height=20.0, tile_m=5.0,
                             blocks=[(np.array([-6.0, 10.0, 30.0]), np.array([4.0, 20.0, 40.0]))])
    image, true_depth, _ = _open_image(aerial, pitch_deg=30.0)
    preset = load_preset("walk_forward")
    fit = LayoutGenerator(preset, {})._fit(image).fit
    assert fit["case"] == "aerial" and abs(fit["pitch_deg"] - 30.0) < 1.5
    assert fit["camera_height_m"] == 30.0 and fit["camera_height_source"] == "aerial default"
    layout = LayoutGenerator(preset, {"camera_height_m": 20.0})._fit(image)
    assert layout.fit["camera_height_source"] == "sidecar"
    depth = layout.render(layout.scene.K_concept, np.eye(4), *OPEN_SIZE)[1]
    ground = (true_depth > 0) & (depth > 0)
    assert np.median(np.abs(depth[ground] - true_depth[ground]) / true_depth[ground]) < 0.05


def test_stray_lines_do_not_tilt_the_world():
    """A picture without real verticals (smooth procedural colour) keeps a level, unrolled camera."""
    image = _open_image(BoxScene())[0]
    fit = LayoutGenerator(load_preset("walk_forward"), {})._fit(image).fit
    assert fit["case"] == "outdoor" and abs(fit["roll_deg"]) < 2.0 and abs(fit["pitch_deg"]) < 5.0


def test_the_sidecar_forces_the_case(image, plaza):
    preset = load_preset("walk_forward")
    assert LayoutGenerator(preset, {"scene": "room"})._fit(plaza[0]).fit["case"] == "room"
    forced = LayoutGenerator(preset, {"scene": "outdoor", "horizon_px": 300.0})._fit(image).fit
    assert forced["case"] == "outdoor" and forced["horizon_px"] == 300.0 and forced["horizon_source"] == "sidecar"
    with pytest.raises(Exception, match="scene"):
        LayoutGenerator(preset, {"scene": "cave"})


def test_texture_continuation_keeps_what_was_seen_and_copies_no_mirror():
    stripes = np.zeros((48, 96, 3), np.uint8)
    stripes[:, ::4] = 255
    known = np.zeros((48, 96), bool)
    known[:, :48] = True
    smooth = np.full(stripes.shape, 64.0, np.float32)
    filled = continue_texture(stripes, known, smooth, patch=8)
    assert np.array_equal(filled[:, :48], stripes[:, :48])
    assert not np.array_equal(filled[:, 48:95], stripes[:, 47:0:-1])  # no reflection about the edge
    assert filled[:, 48:].std() > 10  # detail continued, not a flat fill
    assert np.array_equal(filled, continue_texture(stripes, known, smooth, patch=8))  # deterministic


def test_a_street_is_open_and_its_walls_run_on_beside_the_camera():
    """Two long walls along the view, 3 m either side, with a slice of sky between them: an open scene, not
    a room, and looking sideways shows the walls continued beyond the frame (not the dome)."""
    street = OpenGroundScene(blocks=[(np.array([-4.0, -8.0, -10.0]), np.array([-3.0, 1.6, 60.0])),
                                     (np.array([3.0, -8.0, -10.0]), np.array([4.0, 1.6, 60.0]))])
    image = _open_image(street)[0]
    layout = LayoutGenerator(load_preset("walk_forward", overrides={"camera": {"width": 320, "height": 184}}),
                             {})._fit(image)
    fit = layout.fit
    assert fit["case"] == "outdoor" and "street" in fit["case_reason"], fit["case_reason"]
    assert fit["walls_continued_beyond_frame"] == 2 and fit["street_vanishing_point"] is not None
    for yaw in (-90.0, 90.0):  # turned to either side: a wall 3 m away, synthesised (not observed)
        a = np.radians(yaw)
        pose = np.eye(4)
        pose[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
        _, depth, observed = layout.render(layout.scene.K_concept, pose, *OPEN_SIZE)
        centre = depth[60:120, 140:180]
        assert (centre > 0).all() and abs(np.median(centre) - 3.0) < 0.6, np.median(centre)
        assert not observed[60:120, 140:180].any()


def test_a_hedge_on_the_frames_bottom_stands_and_the_lawn_lies():
    """A dark green block whose front reaches the frame's bottom, on a lawn of the same hue: its straight
    vertical side beside the lawn makes it a standing face (generic viewpoint), not ground running to the
    horizon; the lawn stays ground."""
    w, h = 320, 184
    picture = np.zeros((h, w, 3), np.float32)
    picture[:] = (200, 220, 245)
    picture[h // 2:] = (110, 180, 90)
    picture[110:, :100] = (50, 110, 45)
    picture += np.random.default_rng(0).normal(0, 6, picture.shape)
    picture = np.clip(picture, 0, 255).astype(np.uint8)
    K = intrinsics_from_fov(60.0, w, h)
    reading = open_scene.read_picture(picture, K, detect_segments(picture), None, None, None, None)
    labels = cv2.resize(reading.labels, (w, h), interpolation=cv2.INTER_NEAREST)
    assert np.mean(labels[115:, :95] == open_scene.VERTICAL) > 0.9
    assert np.mean(labels[120:, 110:] == open_scene.GROUND) > 0.9


def test_the_horizon_goes_through_the_ground_lines_vanishing_point():
    K = intrinsics_from_fov(60.0, 320, 184)
    tilted = open_scene.down_from_horizon(100.0, K)  # verticals a little off: horizon at row 100
    down = open_scene.through(tilted, np.array([150.0, 94.0]), K)
    assert abs(open_scene.horizon_row(down, K, 150.0) - 94.0) < 0.01
    assert open_scene.through(tilted, np.array([150.0, 20.0]), K) is None  # too far apart: no compromise


def test_ground_beyond_a_shadow_is_still_ground():
    """A dark shadow band across the lawn cuts the far lawn off from the frame's bottom; the far lawn is the
    same material as the near one, so it is ground too, not something standing."""
    w, h = 320, 184
    picture = np.zeros((h, w, 3), np.float32)
    picture[:] = (200, 220, 245)
    picture[h // 2:] = (110, 180, 90)
    picture[120:130] = (40, 70, 35)  # the shadow of something out of the picture, across the whole lawn
    picture += np.random.default_rng(0).normal(0, 4, picture.shape)
    picture = np.clip(picture, 0, 255).astype(np.uint8)
    K = intrinsics_from_fov(60.0, w, h)
    reading = open_scene.read_picture(picture, K, detect_segments(picture), None, None, None, None)
    labels = cv2.resize(reading.labels, (w, h), interpolation=cv2.INTER_NEAREST)
    assert np.mean(labels[98:115] == open_scene.GROUND) > 0.9


def test_walled_in_the_dome_behind_shows_walls_not_the_slice_of_sky():
    """Brown walls fill the picture above the horizon but for a slice of sky in the middle: walled in (a
    street whose walls run on beyond the frame), the dome behind the camera at those elevations is brown;
    in the open it keeps the sky's colour."""
    w, h = 320, 184
    K = intrinsics_from_fov(60.0, w, h)
    pixels = np.zeros((h, w, 3), np.uint8)
    pixels[:] = (90, 90, 90)  # ground
    owner = np.full((h, w), open_scene.GROUND_OWNER, np.int32)
    pixels[: h // 2, :120], owner[: h // 2, :120] = (150, 80, 50), 0
    pixels[: h // 2, 200:], owner[: h // 2, 200:] = (150, 80, 50), 1
    pixels[: h // 2, 120:200], owner[: h // 2, 120:200] = (120, 170, 240), open_scene.FAR_OWNER
    down = open_scene.down_from_horizon(h / 2, K)
    right, forward = open_scene.ground_frame(down)
    rows, cols = open_scene.DOME_SIZE
    behind = (slice(rows // 2 - 20, rows // 2 - 5), slice(0, 10))  # 5-20 degrees up, straight back
    for walled_in, colour in ((True, (150, 80, 50)), (False, (120, 170, 240))):
        dome = open_scene.dome_texture(pixels, K, owner, down, right, forward, np.full(3, 90.0), walled_in)
        mean = dome[behind].reshape(-1, 3).mean(axis=0)
        assert np.abs(mean - colour).max() < 12, (walled_in, mean)


def test_a_streets_vanishing_point_is_where_its_ground_lines_cross_the_horizon():
    """Kerbs below the horizon recede to (150, 90); two shadow edges on a far facade meet elsewhere and a
    noisy overall meeting point lies off the horizon: the street's point is the kerbs' crossing."""
    K = intrinsics_from_fov(60.0, 320, 184)
    down = open_scene.down_from_horizon(90.0, K)
    kerbs = [(0.0, 160.0), (20.0, 184.0), (300.0, 170.0), (320.0, 140.0)]
    ground = [(x, y, x + 0.3 * (150 - x), y + 0.3 * (90 - y)) for x, y in kerbs]
    shadows = [(120.0, 60.0, 128.0, 40.0), (130.0, 70.0, 140.0, 50.0)]
    found = open_scene.street_vanishing_point(np.array(ground + shadows), down, K, np.array([120.0, 100.0]))
    assert np.allclose(found, [150.0, 90.0], atol=0.5), found
    too_few = open_scene.street_vanishing_point(np.array(ground[:2] + shadows), down, K, np.array([120.0, 100.0]))
    assert np.allclose(too_few, [120.0, 90.0], atol=0.5), too_few
