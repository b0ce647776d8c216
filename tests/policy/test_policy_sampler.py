"""Episode windows, boundary padding, downsampling and the split, against hand-computed indices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from policy.config import DatasetConfig, PolicyConfig
from policy.dataset import EpisodeDataset, create_indices, episode_step_indices, split_episodes
from policy.normalizer import LinearNormalizer

# Two episodes of 5 and 3 steps; sequence 4, pad_before 1, pad_after 2 (n_obs 2, n_action 3).
ENDS = np.array([5, 8])
EXPECTED_WINDOWS = [
    [0, 0, 1, 2],
    [0, 1, 2, 3],
    [1, 2, 3, 4],
    [2, 3, 4, 4],
    [3, 4, 4, 4],
    [5, 5, 6, 7],
    [5, 6, 7, 7],
    [6, 7, 7, 7],
]


def _write_index_store(path: Path, ends: np.ndarray, zarr_format: int = 3, compressor=None) -> Path:
    """Every value encodes its global step index: action[:, 0] = i, eef[:, 0] = 1000 + i, frame = i."""
    t = int(ends[-1])
    root = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    data, meta = root.create_group("data"), root.create_group("meta")
    frames = np.broadcast_to(np.arange(t, dtype=np.uint8)[:, None, None, None], (t, 8, 10, 3)).copy()
    kw = {"compressors": compressor} if compressor is not None else {}
    data.create_array("camera_0", shape=frames.shape, chunks=(1, 8, 10, 3), dtype="uint8", **kw)[:] = frames
    idx = np.arange(t, dtype=np.float64)
    eef = np.stack([1000 + idx, 2000 + idx, np.full(t, 0.3), idx * 0, idx * 0, idx * 0], axis=1)
    act = np.stack([idx, -idx, np.full(t, 0.3), idx * 0, idx * 0, idx * 0], axis=1)
    data.create_array("robot_eef_pose", shape=eef.shape, dtype="float64")[:] = eef
    data.create_array("action", shape=act.shape, dtype="float64")[:] = act
    data.create_array("timestamp", shape=(t,), dtype="float64")[:] = 50.0 + 0.1 * idx
    meta.create_array("episode_ends", shape=ends.shape, dtype="int64")[:] = ends
    return path


def _windows(rows: np.ndarray, seq_len: int) -> list[list[int]]:
    out = []
    for b0, b1, s0, s1 in rows:
        w = np.empty(seq_len, dtype=int)
        w[s0:s1] = np.arange(b0, b1)
        w[:s0] = b0
        w[s1:] = b1 - 1
        out.append(w.tolist())
    return out


def test_create_indices_pads_by_repeating_first_and_last_step():
    rows = create_indices(ENDS, sequence_length=4, pad_before=1, pad_after=2)
    assert _windows(rows, 4) == EXPECTED_WINDOWS


def test_create_indices_skips_masked_episodes():
    rows = create_indices(
        ENDS, sequence_length=4, pad_before=1, pad_after=2, episode_mask=np.array([False, True])
    )
    assert _windows(rows, 4) == EXPECTED_WINDOWS[5:]


def _cfgs(**dataset_kw) -> tuple[PolicyConfig, DatasetConfig]:
    pc = PolicyConfig.model_validate(
        {
            "obs": {"camera_0": {"type": "rgb"}, "robot_eef_pose": {"type": "low_dim", "dims": [0, 2]}},
            "action_dims": [0, 1],
            "horizon": 4,
            "n_obs_steps": 2,
            "n_action_steps": 3,
            "model": {"unet": {"down_dims": [8, 16]}},
        }
    )
    dc = DatasetConfig.model_validate({"val_ratio": 0.0, **dataset_kw})
    return pc, dc


def test_dataset_samples_match_hand_computed_windows(tmp_path):
    store = _write_index_store(tmp_path / "s.zarr", ENDS)
    pc, dc = _cfgs()
    ds = EpisodeDataset(store, pc, dc, "train")
    assert ds.shape_meta == {
        "obs": {
            "camera_0": {"type": "rgb", "shape": [3, 8, 10]},
            "robot_eef_pose": {"type": "low_dim", "shape": [2], "dims": [0, 2]},
        },
        "action": {"shape": [2], "dims": [0, 1], "key": "action", "stored_dim": 6},  # 6 stored columns
    }
    assert len(ds) == len(EXPECTED_WINDOWS)
    assert ds.dt_s == pytest.approx(0.1)
    for i, window in enumerate(EXPECTED_WINDOWS):
        s = ds[i]
        assert s["action"].shape == (4, 2)
        np.testing.assert_array_equal(s["action"][:, 0], window)
        np.testing.assert_array_equal(s["action"][:, 1], -np.asarray(window))
        # observations: the first n_obs_steps of the window only
        np.testing.assert_array_equal(s["obs"]["robot_eef_pose"][:, 0], 1000 + np.asarray(window[:2]))
        np.testing.assert_array_equal(s["obs"]["robot_eef_pose"][:, 1], np.float32([0.3, 0.3]))
        assert s["obs"]["camera_0"].shape == (2, 8, 10, 3) and s["obs"]["camera_0"].dtype == np.uint8
        np.testing.assert_array_equal(s["obs"]["camera_0"][:, 0, 0, 0], window[:2])


def test_downsampling_keeps_every_kth_step_per_episode(tmp_path):
    kept, ends = episode_step_indices(ENDS, 2)
    assert kept.tolist() == [0, 2, 4, 5, 7]
    assert ends.tolist() == [3, 5]
    store = _write_index_store(tmp_path / "s.zarr", ENDS)
    pc, dc = _cfgs(downsample=2)
    ds = EpisodeDataset(store, pc, dc, "train")
    # virtual episodes [0, 2, 4] and [5, 7]; windows of 4 with pad 1 before / 2 after
    expected = [[0, 0, 2, 4], [0, 2, 4, 4], [2, 4, 4, 4], [5, 5, 7, 7], [5, 7, 7, 7]]
    assert [ds[i]["action"][:, 0].astype(int).tolist() for i in range(len(ds))] == expected
    assert ds.dt_s == pytest.approx(0.2)


def test_split_is_by_episode_seeded_and_disjoint(tmp_path):
    ends = np.cumsum(np.full(10, 6))
    store = _write_index_store(tmp_path / "s.zarr", ends)
    pc, _ = _cfgs()
    dc = DatasetConfig(val_ratio=0.3, seed=7)
    train, val = EpisodeDataset(store, pc, dc, "train"), EpisodeDataset(store, pc, dc, "val")
    assert val.episode_mask.sum() == 3 and train.episode_mask.sum() == 7
    assert not (train.episode_mask & val.episode_mask).any()
    np.testing.assert_array_equal(split_episodes(10, 0.3, 7), val.episode_mask)
    np.testing.assert_array_equal(split_episodes(10, 0.3, 7), split_episodes(10, 0.3, 7))
    episode_of = np.searchsorted(ends, np.arange(ends[-1]), side="right")
    train_eps = {int(episode_of[int(ds_row[0])]) for ds_row in train.indices}
    val_eps = {int(episode_of[int(ds_row[0])]) for ds_row in val.indices}
    assert train_eps == set(np.flatnonzero(train.episode_mask)) and val_eps == set(
        np.flatnonzero(val.episode_mask)
    )


def test_reads_zarr_v2_store_with_imagecodecs_jpegxl(tmp_path):
    import imagecodecs.numcodecs

    imagecodecs.numcodecs.register_codecs(verbose=False)
    path = tmp_path / "v2.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    data, meta = root.create_group("data"), root.create_group("meta")
    frames = np.random.default_rng(0).integers(0, 255, (6, 8, 10, 3), dtype=np.uint8)
    codec = imagecodecs.numcodecs.Jpegxl(lossless=True)
    data.create_array("camera_0", shape=frames.shape, chunks=(1, 8, 10, 3), dtype="uint8", compressors=codec)[
        :
    ] = frames
    data.create_array("robot_eef_pose", shape=(6, 6), dtype="float64")[:] = np.zeros((6, 6))
    data.create_array("action", shape=(6, 6), dtype="float64")[:] = np.zeros((6, 6))
    meta.create_array("episode_ends", shape=(1,), dtype="int64")[:] = [6]
    pc, dc = _cfgs(dt_s=0.05)
    ds = EpisodeDataset(path, pc, dc, "train")
    np.testing.assert_array_equal(ds[1]["obs"]["camera_0"], frames[0:2])
    assert ds.dt_s == 0.05


def test_missing_key_error_names_the_key(tmp_path):
    store = _write_index_store(tmp_path / "s.zarr", ENDS)
    pc, dc = _cfgs()
    pc.obs["camera_1"] = pc.obs["camera_0"]
    with pytest.raises(ValueError, match="data/camera_1"):
        EpisodeDataset(store, pc, dc, "train")


def test_normalizer_maps_to_unit_range_and_survives_constant_dims():
    data = np.stack([np.linspace(-3, 5, 50), np.full(50, 0.25), np.linspace(0, 1e-6, 50)], axis=1)
    norm = LinearNormalizer()
    norm.fit("x", data)
    y = norm.normalize("x", torch.from_numpy(data).float())
    assert torch.isfinite(y).all()
    assert y[:, 0].min().item() == pytest.approx(-1) and y[:, 0].max().item() == pytest.approx(1)
    assert torch.allclose(y[:, 1], torch.zeros(50)) and y[:, 2].abs().max() < 1e-5
    back = norm.unnormalize("x", y)
    np.testing.assert_allclose(back.numpy(), data, atol=1e-5)
    # state round trip into a fresh normalizer built from the dims only
    fresh = LinearNormalizer({"x": 3})
    fresh.load_state_dict(norm.state_dict())
    assert torch.equal(fresh.normalize("x", torch.ones(1, 3)), norm.normalize("x", torch.ones(1, 3)))


@pytest.mark.timeout(60)
def test_worker_processes_decode_the_same_samples(tmp_path):
    """Frames are decoded lazily in DataLoader workers (the dataset reopens the store there)."""
    from policy.dataset import make_loader

    store = _write_index_store(tmp_path / "s.zarr", ENDS)
    pc, dc = _cfgs()
    ds = EpisodeDataset(store, pc, dc, "train")
    loader = make_loader(ds, batch_size=4, shuffle=False, num_workers=2, seed=0, drop_last=False)
    try:
        batches = list(loader)
    finally:
        del loader
    frames = torch.cat([b["obs"]["camera_0"] for b in batches])
    assert frames.dtype == torch.uint8 and frames.shape == (len(EXPECTED_WINDOWS), 2, 8, 10, 3)
    np.testing.assert_array_equal(frames[:, :, 0, 0, 0].numpy(), [w[:2] for w in EXPECTED_WINDOWS])


def test_the_store_s_recorded_dt_is_used_and_disagreeing_timestamps_are_warned(tmp_path, caplog):
    import zarr

    store = _write_index_store(tmp_path / "s.zarr", ENDS)  # timestamps 0.1 s apart
    pc, dc = _cfgs()
    with caplog.at_level("WARNING", logger="policy.dataset"):
        assert EpisodeDataset(store, pc, dc, "train").dt_s == pytest.approx(0.1)
    assert "records no dt_s" in caplog.text  # inferred: said so
    caplog.clear()
    zarr.open_group(str(store), mode="r+").attrs["dt_s"] = 0.15  # the rig's period, steps came late
    with caplog.at_level("WARNING", logger="policy.dataset"):
        assert EpisodeDataset(store, pc, dc, "train").dt_s == pytest.approx(0.15)
    assert "recorded dt_s=0.15 s, but its timestamps step by 0.1 s" in caplog.text


@pytest.mark.parametrize("cache_mb", [0.0, 512.0])  # with a cache a miss reads the whole episode first
def test_a_damaged_frame_met_mid_training_is_named_by_array_episode_and_step(tmp_path, cache_mb):
    from collection.episode_store import EpisodeStore

    path = tmp_path / "s.zarr"
    with EpisodeStore.open(path, "w", image_codec="jpegxl_lossless") as s:
        for i in range(2):
            s.add_episode(
                {
                    "camera_0": np.full((6, 8, 10, 3), 9, np.uint8),
                    "robot_eef_pose": np.zeros((6, 3)),
                    "action": np.zeros((6, 2)),
                    "timestamp": 0.1 * np.arange(6) + i,
                }
            )
    chunk = path / "data" / "camera_0" / "8.0.0.0"  # episode 1, step 2
    chunk.write_bytes(chunk.read_bytes()[:20])
    pc, dc = _cfgs(image_cache_mb=cache_mb)
    ds = EpisodeDataset(path, pc, dc, "train")
    with pytest.raises(
        ValueError,
        match=r"data/camera_0 episode 1 step 2 \(row 8\) cannot be decoded .*checksum.*rig episodes check",
    ):
        for i in range(len(ds)):
            ds[i]


@pytest.mark.parametrize("downsample", [1, 2])
@pytest.mark.parametrize("cache_mb", [0.0, 512.0, 0.0005])  # 0.0005 MB: two 240-byte frames, not an episode
def test_every_sampled_frame_is_its_window_step_whatever_the_cache(tmp_path, downsample, cache_mb):
    """A cache miss decodes the frame's whole episode in one read; with no cache, or one smaller than an
    episode, frames are read one by one. Each sample's frames are its window's steps either way."""
    store = _write_index_store(tmp_path / "s.zarr", ENDS)
    pc, dc = _cfgs(downsample=downsample, image_cache_mb=cache_mb)
    ds = EpisodeDataset(store, pc, dc, "train")
    for _ in range(2):  # the first pass fills the cache, the second reads from it
        for i in range(len(ds)):
            rows = ds._layout.step_index[ds.window_indices(i)[: pc.n_obs_steps]]
            frames = ds[i]["obs"]["camera_0"]
            assert frames.shape == (pc.n_obs_steps, 8, 10, 3)
            assert frames[:, 0, 0, 0].tolist() == rows.tolist()
    assert (ds._cache_bytes > 0) == (cache_mb > 0) and ds._cache_bytes <= cache_mb * 1e6
