"""Read an episode store the way the Diffusion Policy reference's ``ReplayBuffer`` does. Runs in the
reference's environment (zarr 2, imagecodecs of 2022), not the project's: see
``tests/collection/test_reference_compat.py``, which builds that environment.

    python reference_reader.py STORE   -> one JSON line {"episodes", "steps", "frames_decoded"}

As ``ReplayBuffer.copy_from_path``: register imagecodecs' codecs, ``copy_store`` the whole store into
memory, then ``data/*`` and ``meta/episode_ends`` with equal first dimensions; every frame decoded.
"""

import json
import sys

import imagecodecs.numcodecs
import numpy as np
import zarr

imagecodecs.numcodecs.register_codecs()
src = zarr.open(sys.argv[1], mode="r")
mem = zarr.MemoryStore()
zarr.copy_store(src.store, mem, source_path="/data", dest_path="/data", if_exists="replace")
zarr.copy_store(src.store, mem, source_path="/meta", dest_path="/meta", if_exists="replace")
root = zarr.group(mem)
ends = root["meta"]["episode_ends"][:]
data = root["data"]
lengths = {key: arr.shape[0] for key, arr in data.arrays()}
assert len(set(lengths.values())) == 1, f"first dimensions differ: {lengths}"
n_steps = int(ends[-1]) if len(ends) else 0
assert n_steps == next(iter(lengths.values())), (n_steps, lengths)
frames = 0
for key, arr in data.arrays():
    for i in range(arr.shape[0]):  # every frame, decoded one by one as a sampler would
        value = arr[i]
        assert np.asarray(value).shape == arr.shape[1:], key
        frames += arr.ndim == 4
print(json.dumps({"episodes": len(ends), "steps": n_steps, "frames_decoded": frames}))
