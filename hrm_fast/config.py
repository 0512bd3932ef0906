"""Run configuration: pydantic models, YAML presets and ``key=value`` overrides.

A run is described by one :class:`Config`. Presets live in ``train/configs/<name>.yaml``;
:func:`load_config` reads one and applies dotted overrides such as ``train.lr=3e-4`` (values are
parsed as YAML scalars, so ``3e-4``, ``true``, ``null`` and ``[1, 2]`` work). Every section forbids
unknown keys, so a typo fails at start-up with the key's name and the keys that are allowed.

Batch-size convention: ``train.global_batch_size`` is the number of sequences per optimizer step,
summed over all ranks and all ``train.grad_accum`` micro-batches; one micro-batch on one rank holds
``global_batch_size / (world_size * grad_accum)`` sequences.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo

_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
CONFIG_DIR = Path(__file__).resolve().parent.parent / "train" / "configs"


class ConfigError(ValueError):
    """A preset or override that cannot be used; the message names the key and what is allowed."""


def swiglu_inner(width: int, expansion: float) -> int:
    """SwiGLU inner size for input width ``width``: round(expansion * width * 2/3) rounded up to a multiple of 256."""
    return -(-round(expansion * width * 2 / 3) // 256) * 256


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    """The HRM architecture (docs/hrm.md §1), TRM's (``arch: trm``, §6) and hrm_fast's options."""

    arch: Literal["hrm", "trm"] = Field(
        "hrm", description="hrm: H and L modules, 1-step gradient; trm: one L_layers network for both updates, "
        "the whole last cycle back-propagated (H_layers unused)")
    hidden_size: int = Field(512, gt=0)
    num_heads: int = Field(8, gt=0)
    expansion: float = Field(4.0, gt=0)
    H_layers: int = Field(4, ge=1)
    L_layers: int = Field(4, ge=1)
    H_cycles: int = Field(2, ge=1)
    L_cycles: int = Field(2, ge=1)
    halt_max_steps: int = Field(16, ge=1)
    halt_exploration_prob: float = Field(0.1, ge=0.0, le=1.0)
    puzzle_emb_ndim: int = Field(512, ge=0, description="0 = no puzzle embedding")
    puzzle_emb_tokens: int = Field(
        0, ge=0, description="puzzle prefix tokens (TRM's puzzle_emb_len; TRM uses 16); 0 = "
        "ceil(puzzle_emb_ndim / hidden_size), HRM's rule (1 token)")
    pos_encodings: Literal["rope", "learned", "none"] = "rope"
    rope_theta: float = Field(10000.0, gt=0)
    rms_norm_eps: float = Field(1e-5, gt=0)
    forward_dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    loss_type: Literal["stablemax", "softmax"] = "stablemax"
    bootstrap_q: bool = Field(True, description="HRM's extra no-grad inner pass for the target Q-continue; with "
                              "arch trm, false = TRM's no_ACT_continue (halt when q_halt > 0, no Q-continue loss)")
    mlp_t: bool = Field(False, description="trm only: an MLP over the sequence axis instead of attention (TRM mlp_t)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="on attention and MLP outputs, training only")
    grad_checkpoint: bool = Field(False, description="recompute the with-grad blocks in backward")
    ops: Literal["auto", "reference", "triton"] = "auto"
    pad_aware: bool = Field(
        False, description="each ACT segment runs every row on a k x k window of the canvas over that row's non-PAD "
        "inputs and labels (k the batch's largest bounding box, a multiple of pad_aware_step, at most the canvas), "
        "plus the puzzle prefix; cells keep their 2-D positions. Cells outside a row's window are not attended to, "
        "keep their z in that segment and predict PAD (their labels are ignored anyway). Eager only "
        "(compile=false); not with mlp_t. data.bucket_batches makes the batches' windows smaller")
    pad_aware_step: int = Field(4, ge=1, description="pad_aware: the window side is rounded up to a multiple of this")

    @model_validator(mode="after")
    def _check_heads(self) -> ModelConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"model.num_heads={self.num_heads} must divide model.hidden_size={self.hidden_size}")
        if (self.hidden_size // self.num_heads) % 2:
            raise ValueError("model.hidden_size / model.num_heads (head_dim) must be even for RoPE")
        if self.mlp_t and self.arch != "trm":
            raise ValueError("model.mlp_t=true needs model.arch=trm")
        if self.pad_aware and self.mlp_t:
            raise ValueError("model.pad_aware=true does not work with model.mlp_t=true (its weights span the full "
                             "sequence)")
        if self.puzzle_emb_tokens and self.puzzle_emb_tokens * self.hidden_size < self.puzzle_emb_ndim:
            raise ValueError(f"model.puzzle_emb_tokens={self.puzzle_emb_tokens} tokens cannot hold "
                             f"model.puzzle_emb_ndim={self.puzzle_emb_ndim} (hidden_size {self.hidden_size})")
        if self.puzzle_emb_tokens and not self.puzzle_emb_ndim:
            raise ValueError("model.puzzle_emb_tokens > 0 needs model.puzzle_emb_ndim > 0 (the prefix holds the "
                             "puzzle vector)")
        return self

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def puzzle_emb_len(self) -> int:
        """Prefix tokens the puzzle embedding occupies: ``puzzle_emb_tokens``, else ceil(puzzle_emb_ndim / hidden)."""
        return self.puzzle_emb_tokens or math.ceil(self.puzzle_emb_ndim / self.hidden_size)

    @property
    def intermediate_size(self) -> int:
        """SwiGLU inner size of the channel MLP: :func:`swiglu_inner` of hidden_size (as HRM)."""
        return swiglu_inner(self.hidden_size, self.expansion)


class DataConfig(_Section):
    path: str = "data/arc-aug-1000"
    sources: list[str] = Field(default_factory=lambda: ["arc-agi-1"])
    eval_sources: list[str] = Field(default_factory=lambda: ["arc-agi-1"])
    num_aug: int = Field(1000, ge=0)
    max_grid_size: int = Field(30, ge=1, le=30)
    val_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    subset: int | None = Field(None, ge=1, description="use only the first N tasks of each source")
    seed: int = 42
    workers: int = Field(1, ge=0)
    bucket_batches: int = Field(
        0, ge=0, description="regroup the rows of every N consecutive training batches by grid size (bounding-box "
        "side; with model.pad_aware each batch's window is then small); 0 = HRM's order")

    @property
    def seq_len(self) -> int:
        return self.max_grid_size * self.max_grid_size


class TrainConfig(_Section):
    global_batch_size: int = Field(768, ge=1, description="sequences per optimizer step, all ranks and micro-batches")
    grad_accum: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1)
    epochs: int | None = Field(100000, ge=1, description="passes over the task groups (HRM's epoch)")
    lr: float = Field(1e-4, gt=0)
    lr_min_ratio: float = Field(1.0, ge=0.0, le=1.0)
    lr_warmup_steps: int = Field(2000, ge=0)
    beta1: float = Field(0.9, ge=0.0, lt=1.0)
    beta2: float = Field(0.95, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.1, ge=0.0)
    optimizer: Literal["adam_atan2", "adamw"] = "adam_atan2"
    matrix_optimizer: Literal["none", "muon"] = Field(
        "none", description="muon: the blocks' 2-D weights train with Muon (torch.optim.Muon's update, Nesterov 0.95, "
        "5 Newton-Schulz steps, its RMS matched to AdamW's so it takes train.lr and its schedule; "
        "arXiv 2502.16982), the other weights with train.optimizer")
    puzzle_emb_lr: float = Field(1e-2, ge=0.0)
    puzzle_emb_weight_decay: float = Field(0.1, ge=0.0)
    grad_clip: float | None = Field(None, gt=0)
    ema: bool = Field(False, description="keep an exponential moving average of the weights (TRM: on); validation, "
                      "evaluation and checkpoints' ema.safetensors use it")
    ema_decay: float = Field(0.999, gt=0.0, lt=1.0, description="EMA: w_ema <- decay * w_ema + (1 - decay) * w")
    seed: int = 0

    @model_validator(mode="after")
    def _check_stop(self) -> TrainConfig:
        if self.max_steps is None and self.epochs is None:
            raise ValueError("set train.max_steps or train.epochs (or both: whichever ends first)")
        if self.global_batch_size % self.grad_accum:
            raise ValueError(
                f"train.global_batch_size={self.global_batch_size} is not divisible by "
                f"train.grad_accum={self.grad_accum}"
            )
        return self


class EvalConfig(_Section):
    every: int = Field(50000, ge=1, description="optimizer steps between evaluations")
    batch_size: int = Field(768, ge=1)
    views: Literal["all"] | int = Field(
        "all", description='train.evaluate: "all" augmented views, or at most N per test input')
    val_views: Literal["all"] | int = Field(
        "all", description='validation during training: "all" views, or the first N puzzles of each task')
    ks: list[int] = Field(default_factory=lambda: [1, 2, 10, 100, 1000])
    arc_at_end: bool = Field(
        False, description="after the last step, run train.evaluate's ARC scoring on the test split (eval.views)")

    @model_validator(mode="after")
    def _check(self) -> EvalConfig:
        for key in ("views", "val_views"):
            value = getattr(self, key)
            if isinstance(value, int) and value < 1:
                raise ValueError(f'eval.{key} must be "all" or an integer >= 1')
        if not self.ks or any(k < 1 for k in self.ks):
            raise ValueError("eval.ks must be a non-empty list of integers >= 1")
        return self


class CheckpointConfig(_Section):
    every: int = Field(50000, ge=1, description="optimizer steps between checkpoints")


class LogConfig(_Section):
    every: int = Field(10, ge=1)
    wandb: Literal["off", "online", "offline"] = "off"
    tensorboard: bool = True


class RunConfig(_Section):
    dir: str | None = Field(None, description="default runs/<preset>-<timestamp>")
    resume: str = Field("none", description='"none", "auto" or a checkpoint path')
    overwrite: bool = Field(
        False, description="run.dir already holds a run: move it aside to <run.dir>.replaced-<UTC time>, start anew")


class ProfileConfig(_Section):
    steps: int = Field(0, ge=0, description="0 = off")
    torch: bool = False


class InitConfig(_Section):
    """Start a new run from a checkpoint's weights (``init.from=CKPT``); see :mod:`hrm_fast.solve.init`."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    from_: str | None = Field(None, alias="from", description="checkpoint folder (or run folder: its best, else last)")
    freeze: Literal["none", "network", "embedding"] = Field(
        "none", description="what does not train: none, network (only puzzle rows train) or embedding (the table)")


