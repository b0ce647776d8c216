"""Config models for the diffusion policy and its training (``rig train``).

One YAML file (``configs/policy/*.yaml``) holds three sections: ``policy`` (what the network sees and
predicts, and its architecture), ``dataset`` (which episode store, split, downsampling, workers) and
``training`` (optimizer, schedule, EMA, validation and checkpoint cadence). The observation and action
*shapes* are not in the config: they are read from the episode store when training starts and saved in
the checkpoint as ``shape_meta`` (see :func:`policy.dataset.build_shape_meta`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from robot.config import StrictModel


class ObsKeyConfig(StrictModel):
    """One observation stream: ``data/<key>`` in the episode store."""

    type: Literal["rgb", "low_dim"]
    # low_dim only: which columns of the stored array to use (None = all), e.g. [0, 1] for x, y.
    dims: list[int] | None = None


class VisionConfig(StrictModel):
    """Per-camera image encoder: ResNet-18 layout with GroupNorm, pooled or spatial-softmax features."""

    # Resize stored frames to (H, W) before cropping; None keeps the stored size. Done with OpenCV
    # (INTER_AREA) in the data loader and in Policy.predict, identically.
    image_size: tuple[int, int] | None = None
    # Crop (H, W) of the (resized) image: random at train time, centered at inference. None = no crop.
    crop_shape: tuple[int, int] | None = None
    random_crop: bool = True
    width: int = Field(64, ge=4, description="channels of the first stage; 64 is torchvision's ResNet-18")
    layers: list[int] = Field(default_factory=lambda: [2, 2, 2, 2])
    # The stem: torchvision's is a stride-2 7x7 conv and a stride-2 max pool (32x total downsampling).
    # Small images keep more of their resolution with stem_stride 1 and/or no stem pool, so that
    # spatial softmax still has a map to find keypoints in (torchvision weights still load: the
    # kernel shapes do not change).
    stem_stride: int = Field(2, ge=1, le=2)
    stem_pool: bool = True
    # Stride of the first block of layer2, layer3, layer4 (torchvision: 2 each; layer1 never strides).
    # A 1 keeps that stage at its input's resolution: the last feature map, where spatial softmax
    # finds its keypoints, is 2x finer per 1, for the cost of running the later (wider) stages on
    # 4x the pixels. Kernel shapes do not change, so torchvision weights still load.
    stage_strides: tuple[int, int, int] = (2, 2, 2)

    @field_validator("stage_strides")
    @classmethod
    def _check_stage_strides(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(s not in (1, 2) for s in v):
            raise ValueError(f"stage_strides are the strides of layer2..layer4, each 1 or 2; got {list(v)}")
        return v

    pool: Literal["avg", "spatial_softmax"] = "avg"
    num_keypoints: int = 32
    share_encoder: bool = False
    imagenet_norm: bool = False
    # Pixel values entering the encoder (before ImageNet normalization): "unit" = [0, 1];
    # "symmetric" = [-1, 1] (x * 2 - 1), the Diffusion Policy reference's image range normalizer,
    # used by imported reference checkpoints (policy/reference/convert.py).
    pixel_range: Literal["unit", "symmetric"] = "unit"
    # A linear layer and a ReLU after the pool, to this many features per camera (None: the pool's
    # output), as robomimic's VisualCore and its encoder's activation (reference hybrid policies: 64).
    feature_dim: int | None = Field(None, ge=1)
    # Optional torchvision-format ResNet-18 state dict (.pth) to initialise every camera encoder with.
    pretrained: str | None = None


class UnetConfig(StrictModel):
    """1-D temporal conditional U-Net (the paper's CNN variant)."""

    down_dims: list[int] = Field(default_factory=lambda: [256, 512, 1024])
    kernel_size: int = 5
    n_groups: int = 8
    diffusion_step_embed_dim: int = 128
    cond_predict_scale: bool = True


class TransformerConfig(StrictModel):
    """Time-series diffusion transformer (the paper's Diffusion Policy-T; policy/transformer.py).

    The defaults are the reference's real-robot image configuration
    (train_diffusion_transformer_real_hybrid_workspace.yaml in real-stanford/diffusion_policy).
    """

    n_layer: int = Field(8, ge=1, description="decoder layers")
    n_head: int = Field(4, ge=1, description="attention heads; must divide n_emb")
    n_emb: int = Field(256, ge=8, description="token width; even (sinusoidal step embedding)")
    p_drop_emb: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the token embeddings")
    p_drop_attn: float = Field(0.3, ge=0.0, lt=1.0, description="dropout on attention weights and sublayers")
    # An action token attends to earlier action tokens only, and to the step token and the
    # observations up to its own time step.
    causal_attn: bool = True

    @model_validator(mode="after")
    def _check_heads(self) -> TransformerConfig:
        if self.n_emb % self.n_head or self.n_emb % 2:
            raise ValueError(f"n_emb ({self.n_emb}) must be even and divisible by n_head ({self.n_head})")
        return self


class ModelConfig(StrictModel):
    """The denoising network: which backbone, and the settings of each (only the chosen one is used)."""

    backbone: Literal["unet", "transformer"] = "unet"
    unet: UnetConfig = Field(default_factory=UnetConfig)
    transformer: TransformerConfig = Field(default_factory=TransformerConfig)


class NoiseConfig(StrictModel):
    """Diffusion schedule: DDPM for training, DDIM for sampling (both from diffusers)."""

    num_train_timesteps: int = 100
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: Literal["epsilon", "sample"] = "epsilon"
    clip_sample: bool = True
    num_inference_steps: int = 16


def _default_obs() -> dict[str, ObsKeyConfig]:
    return {"camera_0": ObsKeyConfig(type="rgb"), "robot_eef_pose": ObsKeyConfig(type="low_dim")}


class PolicyConfig(StrictModel):
    """What the policy observes and predicts, and its network. Step counts are dataset steps."""

    obs: dict[str, ObsKeyConfig] = Field(default_factory=_default_obs)
    action_key: str = "action"
    action_dims: list[int] | None = None  # subset of the stored action columns (None = all)
    relative_action: bool = False
    """Predict the action's x, y, z (stored columns 0-2) relative to the TCP position at the last
    observation step (UMI's relative trajectories): the denoiser learns offsets and the model adds the
    observed position back, in training and in ``Policy.predict`` alike (committed actions are
    converted the same way). Needs ``robot_eef_pose`` among the observations with those columns in its
    ``dims``; rotation and width columns stay absolute."""
    horizon: int = 16
    n_obs_steps: int = 2
    n_action_steps: int = 8
    vision: VisionConfig = Field(default_factory=VisionConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    noise: NoiseConfig = Field(default_factory=NoiseConfig)

    @model_validator(mode="before")
    @classmethod
    def _unet_of_older_checkpoints(cls, data: object) -> object:
        # Checkpoints written before the transformer backbone hold `policy.unet` and no `policy.model`.
        if isinstance(data, dict) and "unet" in data and "model" not in data:
            data = dict(data)
            data["model"] = {"backbone": "unet", "unet": data.pop("unet")}
        return data

    @model_validator(mode="after")
    def _check_steps(self) -> PolicyConfig:
        if self.n_obs_steps < 1:
            raise ValueError("n_obs_steps must be >= 1")
        if self.n_obs_steps - 1 + self.n_action_steps > self.horizon:
            raise ValueError(
                f"n_obs_steps - 1 + n_action_steps ({self.n_obs_steps - 1 + self.n_action_steps}) "
                f"must not exceed horizon ({self.horizon})"
            )
        factor = 2 ** (len(self.model.unet.down_dims) - 1)
        if self.model.backbone == "unet" and self.horizon % factor:
            raise ValueError(f"horizon {self.horizon} must be divisible by {factor} (2^(len(down_dims)-1))")
        if not self.obs:
            raise ValueError("policy.obs is empty: give at least one observation key")
        return self


class DatasetConfig(StrictModel):
    """Episode store reading: split, downsampling, decoding workers."""

    path: str | None = None  # the zarr store; `rig train --dataset PATH` sets it
    val_ratio: float = Field(0.1, ge=0.0, lt=1.0)
    seed: int = 42
    max_train_episodes: int | None = None
    downsample: int = Field(1, ge=1, description="keep every k-th step of each episode")
    # Step period of the store in seconds; None = median of data/timestamp differences.
    # The policy's dt_s is this times `downsample`.
    dt_s: float | None = None
    num_workers: int = 0
    # Decoded, resized frames kept per worker (bounded; 0 = off). Useful when frames are small.
    image_cache_mb: float = 0.0
    # Episodes left out of both splits (`rig train --skip-damaged` sets the damaged ones).
    skip_episodes: list[int] = []


class TrainingConfig(StrictModel):
    """Optimisation and bookkeeping of ``rig train``."""

    device: str = "auto"  # auto = cuda when available, else cpu
    seed: int = 42
    batch_size: int = 64
    num_epochs: int = 100
    max_steps: int | None = None  # stop after this many optimizer steps (whichever comes first)
    lr: float = 1e-4
    # AdamW weight decay of the denoiser. The transformer decays only its weight matrices (not biases,
    # LayerNorms or position embeddings); the U-Net decays all its parameters.
    weight_decay: float = 1e-6
    # ... and of the observation encoder (None: weight_decay). The reference transformer trains with
    # 1e-3 for the transformer and 1e-6 for the encoder.
    obs_encoder_weight_decay: float | None = None
    betas: tuple[float, float] = (0.95, 0.999)
    lr_scheduler: str = "cosine"
    lr_warmup_steps: int = 500
    grad_clip_norm: float | None = 1.0
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto: bf16 on GPU, off on CPU
    use_ema: bool = True
    ema_power: float = 0.75
    ema_max_decay: float = 0.9999
    val_every_steps: int = 500
    val_batches: int = 4
    sample_batches: int = 1  # batches of sampled chunks for the action-MSE metric
    checkpoint_every_steps: int = 1000
    keep_checkpoints: int = 3
    log_every_steps: int = 10
    torch_threads: int | Literal["auto"] | None = "auto"
    """``auto``: time every core against one thread over the first steps and keep the faster
    (policy/threads.py); a number: that many; None: torch's default."""

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _no_is_false_in_yaml(cls, value: object) -> object:
        # YAML 1.1 reads a bare `no` (in a file or a key=value override) as False
        return "no" if value is False else value


class TrainConfig(StrictModel):
    """Top level of ``configs/policy/*.yaml``."""

    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
