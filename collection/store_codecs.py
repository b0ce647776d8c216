"""How an episode store's arrays are compressed and checksummed: the image codecs, the low-dim codec,
and the CRC of every chunk.

A key whose steps are uint8 images (H, W, C) with C in {1, 3, 4} is stored one frame per chunk with
the image codec; every other key is stored with blosc zstd in chunks of up to 1024 steps.

Image codec (``image_codec=``), measured by ``benchmarks/store_bench.py`` through the store's writer
on the 2-core dev machine with rendered-looking 640x480 frames (gradients, moving shapes, sensor
noise of std 2 levels), one camera plus 3 low-dim keys. CPU ms/frame is process CPU time (all
threads) per frame, stable under load; write fps is wall clock on an idle-ish machine and halves
under load:

===================  ====================================  ========  ===========  =========  =======
name                 codec                                 kB/frame  CPU ms/fr    write fps  PSNR dB
===================  ====================================  ========  ===========  =========  =======
``jpegxl`` (default) JPEG-XL lossy, distance 1.0, effort 3      8          10        ~125      40.6
``jpegxl_lossless``  JPEG-XL lossless, effort 1               447           4.4      ~200      exact
``jpeg2k``           JPEG 2000 level 50 (the reference's)     197          53         ~20      47.1
``blosc``            blosc zstd-3 bitshuffle                  617           6.6      ~145      exact
``raw``              uncompressed                             922           3.0      ~330      exact
===================  ====================================  ========  ===========  =========  =======

The default is the smallest codec whose CPU cost lets one core write >= 60 frames/s at 640x480 (3x
headroom over two cameras recorded at the 10 Hz control rate) with PSNR >= 38 dB: JPEG-XL lossy,
~110x smaller than raw (JPEG 2000 costs 5x too much CPU to record live). Use ``jpegxl_lossless``
where exact pixels matter.

The JPEG-XL and JPEG 2000 codecs plug into zarr only in zarr format 2
(``imagecodecs.numcodecs.register_codecs()``, done on import), so new stores are zarr format 2, like
the reference's. Stores in zarr format 3 (for example built by plain ``zarr`` with default codecs) are
read and appended to with their own codecs.
"""

from __future__ import annotations

from typing import Any

import imagecodecs.numcodecs
import numcodecs
import numpy as np


def register_image_codecs() -> None:
    """Register imagecodecs_jpegxl / imagecodecs_jpeg2k / ... with numcodecs, so that zarr format 2 stores
    written with them (ours, and the Diffusion Policy reference datasets) open. Silent: imagecodecs
    prints one "already registered" line per codec (~70) when they were registered before, e.g. by
    the user's own ``register_codecs()`` call."""
    imagecodecs.numcodecs.register_codecs(verbose=False)


register_image_codecs()

DEFAULT_IMAGE_CODEC = "jpegxl"
IMAGE_CODECS: tuple[str, ...] = ("jpegxl", "jpegxl_lossless", "jpeg2k", "blosc", "raw")
REFERENCE_IMAGE_CODEC = "jpeg2k"
LOW_DIM_CHUNK_STEPS = 1024

# The imagecodecs codecs and the parameters we set; the store's metadata records exactly these
# (store_meta.write_codecs), which every imagecodecs version reads.
IMAGECODECS: dict[str, tuple[Any, dict[str, Any]]] = {
    "jpegxl": (imagecodecs.numcodecs.Jpegxl, {"distance": 1.0, "effort": 3, "lossless": False}),
    "jpegxl_lossless": (imagecodecs.numcodecs.Jpegxl, {"lossless": True, "effort": 1}),
    "jpeg2k": (imagecodecs.numcodecs.Jpeg2k, {"level": 50}),
}


def make_image_codec(name: str) -> Any:
    """The numcodecs codec object for an image codec name (None for ``raw``). Raises ValueError."""
    if name in IMAGECODECS:
        cls, params = IMAGECODECS[name]
        return cls(**params)
    if name == "blosc":
        return numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.BITSHUFFLE)
    if name == "raw":
        return None
    raise ValueError(f"unknown image codec {name!r}; choose one of {', '.join(IMAGE_CODECS)}")


def low_dim_codec() -> Any:
    """The codec of every array that is not images: blosc zstd-3 with byte shuffle."""
    return numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.SHUFFLE)


# The root attribute that says the store's arrays carry checksums (written with the first such
# array): ``rig episodes check`` then requires the root attributes, which hold ``dt_s`` too.
CHECKSUM_ATTR = "checksums"
CHECKSUM_V2 = "crc32"  # numcodecs CRC32: the compressor of every array (zarr format 2)
CHECKSUM_V3 = "crc32c"  # zarr's crc32c codec: the last bytes-to-bytes codec (zarr format 3)


def array_codecs(zarr_format: int, codec: Any, checksums: bool) -> dict[str, Any]:
    """``create_array`` keyword arguments for an array compressed with ``codec`` (a numcodecs codec
    or None), with a checksum of every stored chunk when ``checksums``.

    Format 2 has one compressor after the filters: the codec becomes the (only) filter and numcodecs'
    CRC32 the compressor, so the checksum covers the bytes on disk and a flipped one is an error on
    read (``RuntimeError: Stored and computed crc32 checksum do not match``), not a changed value.
    Format 3: zarr's ``crc32c`` codec after the compressor.

    Cost, measured by ``benchmarks/collect_bench.py`` (sim rig, 2 cameras 640x480, an 85-step
    episode, with and without in the same run, CPU s of the process on the shared 2-core machine):
    saving 2.05 vs 1.99 CPU s (+3 %), training samples per CPU s 19.8 vs 20.1 (-2 %, within the
    run-to-run spread), dataset samples 28.0 vs 27.8; ``rig train``'s verification of every checksum
    before it starts 0.07 CPU s (0.015 without checksums, which reads only the low-dim arrays)."""
    if not checksums:
        return {"compressors": codec}
    if zarr_format == 2:
        return {"filters": [codec] if codec is not None else None, "compressors": numcodecs.CRC32()}
    from zarr.codecs import BloscCodec, Crc32cCodec

    if isinstance(codec, numcodecs.Blosc):
        cfg = codec.get_config()
        codec = BloscCodec(
            cname=cfg["cname"],
            clevel=cfg["clevel"],
            shuffle="shuffle" if cfg["shuffle"] == 1 else "bitshuffle",
        )
    return {"compressors": [codec, Crc32cCodec()] if codec is not None else [Crc32cCodec()]}


def is_image_step(step_shape: tuple[int, ...], dtype: np.dtype) -> bool:
    """Whether steps of this shape/dtype are stored as images (one frame per chunk, image codec)."""
    return dtype == np.uint8 and len(step_shape) == 3 and step_shape[-1] in (1, 3, 4)
