"""A training run's settings (`TrainConfig`, saved in config.json) and the trainer's errors."""

from __future__ import annotations

import dataclasses
import logging
import sys
from dataclasses import dataclass, field
from typing import Any

from instrument_ai.device.errors import InstrumentAIError
from instrument_ai.device.frontend import DEFAULT_SPEC, FrontendSpec
from instrument_ai.train.augment import AudioAugment, FeatureAugment
from instrument_ai.train.features import (
    DEFAULT_HOP_SECONDS,
    SILENCE_DBFS,
)
from instrument_ai.train.models import PITCH_FILL, PRESETS
from instrument_ai.train.teacher import TEACHERS

log = logging.getLogger(__name__)

BALANCES = ("balanced", "sqrt", "none")
MONITORS = {"val_note_accuracy": "max", "val_accuracy": "max", "val_loss": "min"}


class TrainError(InstrumentAIError):
    """A training request that cannot run (bad data, split, option, memory); the message is one line."""


class TrainingInterrupted(TrainError):
    """Ctrl-C during training: the last finished epoch is checkpointed and the run can be resumed."""

    exit_code = 130


@dataclass
class TrainConfig:
    """Every choice of a training run. None means "the preset's default" (see models.PRESETS)."""

    data: str
    out: str
    preset: str = "edge"
    epochs: int | None = None
    seed: int = 0
    batch_size: int | None = None
    learning_rate: float | None = None
    label_smoothing: float | None = None
    mixup_alpha: float | None = None
    patience: int | None = None
    monitor: str = "val_note_accuracy"
    split: str | None = None
    """A splits.json file; None: the corpus' splits.json if present, else an automatic split."""
    holdout: list[str] = field(default_factory=list)
    """Libraries (or lineages) kept out of training and validation: the test set of leave-one-library-out."""
    valid_fraction: float = 0.15
    families: list[str] | None = None
    other_kinds: str = "all"
    """Which `other` clips train: ``all``, or ``unpitched`` - the `other` clips of libraries whose catalogue
    entry says they are pitched (tabla, slit drums, birdsong: `train/sources/other_kinds.py`) are left out."""
    jobs: int = 0
    """Feature-extraction processes; 0 = one per CPU."""
    cache: str | None = None
    """Feature-cache folder; None = ~/.cache/instrument-ai."""
    frontend_spec: dict[str, Any] | None = None
    """None = the device's DEFAULT_SPEC."""
    stage: str | None = None
    """The frontend output the model takes ("mfcc" or "log_mel"); None = the preset's."""
    window_seconds: float = 1.0
    hop_seconds: float = DEFAULT_HOP_SECONDS
    silence_dbfs: float = SILENCE_DBFS
    augment_copies: int | None = None
    audio_augment: dict[str, Any] = field(default_factory=dict)
    """Overrides of the preset's AudioAugment fields (copies comes from augment_copies)."""
    feature_augment: dict[str, Any] | None = None
    """FeatureAugment fields; None = enabled as the preset says, with default ranges."""
    balance: str = "balanced"
    real_weight: float = 1.0
    """Within each family, a note from a real-recording source is drawn this many times as often as a
    rendered one: real notes are few beside thousands of SoundFont renders and would otherwise barely count."""
    windows_per_note: float | None = None
    """Training windows per training note per epoch; None = the preset's."""
    onset_fraction: float | None = None
    """Share of training windows cut as the device sees a note's first second (onset, then silence frames);
    None = the preset's."""
    max_minutes: float | None = None
    """Stop after the epoch that crosses this wall-clock budget (counted from the start of training)."""
    max_valid_windows: int = 8000
    """Validation windows scored after every epoch (whole notes, a fixed random subset when there are more)."""
    calibration_windows: int = 512
    calibration_valid_windows: int = 3000
    max_memory_gb: float | None = None
    """Refuse feature sets bigger than this; None = 60 % of the available memory."""
    teacher: str | None = None
    """Distil a teacher into the model ("gbm": gradient boosting on whole-note statistics, fitted out of fold on
    the training sources only; see teacher.py); None: hard labels only."""
    teacher_weight: float = 0.5
    """Share of the teacher's soft targets in each window's target (the rest is the note's hard label)."""
    teacher_file: str | None = None
    """The pinned AudioSet tagger weights (train/teachers.toml) for ``teacher="gbm-audioset"``."""
    verbose: int = 1
    """0 silent, 1 progress (Keras bar on a terminal, a line per epoch otherwise)."""

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise TrainError(f"unknown preset {self.preset!r}; choose from {', '.join(PRESETS)}")
        if self.stage is None:
            self.stage = self.defaults.stage
        if self.stage not in ("mfcc", "log_mel", "mel_power"):
            raise TrainError(f"unknown feature stage {self.stage!r}; choose from mfcc, log_mel, mel_power")
        if self.monitor not in MONITORS:
            raise TrainError(f"unknown monitor {self.monitor!r}; choose from {', '.join(MONITORS)}")
        if self.balance not in BALANCES:
            raise TrainError(f"unknown balance {self.balance!r}; choose from {', '.join(BALANCES)}")
        for name in ("epochs", "batch_size", "patience"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise TrainError(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if not 0.0 < self.valid_fraction < 1.0:
            raise TrainError(f"valid fraction must be between 0 and 1, got {self.valid_fraction}")
        if self.windows_per_note is not None and not self.windows_per_note > 0:
            raise TrainError("windows per note must be positive")
        if not self.real_weight > 0:
            raise TrainError(f"real weight must be positive, got {self.real_weight}")
        if self.onset_fraction is not None and not 0.0 <= self.onset_fraction <= 1.0:
            raise TrainError(f"onset fraction must be between 0 and 1, got {self.onset_fraction}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise TrainError("max minutes must be positive")
        if self.augment_copies is not None and not 0 <= self.augment_copies <= 16:
            raise TrainError(f"augment copies must be in 0..16, got {self.augment_copies}")
        if self.max_memory_gb is not None and not self.max_memory_gb > 0:
            raise TrainError("max memory must be a positive number of GB")
        from instrument_ai.train.sources.other_kinds import check_other_kinds

        check_other_kinds(self.other_kinds)
        if self.teacher is not None and self.teacher not in TEACHERS:
            raise TrainError(f"unknown teacher {self.teacher!r}; choose from {', '.join(TEACHERS)}")
        if not 0.0 < self.teacher_weight <= 1.0:
            raise TrainError(f"teacher weight must be in (0, 1], got {self.teacher_weight}")
        if (self.teacher == "gbm-audioset") != (self.teacher_file is not None):
            raise TrainError("--teacher gbm-audioset needs --teacher-file (the pinned mn04_as weights), and only it")
        if self.teacher_file is not None:  # a file that is not the pinned one: TeacherFileError, exit 2
            from instrument_ai.train.teacher_file import verified_teacher_file

            verified_teacher_file(self.teacher_file)
        if self.window_seconds <= 0 or self.hop_seconds <= 0:
            raise TrainError("window and hop seconds must be positive")

    # -- defaults resolved --
    @property
    def defaults(self) -> Any:
        return PRESETS[self.preset]

    def resolved(self) -> TrainConfig:
        """A copy with every None replaced by the preset's default (what the run actually uses)."""
        d = self.defaults
        return dataclasses.replace(
            self,
            epochs=self.epochs or d.epochs,
            batch_size=self.batch_size or d.batch_size,
            learning_rate=d.learning_rate if self.learning_rate is None else self.learning_rate,
            label_smoothing=d.label_smoothing if self.label_smoothing is None else self.label_smoothing,
            mixup_alpha=d.mixup_alpha if self.mixup_alpha is None else self.mixup_alpha,
            patience=self.patience or d.patience,
            windows_per_note=self.windows_per_note or d.windows_per_note,
            onset_fraction=d.onset_fraction if self.onset_fraction is None else self.onset_fraction,
            augment_copies=d.augment_copies if self.augment_copies is None else self.augment_copies,
            feature_augment=self.feature_augment_settings().to_dict(),
            frontend_spec=self.spec().to_dict(),
        )

    def spec(self) -> FrontendSpec:
        """The frontend spec, saying which stage the model takes when it is one a device runs (mfcc, log_mel)."""
        try:
            spec = DEFAULT_SPEC if self.frontend_spec is None else FrontendSpec.from_dict(dict(self.frontend_spec))
            if self.stage in ("mfcc", "log_mel") and spec.stage != self.stage:
                spec = dataclasses.replace(spec, stage=self.stage)
            return spec
        except ValueError as exc:
            raise TrainError(str(exc)) from None

    def audio_augment_settings(self) -> AudioAugment:
        copies = self.defaults.augment_copies if self.augment_copies is None else self.augment_copies
        try:
            # the renditions' seed is not the run's: runs with other seeds share one cached extraction
            return AudioAugment.from_dict({**self.defaults.audio_augment, **self.audio_augment, "copies": copies})
        except (ValueError, TypeError) as exc:
            raise TrainError(f"audio augmentation: {exc}") from None

    def feature_augment_settings(self) -> FeatureAugment:
        try:
            if self.feature_augment is None:
                return FeatureAugment(enabled=self.defaults.feature_augment)
            return FeatureAugment.from_dict(self.feature_augment)
        except (ValueError, TypeError) as exc:
            raise TrainError(f"feature augmentation: {exc}") from None

    # -- serialisation --
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of `to_dict`; refuses unknown fields (a config from a newer version)."""
        if not isinstance(data, dict):
            raise TrainError("train config must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TrainError(f"train config: unknown field(s) {', '.join(unknown)}")
        if "onset_fraction" not in data:
            # Written before the 0.3.0 recipe: keep what that run was trained with (no onset windows, and
            # AudioAugment's own defaults where the presets now set the pitch-filling ones).
            old_audio = {k: v for k, v in AudioAugment().to_dict().items() if k in PITCH_FILL}
            data = {**data, "onset_fraction": 0.0, "audio_augment": {**old_audio, **data.get("audio_augment", {})}}
        try:
            return cls(**data)
        except TypeError as exc:
            raise TrainError(f"train config: {exc}") from None


def say(config: TrainConfig, message: str) -> None:
    if config.verbose:
        print(message, file=sys.stderr, flush=True)


def warn(config: TrainConfig, message: str, warnings: list[str]) -> None:
    """Record a warning in the run (config.json data.warnings) and show it once."""
    warnings.append(message)
    if config.verbose:
        print(f"warning: {message}", file=sys.stderr, flush=True)
    else:
        log.warning(message)


