"""Episode store behaviour: appends, streaming, recovery from crash leftovers, reference layout."""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import imagecodecs.numcodecs
import numpy as np
import pytest
import zarr

from collection.episode_store import EpisodeInfo, EpisodeStore, EpisodeStoreError

pytestmark = pytest.mark.timeout(60)

H, W = 48, 64


def frames(rng: np.random.Generator, n: int, h: int = H, w: int = W) -> np.ndarray:
    """Rendered-looking frames (gradient + moving square + noise), so lossy codecs behave as on a rig."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        img = np.stack([x / w * 200, y / h * 180, (x + y) / (w + h) * 150 + i], -1)
        c = (i * 3) % (w - 10)
        img[10:20, c : c + 10] = (220, 40, 40)
        out[i] = np.clip(img + rng.normal(0, 3, img.shape), 0, 255)
    return out


def make_episode(i: int, length: int | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(i)
    t = 10 + (i * 7) % 11 if length is None else length
    return {
        "camera_0": frames(rng, t),
        "camera_1": frames(rng, t, 24, 32),
        "robot_eef_pose": rng.normal(size=(t, 6)),
        "robot_joint": rng.normal(size=(t, 6)),
        "action": rng.normal(size=(t, 6)).astype(np.float32),
        "timestamp": 100.0 * i + 0.1 * np.arange(t),
    }


def stream(store: EpisodeStore, episode: dict[str, np.ndarray], wait: bool = True):
    ep = store.begin_episode()
    n = len(episode["timestamp"])
    for t in range(n):
        ep.append({k: v[t] for k, v in episode.items()})
    return ep.commit(wait=wait)


def assert_episode_equal(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert set(got) == set(want)
    for k in want:
        assert got[k].shape == want[k].shape, k
        np.testing.assert_array_equal(got[k], np.asarray(want[k], dtype=got[k].dtype), err_msg=k)


def test_streaming_and_whole_episode_appends_give_identical_data(tmp_path: Path) -> None:
    eps = [make_episode(i) for i in range(3)]
    with EpisodeStore.open(tmp_path / "whole.zarr", "w") as whole:  # default (lossy) image codec
        infos_whole = [whole.add_episode(e) for e in eps]
    with EpisodeStore.open(tmp_path / "stream.zarr", "w", batch_steps=4) as streamed:
        infos_stream = [stream(streamed, e) for e in eps]
    assert infos_whole == infos_stream
    a = EpisodeStore.open(tmp_path / "whole.zarr", "r")
    b = EpisodeStore.open(tmp_path / "stream.zarr", "r")
    assert a.n_episodes == b.n_episodes == 3
    np.testing.assert_array_equal(a.episode_ends, np.cumsum([len(e["timestamp"]) for e in eps]))
    for i, e in enumerate(eps):
        ga, gb = a.get_episode(i), b.get_episode(i)
        assert_episode_equal(gb, ga)
        # low-dim data is exact; the lossy image codec stays close to the source
        np.testing.assert_array_equal(ga["robot_eef_pose"], e["robot_eef_pose"])
        assert np.abs(ga["camera_0"].astype(int) - e["camera_0"]).mean() < 6
    # each camera frame is its own chunk, compressed far below raw size
    cam = zarr.open_group(tmp_path / "whole.zarr", mode="r")["data/camera_0"]
    assert cam.chunks == (1, H, W, 3)
    assert cam.nbytes_stored() < 0.3 * cam.nbytes


def test_store_reopens_with_same_episodes_and_appends_after_them(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    with EpisodeStore.open(path, "a", image_codec="blosc") as store:  # "a" creates
        assert store.n_episodes == 0 and store.keys == []
        store.add_episode(make_episode(0))
    with EpisodeStore.open(path, "a") as store:
        assert store.n_episodes == 1
        assert set(store.keys) == set(make_episode(0))
        info = stream(store, make_episode(1))
        assert info == EpisodeInfo(1, 10 + 0, 10 + 17, 17, pytest.approx(1.6))
    store = EpisodeStore.open(path, "r")
    for i in range(2):
        assert_episode_equal(store.get_episode(i), make_episode(i))
    assert [e.length for e in store.episodes()] == [10, 17]
    assert [e.duration_s for e in store.episodes()] == pytest.approx([0.9, 1.6])
    assert [len(e["timestamp"]) for e in store.iter_episodes(keys=["timestamp"])] == [10, 17]
    with pytest.raises(EpisodeStoreError, match="read only"):
        store.add_episode(make_episode(2))


def test_begin_episode_while_previous_commit_is_still_being_written(tmp_path: Path) -> None:
    eps = [make_episode(i) for i in range(4)]
    with EpisodeStore.open(tmp_path / "s.zarr", "w", image_codec="blosc", batch_steps=3) as store:
        futures = [stream(store, e, wait=False) for e in eps]  # next begin right after each commit
        infos = [f.result(timeout=30) for f in futures]
        assert [i.index for i in infos] == [0, 1, 2, 3]
        assert store.n_episodes == 4
        for i, e in enumerate(eps):
            assert_episode_equal(store.get_episode(i), e)


def test_discarded_episode_leaves_no_trace(tmp_path: Path) -> None:
    with EpisodeStore.open(tmp_path / "s.zarr", "w", image_codec="blosc", batch_steps=4) as store:
        store.add_episode(make_episode(0))
        ep = store.begin_episode()
        junk = make_episode(9)
        for t in range(9):
            ep.append({k: v[t] for k, v in junk.items()})
        ep.flush()  # junk is in the data arrays now
        ep.discard()
        with pytest.raises(EpisodeStoreError, match="already committed or discarded"):
            ep.append({k: v[0] for k, v in junk.items()})
        stream(store, make_episode(1))
    store = EpisodeStore.open(tmp_path / "s.zarr", "r")
    assert store.n_episodes == 2 and store.dropped_steps == 0
    assert_episode_equal(store.get_episode(1), make_episode(1))


def test_delete_last_removes_episode_and_its_data(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    with EpisodeStore.open(path, "w", image_codec="blosc") as store:
        for i in range(3):
            store.add_episode(make_episode(i))
        deleted = store.delete_last()
        assert (deleted.index, deleted.length) == (2, len(make_episode(2)["timestamp"]))
        assert store.n_episodes == 2
        store.add_episode(make_episode(5))
    store = EpisodeStore.open(path, "r")
    assert store.n_episodes == 3 and store.dropped_steps == 0
    assert_episode_equal(store.get_episode(2), make_episode(5))
    raw = zarr.open_group(path, mode="r")
    assert raw["data/camera_0"].shape[0] == store.n_steps == raw["meta/episode_ends"][-1]


def test_episode_attributes_are_committed_with_their_episode_and_deleted_with_it(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    with EpisodeStore.open(path, "w", image_codec="blosc") as store:
        stream(store, make_episode(0))  # no attributes
        ep = store.begin_episode()
        for step in range(4):
            ep.append({k: v[step] for k, v in make_episode(1).items()})
        ep.commit(wait=False, attrs={"latency_watch": {"action_dead_time": {"median_ms": 31.5}}})
        stream(store, make_episode(2))
    store = EpisodeStore.open(path, "r")
    assert store.episode_attrs(0) == {} and store.episode_attrs(2) == {}
    assert store.episode_attrs(1)["latency_watch"]["action_dead_time"]["median_ms"] == 31.5
    with EpisodeStore.open(path, "a") as store:
        store.delete_last()
        store.delete_last()
        assert store.episode_attrs(1) == {}  # a later episode 1 does not inherit them
        stream(store, make_episode(3))
        assert store.episode_attrs(1) == {}


def test_delete_last_of_empty_store_says_so(tmp_path: Path) -> None:
    with EpisodeStore.open(tmp_path / "s.zarr", "w") as store:
        with pytest.raises(EpisodeStoreError, match="no episode to delete"):
            store.delete_last()


def test_open_for_append_truncates_crash_leftovers_and_warns(tmp_path: Path, caplog) -> None:
    path = tmp_path / "s.zarr"
    with EpisodeStore.open(path, "w", image_codec="blosc") as store:
        store.add_episode(make_episode(0))
        store.add_episode(make_episode(1))
        n_steps = store.n_steps
    # What a crash leaves: data of an unfinished episode past the last end, and an episode_ends
    # entry resized in but never written (fill value 0).
    raw = zarr.open_group(path, mode="r+")
    for arr in raw["data"].array_values():
        arr.resize((n_steps + 7, *arr.shape[1:]))
        arr[n_steps:] = 1
    raw["meta/episode_ends"].resize((3,))

    ro = EpisodeStore.open(path, "r")  # read only: ignores, does not repair
    assert (ro.n_episodes, ro.n_steps, ro.dropped_steps) == (2, n_steps, 7)
    assert zarr.open_group(path, mode="r")["data/action"].shape[0] == n_steps + 7

    with caplog.at_level(logging.WARNING, logger="collection.episode_store"):
        store = EpisodeStore.open(path, "a")
    assert "dropped 7 trailing steps" in caplog.text and "1 invalid episode_ends" in caplog.text
    assert (store.n_episodes, store.n_steps, store.dropped_steps) == (2, n_steps, 7)
    raw = zarr.open_group(path, mode="r")
    assert all(a.shape[0] == n_steps for a in raw["data"].array_values())
    assert raw["meta/episode_ends"].shape == (2,)
    store.add_episode(make_episode(2))
    store.close()
    store = EpisodeStore.open(path, "r")
    for i in range(3):
        assert_episode_equal(store.get_episode(i), make_episode(i))


def test_wrong_keys_shapes_and_dtypes_are_rejected_with_the_key_named(tmp_path: Path) -> None:
    with EpisodeStore.open(tmp_path / "s.zarr", "w", image_codec="raw") as store:
        store.add_episode(make_episode(0))
        ep = store.begin_episode()
        step = {k: v[0] for k, v in make_episode(1).items()}
        with pytest.raises(ValueError, match=r"missing \['robot_joint'\]"):
            ep.append({k: v for k, v in step.items() if k != "robot_joint"})
        with pytest.raises(ValueError, match="'camera_0'.*shape"):
            ep.append({**step, "camera_0": step["camera_0"][:10]})
        with pytest.raises(ValueError, match="'robot_joint'.*dtype complex128"):
            ep.append({**step, "robot_joint": step["robot_joint"].astype(complex)})
        with pytest.raises(EpisodeStoreError, match="already open"):
            store.begin_episode()
        with pytest.raises(ValueError, match="no steps"):
            ep.commit()
        ep.append(step)
        assert ep.commit().length == 1
        with pytest.raises(ValueError, match="share their first"):
            store.add_episode({**make_episode(2), "action": np.zeros((3, 6))})
        assert store.n_episodes == 2
    with pytest.raises(ValueError, match="unknown image codec 'jpg'"):
        EpisodeStore.open(tmp_path / "t.zarr", "w", image_codec="jpg")


def test_any_key_set_is_declared_by_the_first_episode(tmp_path: Path) -> None:
    ep0 = {"camera_3": frames(np.random.default_rng(0), 5), "gripper_width": np.arange(5.0)}
    with EpisodeStore.open(tmp_path / "s.zarr", "w", image_codec="jpegxl_lossless") as store:
        stream(store, {**ep0, "timestamp": np.arange(5.0)})
        assert sorted(store.keys) == ["camera_3", "gripper_width", "timestamp"]
    got = EpisodeStore.open(tmp_path / "s.zarr", "r").get_episode(0)
    np.testing.assert_array_equal(got["camera_3"], ep0["camera_3"])  # lossless codec: exact


def _reference_episodes() -> list[dict[str, np.ndarray]]:
    return [make_episode(i) for i in range(3)]


def _write_reference(path: Path, zarr_format: int, image_compressor=None) -> np.ndarray:
    """A store written with plain zarr, the way the Diffusion Policy ReplayBuffer lays it out."""
    eps = _reference_episodes()
    root = zarr.open_group(path, mode="w", zarr_format=zarr_format)
    data, meta = root.create_group("data"), root.create_group("meta")
    for key in eps[0]:
        full = np.concatenate([e[key] for e in eps])
        kwargs = {}
        if key.startswith("camera"):
            kwargs["chunks"] = (1, *full.shape[1:])
            if image_compressor is not None:
                kwargs["compressors"] = image_compressor
        arr = data.create_array(key, shape=full.shape, dtype=full.dtype, **kwargs)
        arr[:] = full
    ends = np.cumsum([len(e["timestamp"]) for e in eps]).astype(np.int64)
    meta.create_array("episode_ends", shape=ends.shape, dtype=np.int64)[:] = ends
    return ends


@pytest.mark.parametrize("fmt", ["zarr3_defaults", "zarr2_jpeg2k", "zarr2_zip"])
def test_reference_layout_store_opens_iterates_and_appends(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "replay_buffer.zarr"
    if fmt == "zarr3_defaults":
        ends = _write_reference(path, 3)
    else:
        ends = _write_reference(path, 2, imagecodecs.numcodecs.Jpeg2k(level=50))
    if fmt == "zarr2_zip":
        zpath = tmp_path / "replay_buffer.zarr.zip"
        with zipfile.ZipFile(zpath, "w", zipfile.ZIP_STORED) as zf:
            for f in sorted(path.rglob("*")):
                if f.is_file():
                    zf.write(f, f.relative_to(path).as_posix())
        path = zpath
    store = EpisodeStore.open(path, "r")
    assert store.n_episodes == 3 and store.n_steps == ends[-1]
    assert [e.end for e in store.episodes()] == list(ends)
    assert [e.duration_s for e in store.episodes()] == pytest.approx(
        [0.1 * (n - 1) for n in np.diff(ends, prepend=0)]
    )
    for got, want in zip(store.iter_episodes(), _reference_episodes(), strict=True):
        if fmt == "zarr3_defaults":
            assert_episode_equal(got, want)
        else:  # JPEG 2000 level 50 is lossy
            np.testing.assert_array_equal(got["action"], want["action"])
            assert np.abs(got["camera_0"].astype(int) - want["camera_0"]).mean() < 6
    if fmt == "zarr2_zip":
        with pytest.raises(EpisodeStoreError, match="read only"):
            EpisodeStore.open(path, "a")
        return
    with EpisodeStore.open(path, "a") as store:  # appends with the store's own codecs
        store.add_episode(make_episode(7))
    store = EpisodeStore.open(path, "r")
    assert store.n_episodes == 4
    np.testing.assert_array_equal(store.get_episode(3)["robot_joint"], make_episode(7)["robot_joint"])


def test_not_an_episode_store_is_reported_with_the_path(tmp_path: Path) -> None:
    zarr.open_group(tmp_path / "other.zarr", mode="w").create_group("something")
    with pytest.raises(EpisodeStoreError, match="other.zarr is not an episode store"):
        EpisodeStore.open(tmp_path / "other.zarr", "r")
    with pytest.raises(FileNotFoundError):
        EpisodeStore.open(tmp_path / "missing.zarr", "r")


def test_close_with_open_episode_discards_it(tmp_path: Path, caplog) -> None:
    store = EpisodeStore.open(tmp_path / "s.zarr", "w", image_codec="raw")
    store.add_episode(make_episode(0))
    ep = store.begin_episode()
    for t in range(5):
        ep.append({k: v[t] for k, v in make_episode(1).items()})
    with caplog.at_level(logging.WARNING, logger="collection.episode_store"):
        store.close()
    assert "open episode of 5 steps" in caplog.text
    reopened = EpisodeStore.open(tmp_path / "s.zarr", "r")
    assert (reopened.n_episodes, reopened.dropped_steps) == (1, 0)


def test_writer_failure_is_reported_and_earlier_episodes_survive(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "s.zarr"
    store = EpisodeStore.open(path, "w", image_codec="raw", batch_steps=4)
    store.add_episode(make_episode(0))

    def disk_full(self, job):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(EpisodeStore, "_do_batch", disk_full)
    ep = store.begin_episode()
    episode = make_episode(1)
    # append raises once the writer has failed (it may fail before the 8th step), else commit does
    with pytest.raises(EpisodeStoreError, match="No space left on device"):
        for t in range(8):
            ep.append({k: v[t] for k, v in episode.items()})
        ep.commit()
    with pytest.raises(EpisodeStoreError, match="Check free disk space"):
        store.begin_episode()
    store.close()
    monkeypatch.undo()
    reopened = EpisodeStore.open(path, "a")
    assert reopened.n_episodes == 1
    assert_episode_equal(reopened.get_episode(0), make_episode(0))


def test_crash_during_first_episode_leaves_an_empty_store_that_takes_new_keys(tmp_path: Path, caplog) -> None:
    path = tmp_path / "s.zarr"
    with EpisodeStore.open(path, "w", image_codec="raw", batch_steps=2) as store:
        ep = store.begin_episode()
        for t in range(5):
            ep.append({"camera_0": np.zeros((8, 8, 3), np.uint8), "x": np.float32(t)})
        ep.flush()
        # what a crash leaves: the data of an uncommitted first episode (no close, no discard)
        store._open_episode = None
    assert EpisodeStore.open(path, "r").dropped_steps == 5
    with caplog.at_level(logging.WARNING, logger="collection.episode_store"):
        store = EpisodeStore.open(path, "a")
    assert "dropped 5 trailing steps" in caplog.text
    assert store.keys == [] and store.n_episodes == 0
    with store:
        store.add_episode(make_episode(0))
    assert set(EpisodeStore.open(path, "r").keys) == set(make_episode(0))


def test_mode_w_refuses_to_wipe_a_directory_that_is_not_a_store(tmp_path: Path) -> None:
    precious = tmp_path / "calibration"
    precious.mkdir()
    (precious / "intrinsics.yaml").write_text("fx: 600\n")
    with pytest.raises(EpisodeStoreError, match="refusing to overwrite"):
        EpisodeStore.open(precious, "w")
    assert (precious / "intrinsics.yaml").read_text() == "fx: 600\n"
    EpisodeStore.open(tmp_path / "s.zarr", "w").close()
    EpisodeStore.open(tmp_path / "s.zarr", "w").close()  # an existing store may be overwritten


def test_importing_the_store_after_the_user_registered_the_codecs_prints_nothing() -> None:
    import subprocess
    import sys

    code = (
        "import imagecodecs.numcodecs; imagecodecs.numcodecs.register_codecs()\n"
        "import collection.episode_store, policy.dataset, collection.store_check\n"
        "collection.episode_store.register_image_codecs()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout + done.stderr == ""


def _zarr_meta(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): p.read_text() for p in sorted(path.rglob(".z*"))}


def test_delete_last_changes_only_the_shape_of_a_reference_store_s_metadata(tmp_path: Path) -> None:
    import json

    path = tmp_path / "ref.zarr"
    with EpisodeStore.open(path, "w", image_codec="jpeg2k", checksums=False) as store:  # as the reference's
        for i in range(2):
            store.add_episode(
                {"camera_0": np.full((3, 8, 8, 3), 50 + 150 * i, np.uint8), "action": np.ones((3, 2)) * i}
            )
    # As the reference writes it: its own key order, extra attributes, its compressor config.
    zarray = path / "data" / "camera_0" / ".zarray"
    ref = json.loads(zarray.read_text())
    ref["compressor"] = {"id": "imagecodecs_jpeg2k", "level": 50, "reversible": None}
    zarray.write_text(json.dumps(dict(sorted(ref.items())), indent=4, sort_keys=True))
    (path / "data" / "camera_0" / ".zattrs").write_text('{"foreign": [1, 2]}')
    before = _zarr_meta(path)
    with EpisodeStore.open(path, "a"):
        pass  # nothing to repair: nothing is written
    assert _zarr_meta(path) == before
    with EpisodeStore.open(path, "a") as store:
        store.delete_last()
    after = _zarr_meta(path)
    assert after.keys() == before.keys()
    for name, text in before.items():
        old, new = json.loads(text), json.loads(after[name])
        if name.endswith(".zarray") and old["shape"] != new["shape"]:
            old["shape"][0] = new["shape"][0]
        assert new == old, name  # every other key as it was
        assert list(new) == list(old), name  # in its order
    assert json.loads(after["data/camera_0/.zarray"])["shape"][0] == 3
    with EpisodeStore.open(path, "r") as store:
        assert store.n_episodes == 1
        assert np.abs(store.get_episode(0)["camera_0"].astype(int) - 50).max() <= 3  # lossy codec


def test_new_image_arrays_record_only_the_codec_parameters_the_project_sets(tmp_path: Path) -> None:
    import json

    path = tmp_path / "new.zarr"
    with EpisodeStore.open(path, "w", image_codec="jpeg2k") as store:
        store.add_episode({"camera_0": np.full((2, 8, 8, 3), 7, np.uint8)})
    meta = json.loads((path / "data" / "camera_0" / ".zarray").read_text())
    # The image codec as the filter, numcodecs' CRC32 (as old numcodecs writes it) as the compressor.
    assert meta["filters"] == [{"id": "imagecodecs_jpeg2k", "level": 50}]
    assert meta["compressor"] == {"id": "crc32"}
