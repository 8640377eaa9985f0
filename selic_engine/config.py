"""The one typed place for model and codec configuration."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal, get_args

#: How the text vector joins the latent: concat (the paper's), add, mul, or none (no semantic branch); the one list
#: of modes, each implemented in model/fusion.py (FUSE).
FusionMode = Literal["concat", "add", "mul", "none"]
FUSION_MODES: tuple[FusionMode, ...] = get_args(FusionMode)
#: Arithmetic of g_a / g_s: "auto" picks bfloat16 where the hardware has it natively (CUDA, AVX512-BF16/AMX CPUs)
#: and float32 elsewhere (emulated bfloat16 is ~20x slower). See selic_engine/precision.py.
Precision = Literal["auto", "float32", "bfloat16"]

#: compressai's quality-1..8 MSE lambdas: they span about 0.1-1.5 bpp on Kodak.
DEFAULT_LAMBDAS: tuple[float, ...] = (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.1800)

#: The architecture of every model before the registry existed: decoder v1 (model.selic.SelicModel), frozen.
DEFAULT_ARCHITECTURE = "selic-v1"

QUALITY_MIN = 1.0
QUALITY_MAX = 8.0
DEFAULT_QUALITY = 4.0
#: The shipped model a save uses unless told otherwise (a preset name: selic_engine/weights/selic-<name>.safetensors).
DEFAULT_MODEL = "small"


#: ELIC's uneven channel groups (He et al. 2022) for its M=320 are 16, 16, 32, 64, M-128; the same first four
#: (small groups first: their contexts are the most informative per channel), with the rest of M last.
ELIC_HEAD_GROUPS: tuple[int, ...] = (16, 16, 32, 64)


def elic_groups(M: int) -> tuple[int, ...]:
    """ELIC's channel groups for an M-channel latent: (16, 16, 32, 64, M-128), without an empty last group."""
    head = sum(ELIC_HEAD_GROUPS)
    if M < head:
        raise ValueError(f"ELIC's default groups need M >= {head}; give the groups for M={M} explicitly")
    return ELIC_HEAD_GROUPS + ((M - head,) if M > head else ())


@dataclass(frozen=True)
class ElicConfig:
    """Decoder v2's entropy model (issue 31, stage 2; entropy.elic): checkerboard spatial context inside uneven
    channel groups, channel context from the groups before, and a hyperprior larger than v1's (Nz=64). The defaults
    keep its float64 prior within issue 31's 0.1 s at 768x512 (M=128)."""

    groups: tuple[int, ...] = ()  # channels per group, in coding order (they sum to M); () : elic_groups(M)
    Nz: int = 128  # hyper-latent channels
    hyper_hidden: int = 96  # width of h_a and h_s
    param_hidden: int = 64  # width of each group's parameter net (1x1 convolutions)
    context_hidden: int = 64  # width of each group's channel-context net

    def channel_groups(self, M: int) -> tuple[int, ...]:
        """The groups for an M-channel latent, checked."""
        groups = self.groups or elic_groups(M)
        if sum(groups) != M or min(groups) < 1:
            raise ValueError(f"channel groups {groups} must be positive and sum to M={M}")
        return groups


#: The light g_s's channels at 1/16, 1/8, 1/4 and 1/2 of the image resolution (model.light.light_synthesis).
LIGHT_SYNTHESIS_WIDTHS: tuple[int, ...] = (192, 128, 64, 32)


