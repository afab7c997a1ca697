"""Early stopping and ReduceLROnPlateau as plain state machines, with Keras' exact rules.

Keras' own callbacks reset their state in `on_train_begin` (FACTS: `EarlyStopping` resets
`wait`, `best` and `best_weights`; `ReduceLROnPlateau` resets `wait`, `best` and `cooldown`), so
a resumed run would forget them, and they act on one model, not on each tower of a fused job.
These classes hold the same state and apply the same rules (keras/src/callbacks/
early_stopping.py, reduce_lr_on_plateau.py, monitor_callback.py; tests/test_stopping.py runs
both on the same sequences), their state goes into each epoch's backup (`state`/`load`), and
one instance serves a single run or one tower. No Keras here: the caller snapshots weights and
sets the learning rate.
"""

from __future__ import annotations

import operator

import numpy as np

from .tasks import GREATER_IS_BETTER


def monitor_op(monitor: str, mode: str):
    """Keras' `_set_monitor_op`: less for losses and errors, greater for accuracy (in auto)."""
    if mode == "min":
        return operator.lt
    if mode == "max":
        return operator.gt
    name = monitor.removeprefix("val_")
    return operator.gt if GREATER_IS_BETTER.get(name, False) else operator.lt


class _Monitored:
    """The improvement test of Keras' MonitorCallback: `op(current - min_delta, best)`."""

    def __init__(self, monitor: str, mode: str, min_delta: float):
        self.monitor = monitor
        self.op = monitor_op(monitor, mode)
        self.min_delta = abs(min_delta) * (-1 if self.op is operator.lt else 1)
        self.best: float | None = None
        self.wait = 0

    def improved(self, current: float, reference: float | None) -> bool:
        if reference is None:
            return True
        return bool(self.op(current - self.min_delta, reference))


class EarlyStopping(_Monitored):
    """Keras' EarlyStopping rule. `step` returns what the caller must do this epoch."""

    SNAPSHOT, STOP = "snapshot", "stop"

    def __init__(self, settings: dict):
        super().__init__(settings["monitor"], settings["mode"], settings["min_delta"])
        self.patience = settings["patience"]
        self.baseline = settings["baseline"]
        self.restore_best_weights = settings["restore_best_weights"]
        self.start_from_epoch = settings["start_from_epoch"]
        self.stopped_epoch = 0  # 0-based, as Keras' (0: not stopped)
        self.best_epoch = 0
        self.has_best_weights = False

    def step(self, epoch: int, current: float | None) -> set:
        """The epoch's decision: {SNAPSHOT} to keep the weights now as the best, {STOP}."""
        actions: set = set()
        if current is None or epoch < self.start_from_epoch:
            return actions
        if self.restore_best_weights and not self.has_best_weights:
            actions.add(self.SNAPSHOT)
            self.has_best_weights = True
            self.best_epoch = epoch
        self.wait += 1
        if self.improved(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                actions.add(self.SNAPSHOT)
            if self.baseline is None or self.improved(current, self.baseline):
                self.wait = 0
            return actions
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            actions.add(self.STOP)
        return actions

    @property
    def stopped(self) -> bool:
        return self.stopped_epoch > 0

    def summary(self) -> dict:
        """What metrics.json records: 1-based epochs, None where it did not happen."""
        return {
            "stopped_epoch": self.stopped_epoch + 1 if self.stopped else None,
            "restored_best_epoch": (
                self.best_epoch + 1 if self.restore_best_weights and self.has_best_weights else None
            ),
            "monitor": self.monitor,
            "best": self.best,
        }

    def state(self) -> dict:
        return {k: getattr(self, k) for k in ("wait", "best", "stopped_epoch", "best_epoch",
                                             "has_best_weights")}  # fmt: skip

    def load(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


class Plateau(_Monitored):
    """Keras' ReduceLROnPlateau rule. `step` returns the new learning rate, or None."""

    def __init__(self, settings: dict):
        super().__init__(settings["monitor"], settings["mode"], settings["min_delta"])
        self.factor = settings["factor"]
        self.patience = settings["patience"]
        self.cooldown = settings["cooldown"]
        self.min_lr = settings["min_lr"]
        self.cooldown_counter = 0
        self.reductions: list = []  # (1-based epoch, new learning rate)

    def step(self, epoch: int, current: float | None, lr: float) -> float | None:
        if current is None:
            return None
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self.improved(current, self.best):
            self.best = current
            self.wait = 0
        elif not self.cooldown_counter > 0:
            self.wait += 1
            if self.wait >= self.patience and lr > np.float32(self.min_lr):
                new_lr = max(lr * self.factor, self.min_lr)
                self.cooldown_counter = self.cooldown
                self.wait = 0
                self.reductions.append([epoch + 1, new_lr])
                return new_lr
        return None

    def summary(self) -> dict:
        return {"monitor": self.monitor, "reductions": self.reductions}

    def state(self) -> dict:
        return {k: getattr(self, k) for k in ("wait", "best", "cooldown_counter", "reductions")}

    def load(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)