class Config(_Section):
    preset: str = "custom"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool | None = Field(None, description="None = true on CUDA (false with model.pad_aware)")
    cuda_graph: bool | None = Field(
        None, description="capture the compiled training step in a CUDA graph (one CUDA device); None = true on CUDA")
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    profile: ProfileConfig = Field(default_factory=ProfileConfig)
    init: InitConfig = Field(default_factory=InitConfig)

    @model_validator(mode="after")
    def _check_pad_aware(self) -> Config:
        """``model.pad_aware`` reads the window size on the host every segment: refuse compile=true, and an unset
        ``compile`` means false."""
        if self.model.pad_aware:
            if self.compile:
                raise ValueError("model.pad_aware=true runs eagerly (one host read of the window size per segment): "
                                 "set compile=false or leave it unset")
            object.__setattr__(self, "compile", False)  # no validate_assignment round trip
        return self


# --------------------------------------------------------------------------- loading
def available_presets() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _format_errors(err: ValidationError, model: type[BaseModel]) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<config>"
        if e["type"] == "extra_forbidden":
            section = _section_for(model, e["loc"][:-1])
            allowed = ", ".join(_keys(section)) if section is not None else "?"
            lines.append(f"unknown key {key!r} (allowed here: {allowed})")
        else:
            value = e.get("input")
            shown = "" if isinstance(value, dict) else f" (got {value!r})"
            lines.append(f"{key}: {e['msg']}{shown}")
    return "invalid config:\n  " + "\n  ".join(lines)