@dataclass(frozen=True)
class DecoderV2Config:
    """What decoder v2 (architecture "selic-v2", issue 31) adds to a model config: its entropy model and its light
    g_s's widths."""

    entropy: ElicConfig = ElicConfig()
    synthesis_widths: tuple[int, ...] = LIGHT_SYNTHESIS_WIDTHS

    @classmethod
    def from_dict(cls, data: dict) -> DecoderV2Config:
        """From asdict's (or JSON's) nested dicts and lists."""
        entropy = {**data["entropy"], "groups": tuple(data["entropy"]["groups"])}
        return cls(ElicConfig(**entropy), tuple(data["synthesis_widths"]))


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one SELIC model; stored in the weights file and checked on load."""

    name: str
    N: int  # channels of g_a / g_s
    M: int  # latent channels
    Nz: int  # hyper-latent channels
    slices: int  # ChARM channel slices
    charm_hidden: int  # width of the ChARM parameter nets
    text_dim: int = 384  # text-embedding dimension D
    fusion: FusionMode = "concat"
    lambdas: tuple[float, ...] = field(default=DEFAULT_LAMBDAS)
    #: Which registered model class builds this config (model.registry); every file before it existed is v1's.
    architecture: str = DEFAULT_ARCHITECTURE
    #: Decoder v2's own fields (architecture "selic-v2"); None for v1, whose JSON then leaves it out, as ever.
    v2: DecoderV2Config | None = None

    def __post_init__(self) -> None:
        if self.M % self.slices:
            raise ValueError(f"M={self.M} must be divisible by slices={self.slices}")
        if self.fusion not in FUSION_MODES:
            raise ValueError(f"unknown fusion mode {self.fusion!r}; choose from {', '.join(FUSION_MODES)}")
        if len(self.lambdas) != int(QUALITY_MAX - QUALITY_MIN) + 1:
            raise ValueError("one lambda per integer quality 1..8 is required")

    def to_json(self) -> str:
        data = asdict(self)
        if data["v2"] is None:  # v1's configs read as they did before v2 existed (older selics open them)
            del data["v2"]
        return json.dumps(data, sort_keys=True)

    @classmethod
    def _from_dict(cls, data: dict) -> ModelConfig:
        """From asdict's (or JSON's) form: tuples and the nested v2 config rebuilt."""
        data = {**data, "lambdas": tuple(data["lambdas"])}
        if isinstance(data.get("v2"), dict):
            data["v2"] = DecoderV2Config.from_dict(data["v2"])
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        """The config stored in a weights file or checkpoint. A field this release does not know means a newer
        selic wrote it: that is said plainly, instead of a TypeError from the constructor."""
        data = json.loads(text)
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            from . import __version__
            from .errors import NewerSelicError

            raise NewerSelicError(f"model config fields {', '.join(unknown)} are unknown to selic {__version__}: "
                                  "these weights were written by a newer selic; upgrade selic to use them")
        return cls._from_dict(data)

    def replace(self, **changes: object) -> ModelConfig:
        return ModelConfig._from_dict({**asdict(self), **changes})


PRESETS: dict[str, ModelConfig] = {
    # The paper's layout: N=128, Minnen-2020 ChARM (M=320, 10 slices), BERT-base 768-d text vectors.
    "paper": ModelConfig(name="paper", N=128, M=320, Nz=192, slices=10, charm_hidden=224, text_dim=768),
    # CPU-trainable: the same graph, narrower; MiniLM 384-d text vectors.
    # N grew by training.widen whenever the transforms capped PSNR: 48 until step 16,250, 64 until 36,000,
    # 96 until 41,000.
    "small": ModelConfig(name="small", N=128, M=128, Nz=64, slices=4, charm_hidden=64, text_dim=384),
}
# Decoder v2 in development (issue 31): small's encoder side and latent, v2's entropy model and light g_s. Its
# training starts from its stages (training.assemble), then `selic train --preset small-v2` fine-tunes it jointly.
PRESETS["small-v2"] = PRESETS["small"].replace(name="small-v2", architecture="selic-v2", v2=DecoderV2Config())


def preset(name: str) -> ModelConfig:
    """A preset name, or a JSON file {"base": preset, field: value, ...} for variants (ablations, tests)."""
    if name in PRESETS:
        return PRESETS[name]
    if name.endswith(".json"):
        fields = json.loads(Path(name).read_text())
        return PRESETS[fields.pop("base", "small")].replace(**fields)
    raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)} or a .json variant file")


@dataclass(kw_only=True)
class StageConfig:
    """What every training run shares (`selic train`'s TrainConfig, and decoder v2's stages training.distill and
    training.entropy_stage): its run folder, data, steps, validation, record and resume; each adds its own fields
    and may set other defaults."""

    out: str  # run folder: log.jsonl and last.pt
    data: str = "../shared/data/train"
    steps: int = 20_000  # total step count to reach (counted across resumes)
    batch_size: int = 2
    crop: int = 256
    lr: float = 2e-4
    clip_grad: float = 1.0
    ema_decay: float = 0.999  # weight average, validated beside the weights (0: none)
    val_every: int = 250
    val_images: int = 12  # held out of the training pool (never Kodak): the same photos in every run
    ckpt_every: int = 250
    threads: int = 0  # torch intra-op threads (0: torch default)
    seed: int = 0
    minutes: float = 0  # stop (with a checkpoint) after this much training wall time; 0: run to `steps`
    precision: Precision = "auto"  # g_a / g_s arithmetic: bfloat16 where it is native
    resume: str = ""  # "auto": continue from out/last.pt when it exists (TrainConfig: also a checkpoint path)


@dataclass
class TrainConfig(StageConfig):
    """A training run; `selic train --config FILE.json` fills it, flags override single fields. The fields every
    run has are StageConfig's; with --resume auto and no checkpoint yet, `selic train` starts from the shipped
    weights."""

    preset: str = "small"  # a preset name or a .json variant file (see config.preset)
    captions: str = ""  # default: <data>/captions.tsv
    out: str = "runs/selic-small"  # checkpoints and logs (keep it outside the repo's tracked files)
    init_weights: str = ""  # start from a .safetensors weights file (e.g. the shipped model)
    steps: int = 100_000  # total step count to reach (counted across resumes)
    batch_size: int = 8
    crop: int = 128
    min_crop: int = 128  # crops are drawn from [min_crop, crop], rounded to 64, one size per batch
    lr_decay_at: int = 0  # step at which lr drops 10x (0: never)
    aux_lr: float = 1e-3
    caption_dropout: float = 0.2
    workers: int = 1
    val_every: int = 500
    adapter: bool = False  # train only the encoder side (for a new text embedder)
    embedder: str = "minilm"  # name of the text embedder whose vectors the model is trained on
