"""Run configuration: which dataset a command works on and where its run directory is.

Without ``--config`` every command uses the embedded synthetic default, generated on first
use under ``runs/data/synthetic``. A YAML config names real data instead::

    data:
      train: /data/coco/annotations/instances_train2017.json
      val: /data/coco/annotations/instances_val2017.json
      images: /data/coco/images        # file_name is resolved under this root
    run_dir: runs/coco
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pseudolabel.stages.synth import SynthConfig, synthesize

DEFAULT_DATA_DIR = Path("runs/data/synthetic")
DEFAULT_RUN_DIR = Path("runs/default")


@dataclass
class DataPaths:
    train: Path
    val: Path
    images: Path


@dataclass
class Models:
    """Which foundation models a run uses: a registered name plus a checkpoint.

    ``"default"`` checkpoints are the synthetic foundation weights shipped in the package.
    """

    sam: str = "tiny_hr"
    sam_checkpoint: str | None = "default"
    detector: str = "tiny"
    detector_checkpoint: str | None = "default"
    text_encoder: str = "tiny"
    text_checkpoint: str | None = "default"


@dataclass
class TeacherTraining:
    """Teacher fine-tuning schedule. The synthetic default fits this CPU; COCO's values are
    seed 001 §4.1's (36,874 steps, lr 1e-5 -> 1e-6 at step 27,655, batch 32, 12,544 points).

    ``num_points``: §4.1 samples 12,544 points of SAM's 256 x 256 low-res logits (19%). The
    shipped ``tiny_hr`` SAM's logits are 160 x 160 = 25,600 values, so the synthetic default
    keeps §4.1's density rather than its count: 70 x 70 = 4,900 points (19% of 25,600; the
    plain ``tiny`` preset's 80 x 80 logits would take 1,225).
    """

    steps: int = 300
    batch: int = 32
    lr: float = 1e-5  # §4.1's lr (and its x0.1 drop); on the tiny_hr SAM it keeps boxes at
    lr_final: float = 1e-6  # zero-shot level, where 3e-5 cost them 0.005 mIoU (README)
    drop_at: float = 0.75
    weight_decay: float = 0.01
    num_points: int = 70 * 70
    class_lr_factor: float = 1.0  # lr multiplier of the class path's new layers (1 = §4.1)


@dataclass
class Generation:
    """Pseudo-mask generation. ``zoom_context`` > 0 decodes box prompts on zoomed crops
    (``ZoomSpec``: ours, not seed 001's, whose ViT-H sees COCO's objects at 1024 px); off
    unless a config turns it on, on (3.0) in the synthetic default, where the tiny SAM's
    160-px input leaves a median object 2 x 2 patches (README "Zoomed box prompts")."""

    zoom_context: float = 0.0
    zoom_min_side: float = 0.3

    def zoom(self, context: float | None = None):
        from pseudolabel.models.predictor import ZoomSpec

        return ZoomSpec(self.zoom_context if context is None else context, self.zoom_min_side)


SYNTHETIC_GENERATION = Generation(zoom_context=3.0)


@dataclass
class Config:
    data: DataPaths
    run_dir: Path
    synthetic: SynthConfig | None = None  # set when the data is the generated synthetic set
    models: Models = field(default_factory=Models)
    teacher: TeacherTraining = field(default_factory=TeacherTraining)
    raw: dict = field(default_factory=dict)
    generate: Generation = field(default_factory=Generation)

    @property
    def runtime(self) -> dict:
        """The ``runtime:`` block (``device``, ``precision``); flags override it."""
        return self.raw.get("runtime") or {}

    @property
    def follow_symlinks(self) -> bool:
        """``data.follow_symlinks``: image files may be symlinks leading out of the root."""
        return bool((self.raw.get("data") or {}).get("follow_symlinks", False))


def synthetic_paths(root: Path) -> DataPaths:
    return DataPaths(root / "annotations/train.json", root / "annotations/val.json",
                     root / "images")


def load_config(path: str | Path | None) -> Config:
    """Read a YAML config, or the synthetic default when ``path`` is None."""
    if path is None:
        return Config(synthetic_paths(DEFAULT_DATA_DIR), DEFAULT_RUN_DIR, SynthConfig(),
                      generate=SYNTHETIC_GENERATION)
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a config must be a mapping at the top level")
    from pseudolabel.config_check import check_config
    from pseudolabel.stages.train_student import StudentConfig

    check_config(raw, path, models=Models, teacher=TeacherTraining, student=StudentConfig,
                 synth=SynthConfig, generate=Generation)
    data = raw.get("data") or {}
    run_dir = Path(raw.get("run_dir", DEFAULT_RUN_DIR))
    models = Models(**(raw.get("models") or {}))
    teacher = TeacherTraining(**(raw.get("teacher") or {}))
    gen = Generation(**(raw.get("generate") or {}))
    if "synthetic" in data:
        synth = SynthConfig(**data["synthetic"].get("params", {}))
        return Config(synthetic_paths(Path(data["synthetic"]["root"])), run_dir, synth, models,
                      teacher, raw, gen)
    missing = [k for k in ("train", "val", "images") if k not in data]
    if missing:
        raise ValueError(f"{path}: 'data' needs keys {missing} (annotation files and image root)")
    return Config(DataPaths(Path(data["train"]), Path(data["val"]), Path(data["images"])),
                  run_dir, None, models, teacher, raw, gen)


def check_paths(cfg: Config) -> list[str]:
    """Every file or folder the config names that is missing, each with what it is."""
    problems = []
    for what, path in (("training annotations (data.train)", cfg.data.train),
                       ("validation annotations (data.val)", cfg.data.val),
                       ("image root (data.images)", cfg.data.images)):
        if cfg.synthetic is None and not Path(path).exists():
            problems.append(f"{what} not found: {path}")
    m = cfg.models
    for what, value in (("SAM checkpoint (models.sam_checkpoint)", m.sam_checkpoint),
                        ("detector checkpoint (models.detector_checkpoint)",
                         m.detector_checkpoint),
                        ("CLIP checkpoint (models.text_checkpoint)", m.text_checkpoint)):
        if value and value != "default" and ("/" in value or value.endswith(
                (".pth", ".pt", ".safetensors", ".bin"))) and not Path(value).exists():
            problems.append(f"{what} not found: {value}")
    if m.detector != "tiny" and not Path(m.detector).is_dir() and not _in_hub_cache(m.detector):
        problems.append(f"Grounding DINO folder (models.detector) not found: {m.detector} (not "
                        "a local folder, nor in the Hugging Face cache; copy the model folder "
                        "there)")
    backbone = (cfg.raw.get("student") or {}).get("backbone_checkpoint")
    if backbone and not Path(backbone).exists():
        problems.append(f"student backbone (student.backbone_checkpoint) not found: {backbone}")
    return problems


def _in_hub_cache(repo_id: str) -> bool:
    """Whether a hub model's config is in the local Hugging Face cache (usable offline)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except ValueError:  # not a valid repo id
        return False


def ensure_data(cfg: Config) -> DataPaths:
    """Generate the synthetic data if the config uses it and it is not there yet."""
    if cfg.synthetic is not None and not (cfg.data.train.is_file() and cfg.data.val.is_file()):
        synthesize(cfg.data.images.parent, cfg.synthetic)
    return cfg.data