def _keys(model: type[BaseModel]) -> list[str]:
    """The keys a section accepts in YAML and overrides (a field's alias when it has one, e.g. init.from)."""
    return [f.alias or name for name, f in model.model_fields.items()]


def _section_for(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        model = field.annotation
    return model


def config_from_dict(data: dict[str, Any]) -> Config:
    """Validate a nested dict into a :class:`Config`; raises :class:`ConfigError` naming bad keys."""
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, Config)) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=3e-4"`` -> (["train", "lr"], 0.0003). Values are YAML scalars/flow collections."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. train.lr=3e-4)")
    key, raw = text.split("=", 1)
    key = key.strip().lstrip("+")
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from None
    # YAML 1.1 reads "1e-4" (no dot) as a string and "off"/"on"/"yes"/"no" as booleans; the user meant
    # a number and a word respectively (pydantic still accepts "yes"/"no" for booleans).
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)
    elif isinstance(value, bool) and raw.strip().lower() not in ("true", "false"):
        value = raw.strip()
    return key.split("."), value


def _set_dotted(data: dict[str, Any], path: list[str], value: Any, original: str) -> None:
    node: Any = data
    model: type[BaseModel] | None = Config
    for i, part in enumerate(path[:-1]):
        if model is not None and part not in model.model_fields:
            prefix = ".".join(path[:i]) or "top level"
            raise ConfigError(
                f"override {original!r}: unknown section {part!r} in {prefix} "
                f"(allowed: {', '.join(model.model_fields)})"
            )
        model = _section_for(model, (part,)) if model is not None else None
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {original!r}: {'.'.join(path[: i + 1])} is not a section")
    if model is not None and path[-1] not in _keys(model):
        where = ".".join(path[:-1]) or "top level"
        raise ConfigError(
            f"override {original!r}: unknown key {path[-1]!r} in {where} (allowed: {', '.join(_keys(model))})"
        )
    node[path[-1]] = value


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def load_config(preset: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read ``train/configs/<preset>.yaml`` (or the defaults when None), apply ``key=value`` overrides.

    ``preset`` may also be a path to a YAML file (e.g. a run's ``config.yaml``). An override
    ``preset=NAME`` among ``overrides`` selects the preset too.
    """
    overrides = list(overrides)
    rest = []
    for item in overrides:
        if item.split("=", 1)[0].strip() == "preset":
            preset = item.split("=", 1)[1].strip()
        else:
            rest.append(item)
    data: dict[str, Any] = {}
    if preset is not None:
        path = Path(preset)
        if path.suffix not in (".yaml", ".yml"):
            path = CONFIG_DIR / f"{preset}.yaml"
            if not path.exists():
                raise ConfigError(f"unknown preset {preset!r} (available: {', '.join(available_presets())})")
        elif not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        data = _read_yaml(path)
        data.setdefault("preset", path.stem if path.parent == CONFIG_DIR else data.get("preset", path.stem))
    for item in rest:
        keys, value = parse_override(item)
        _set_dotted(data, keys, value, item)
    return config_from_dict(data)


# --------------------------------------------------------------------------- --help
def _type_name(annotation: Any) -> str:
    """``int``, ``float | None``, ``"rope" | "learned"``, ``list[str]``: the type of a field as a user writes it."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (Union, UnionType):
        return " | ".join("None" if a is type(None) else _type_name(a) for a in args)
    if origin is list:
        return f"list[{_type_name(args[0])}]"
    return getattr(annotation, "__name__", str(annotation))


def _field_line(name: str, field: FieldInfo) -> str:
    default = field.get_default(call_default_factory=True)
    limits = [f"{op} {getattr(m, key)}" for m in field.metadata for key, op in
              (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")) if getattr(m, key, None) is not None]
    text = f"  {name}: {_type_name(field.annotation)} = {json.dumps(default)}"
    notes = ", ".join(limits + ([field.description] if field.description else []))
    return f"{text}   ({notes})" if notes else text


def config_help() -> str:
    """Every config section with its keys, types, defaults (and limits), generated from the models above."""
    lines = ["presets (preset=NAME; train/configs/NAME.yaml):"]
    for name in available_presets():
        first = (CONFIG_DIR / f"{name}.yaml").read_text().splitlines()[:1]
        about = first[0].lstrip("# ").strip() if first and first[0].startswith("#") else ""
        lines.append(f"  {name}" + (f": {about}" if about else ""))
    lines += ["", "keys (section.key=value; the defaults below, unless the preset sets its own):"]
    top = [(n, f) for n, f in Config.model_fields.items() if _section_for(Config, (n,)) is None]
    lines += [_field_line(n, f) for n, f in top]
    for name in Config.model_fields:
        section = _section_for(Config, (name,))
        if section is None:
            continue
        doc = (section.__doc__ or "").strip().splitlines()
        lines += ["", f"{name}:" + (f"  {doc[0]}" if doc and section.__doc__ != _Section.__doc__ else "")]
        lines += [_field_line(n, f) for n, f in section.model_fields.items()]
    return "\n".join(lines)


def config_to_dict(config: Config) -> dict[str, Any]:
    return config.model_dump(mode="json", by_alias=True)


def config_to_yaml(config: Config) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(config_to_yaml(config))
