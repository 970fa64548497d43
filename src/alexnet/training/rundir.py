"""A run directory, the one place that names and parses its files.

``config.json``
    the resolved configuration (``training.config.to_dict``), written when a run opens;
``metrics.jsonl``
    one JSON line per finished epoch, exactly the epochs the checkpoint holds;
``checkpoint.pt``
    everything needed to continue (``training.checkpoint``), replaced atomically;
``model.safetensors``
    the final weights with their metadata;
``tensorboard/``
    event files, where asked for;
``result.json``
    a reproduction study's measurements of the finished run (its presence marks it done).

Readers (``alexnet visualize``, the reproduction studies, ``evaluate``) and the writer (the
training run) all go through this class, so a file's name and format live here alone.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import AlexNetError
from ..files import atomic_write_text

CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.jsonl"
CHECKPOINT_NAME = "checkpoint.pt"
WEIGHTS_NAME = "model.safetensors"
RESULT_NAME = "result.json"
BOARD_NAME = "tensorboard"


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_NAME

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_NAME

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_NAME

    @property
    def weights(self) -> Path:
        return self.path / WEIGHTS_NAME

    @property
    def board(self) -> Path:
        return self.path / BOARD_NAME

    def has_checkpoint(self) -> bool:
        return self.checkpoint.is_file()

    # -- the configuration ----------------------------------------------------------------

    def read_config(self) -> dict | None:
        """The saved configuration as written (a dict), or None for a directory without one."""
        if not self.config_file.is_file():
            return None
        try:
            return json.loads(self.config_file.read_text())
        except (OSError, ValueError) as e:
            raise AlexNetError(f"{self.config_file} is not readable JSON ({type(e).__name__})") from None

    def write_config(self, config: dict) -> None:
        atomic_write_text(self.config_file, json.dumps(config, indent=2) + "\n")

    # -- the metrics ----------------------------------------------------------------------

    def read_metrics(self, required: bool = False) -> list[dict]:
        """Every finished epoch's record; ``required``: a clear error for a directory without."""
        if not self.metrics_file.is_file():
            if required:
                raise AlexNetError(f"{self.metrics_file} not found: not a run directory")
            return []
        records = [json.loads(line) for line in self.metrics_file.read_text().splitlines() if line.strip()]
        if required and not records:
            raise AlexNetError(f"{self.metrics_file} has no epochs yet")
        return records

    def write_metrics(self, history: list[dict]) -> None:
        """The whole file at once (a run that opens, or resumes, rewrites exactly its epochs)."""
        atomic_write_text(self.metrics_file, "".join(json.dumps(h) + "\n" for h in history))

    def append_metrics(self, record: dict) -> None:
        with open(self.metrics_file, "a") as f:
            f.write(json.dumps(record) + "\n")

    # -- a study's measurements ----------------------------------------------------------

    @property
    def result_file(self) -> Path:
        return self.path / RESULT_NAME

    def has_result(self) -> bool:
        return self.result_file.is_file()

    def read_result(self) -> dict:
        return json.loads(self.result_file.read_text())

    def write_result(self, result: dict) -> None:
        atomic_write_text(self.result_file, json.dumps(result, indent=2) + "\n")

    # -- starting afresh ------------------------------------------------------------------

    def clear(self) -> None:
        """Remove an earlier run's state (``--overwrite``), so a directory never mixes two runs."""
        for path in (self.checkpoint, self.weights):
            path.unlink(missing_ok=True)
        shutil.rmtree(self.board, ignore_errors=True)

    def find_weights(self) -> Path:
        """The final weights, else the last checkpoint."""
        for path in (self.weights, self.checkpoint):
            if path.is_file():
                return path
        raise AlexNetError(f"{self.path} holds neither {WEIGHTS_NAME} nor {CHECKPOINT_NAME}")
