"""The daemon on Ray: a real local cluster started here, on loopback, dashboard off, with a fake GPU so the
GPU actor's scheduling path runs on a machine without one."""
from __future__ import annotations

import json
import os
import signal

import pytest
from test_daemon import (
    Daemon,
    concept_image,
    make_root,
    run_drop,
    running_status,
    settled,
    stalls,
    status_json,
    wait_until,
)

# Ray binds to the host's address unless told, before it is imported, that it will not form a cluster with
# other machines; the daemons started here inherit the setting and talk to the cluster over loopback too.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
try:
    import ray
except ImportError:  # Ray is the optional extra `ray`; CI installs it
    if os.environ.get("CI"):
        raise
    pytest.skip("Ray is not installed: pip install -e '.[ray]'", allow_module_level=True)


@pytest.fixture(scope="module")
def cluster():
    """A one-node Ray cluster with 2 CPUs and 1 (fake) GPU, listening on 127.0.0.1 only."""
    context = ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    address = context.address_info["gcs_address"]
    assert address.startswith("127.0.0.1:")
    yield address
    ray.shutdown()


def test_two_hundred_files_dropped_at_once_on_ray(tmp_path, cluster):
    events = run_drop(tmp_path, "--ray", cluster)
    submitted = [e["job"] for e in events if e["event"] == "submitted" and e["route"] == "cpu task"]
    assert sorted(submitted) == sorted(e["job"] for e in events if e["event"] == "running")  # all through Ray


def test_gpu_generators_run_in_the_gpu_actor(tmp_path, cluster):
    root = make_root(tmp_path)
    with Daemon(root, tmp_path / "logs", "--ray", cluster, "--gpu-generator", "layout") as daemon:
        for i in range(3):
            (root / "inbox" / f"gpu {i}.png").write_bytes(concept_image(600 + i))
        wait_until(lambda: settled(root, 3), "the GPU jobs", daemon)
        routes = [e["route"] for e in daemon.events("submitted")]
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
    assert routes == ["gpu actor + cpu task"] * 3
    assert [j["state"] for j in status_json(root)["jobs"]] == ["done"] * 3
    for i in range(3):  # the walkthrough half ran in the actor, the asset half in a task
        assert (root / "out" / f"gpu_{i}" / f"gpu_{i}.glb").exists()
    wait_until(lambda: ray.available_resources().get("GPU") == 1, "the actor to give its GPU back")


def test_a_lost_ray_worker_is_retried_without_charging_an_attempt(tmp_path, cluster):
    root = make_root(tmp_path)
    with Daemon(root, tmp_path / "logs", "--ray", cluster) as daemon:
        (root / "inbox" / "long.toml").write_text("[camera]\nwidth = 416\nheight = 240\n[path]\nframes = 61\n")
        (root / "inbox" / "long.png").write_bytes(concept_image(7))
        killed = wait_until(lambda: running_status(root, "long"), "the job to be running", daemon)["worker"]["pid"]
        os.kill(killed, signal.SIGKILL)  # the Ray worker process dies mid-run
        wait_until(lambda: (s := running_status(root, "long")) and s["worker"]["pid"] != killed,
                   "Ray to run the job again in another worker", daemon)
        wait_until(lambda: settled(root, 1), "the retried job", daemon)
        assert not daemon.events("requeued")  # Ray retried it; the daemon saw nothing go wrong
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
    [job] = status_json(root)["jobs"]
    assert job["state"] == "done" and job["attempts"] == stalls(daemon).total()
    assert json.loads((root / "out" / "long" / "status.json").read_text())["state"] == "done"
