"""Learning-rate schedules with ``torch.optim.lr_scheduler``'s and Caffe's formulas, in closed form.

A schedule maps the position in training to a learning rate. The trainer sets
``optimizer.lr = schedule.lr(epoch, step)`` before every optimizer step, where
``epoch`` is the 0-based index of the epoch being trained (the number of finished
epochs) and ``step`` the number of optimizer steps taken before this one (0-based,
counted over the whole run; Caffe's ``iter``).

Each decay counts in one ``interval``: ``epoch`` (its lr changes between epochs, as when
torch's ``scheduler.step()`` is called once per epoch; the default of the torch-named
schedules) or ``step`` (after every optimizer step, as Caffe's solver; the default of
``inv``, ``poly`` and ``sigmoid``). ``onecycle`` counts steps (torch steps it after every
batch); ``constant`` and ``reduce_on_plateau`` do not depend on the position
(``reduce_on_plateau`` keeps its lr as state and changes it in :meth:`Schedule.epoch_end`).

Every schedule takes a linear warmup, ``warmup_epochs`` or ``warmup_steps`` (one of them):
for the first w units the lr is ``start * (k + 1) / (w + 1)`` at unit k (``start`` = the
schedule's own first lr), then the schedule runs over the remaining units from its start
(torch's ``SequentialLR([LinearLR(start_factor=1/(w+1), total_iters=w), schedule],
milestones=[w])``). A warmup in steps needs a schedule that counts steps (or none).

Closed forms (``base`` = the optimizer's ``lr``; ``t`` = the position in the interval after
the warmup; ``T`` = the units in the run after the warmup, ``train.epochs`` or the steps of
``train.epochs``):

=================  =====================================================================
constant           base
step               base * gamma ** (t // step_size)                      (StepLR)
multistep          base * gamma ** (number of milestones <= t)           (MultiStepLR)
exponential        base * gamma ** t                                     (ExponentialLR)
cosine             eta_min + (base - eta_min) * (1 + cos(pi * t / T)) / 2 (CosineAnnealingLR,
                   T_max = T)
inv                base * (1 + gamma * t) ** -power                      (Caffe ``inv``)
poly               base * (1 - t / T) ** power                 (Caffe ``poly``, PolynomialLR)
sigmoid            base / (1 + exp(-gamma * (t - step_size)))            (Caffe ``sigmoid``)
onecycle           OneCycleLR, cosine annealing, no momentum cycling (see :class:`OneCycle`)
reduce_on_plateau  ReduceLROnPlateau, threshold_mode "rel" (see :class:`ReduceOnPlateau`)
=================  =====================================================================

State (for resuming) is plain JSON: empty for the closed forms, the counters and
current lr for ``reduce_on_plateau``.

References:
    Caffe ``src/caffe/solvers/sgd_solver.cpp``, ``SGDSolver::GetLearningRate`` (the ``lr_policy``
    formulas ``inv``, ``poly``, ``sigmoid``); Goyal et al. 2017 (warmup),
    https://arxiv.org/abs/1706.02677
"""

from __future__ import annotations

import bisect
import itertools
import math
from typing import Any

from cnncli.callbacks import MODES, MONITORS, Monitor, resolve_monitor
from cnncli.checks import OptionError, check_choice, check_float, check_int
from cnncli.registry import Registry

#: Schedule name -> class. ``base_lr``, ``epochs`` and ``steps_per_epoch`` are passed by the
#: trainer; every other constructor argument is a ``train.schedule`` option (a subclass's
#: ``**common`` forwards :class:`Schedule`'s warmup options).
SCHEDULES = Registry("schedule", supplied=("base_lr", "epochs", "steps_per_epoch"))

#: What a decay can count (its ``interval`` option).
INTERVALS = ("epoch", "step")


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimizer steps in one epoch of ``n_train`` images: ceil(n / batch_size), less the
    last batch when it would hold a single image. This is the rule: ``loop.run_batches``
    leaves that image out of the epoch (a batch of one cannot be batch-normalized), and
    the trainer reports it."""
    n = n_train - 1 if n_train > batch_size and n_train % batch_size == 1 else n_train
    return max(1, math.ceil(n / batch_size))


class Schedule:
    """Base class: the warmup and the clock; subclasses give :meth:`at`. Subclasses take their
    options as keyword-only arguments (the YAML keys) and forward ``**common`` here.

    Args:
        base_lr: The optimizer's configured learning rate (> 0).
        epochs: Total epochs of the run, ``train.epochs`` (>= 1).
        steps_per_epoch: Optimizer steps per epoch (>= 1).
        warmup_epochs: Epochs of linear warmup (>= 0; the lr is constant within each). Default: 0.
        warmup_steps: Steps of linear warmup (>= 0), for a schedule that counts steps. Default: 0.
            With as many units as the run or more (a short trial run of a longer config,
            e.g. ``--epochs 1``), the run ends inside the warmup.

    Attributes:
        total_steps: The run's optimizer steps, the horizon of a schedule that counts steps:
            epochs * steps_per_epoch, or ``train.max_steps`` (set by :func:`make_schedule`).
        length: Units of ``interval`` after the warmup (T of the closed forms); <= 0 when the
            run ends inside the warmup.

    Raises:
        OptionError: Both warmups, a negative one, or ``warmup_steps`` before a schedule that
            changes its lr once per epoch.
    """

    type_name = "schedule"
    #: What :meth:`at` counts: ``"epoch"``, ``"step"``, or None when the lr does not depend on
    #: the position. A subclass with an ``interval`` option sets it before calling ``__init__``.
    interval: str | None = None

    def __init__(self, base_lr: float, epochs: int, steps_per_epoch: int, *, warmup_epochs: int = 0,
                 warmup_steps: int = 0):
        self.base_lr = check_float("lr", base_lr, 0.0, low_open=True)
        self.epochs = check_int("epochs", epochs, 1)
        self.steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch, 1)
        self.warmup_epochs = check_int("warmup_epochs", warmup_epochs, 0)
        self.warmup_steps = check_int("warmup_steps", warmup_steps, 0)
        if self.warmup_epochs and self.warmup_steps:
            raise OptionError("warmup_steps", "give only one of warmup_epochs and warmup_steps")
        if self.warmup_steps and self.interval == "epoch":
            raise OptionError("warmup_steps", f"{self.type_name} changes its lr once per epoch (interval: epoch); "
                              f"warm up in whole epochs with warmup_epochs, or set interval: step")
        #: Optimizer steps taken before the schedule proper starts.
        self.skipped_steps = self.warmup_steps + self.warmup_epochs * self.steps_per_epoch
        self.total_steps = self.epochs * self.steps_per_epoch

    @property
    def length(self) -> int:
        """Units of ``interval`` after the warmup (T of the closed forms); <= 0 inside the warmup."""
        if self.interval == "epoch":
            return self.epochs - self.warmup_epochs
        return self.total_steps - self.skipped_steps

    def lr(self, epoch: int, step: int) -> float:
        """Learning rate of the optimizer step ``step`` (0-based) in epoch ``epoch`` (0-based):
        the warmup, then :meth:`at` of the position after it."""
        if epoch < self.warmup_epochs:
            return self.at(0) * (epoch + 1) / (self.warmup_epochs + 1)
        if step < self.warmup_steps:
            return self.at(0) * (step + 1) / (self.warmup_steps + 1)
        return self.at(epoch - self.warmup_epochs if self.interval == "epoch" else step - self.skipped_steps)

    def at(self, t: int) -> float:  # pragma: no cover - abstract
        """The schedule's lr at position ``t`` (0-based) of its interval, after the warmup."""
        raise NotImplementedError

    def epoch_end(self, metrics: dict[str, float]) -> None:
        """Called with the epoch's metrics after validation (only ``reduce_on_plateau`` uses it)."""

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`.

        Raises:
            ValueError: If ``state`` is malformed.
        """


def _interval(value: Any) -> str:
    return check_choice("interval", value, INTERVALS)


@SCHEDULES.register("constant")
class Constant(Schedule):
    """The optimizer's lr throughout (torch: no scheduler), after the warmup if one is given."""

    def __init__(self, base_lr: float, epochs: int, steps_per_epoch: int, **common):
        super().__init__(base_lr, epochs, steps_per_epoch, **common)

    def at(self, t):
        return self.base_lr


@SCHEDULES.register("step")
class Step(Schedule):
    """lr = base * gamma ** (t // step_size), as ``torch.optim.lr_scheduler.StepLR``.

    Args:
        step_size: Epochs (or steps) between decays (>= 1). Required.
        gamma: Multiplier at each decay (> 0). Default: 0.1.
        interval: What ``t`` and ``step_size`` count: epoch or step (Caffe's ``step``). Default: epoch.
    """

    def __init__(self, base_lr, epochs, steps_per_epoch, *, step_size: int, gamma: float = 0.1,
                 interval: str = "epoch", **common):
        self.interval = _interval(interval)
        super().__init__(base_lr, epochs, steps_per_epoch, **common)
        self.step_size = check_int("step_size", step_size, 1)
        self.gamma = check_float("gamma", gamma, 0.0, low_open=True)

    def at(self, t):
        return self.base_lr * self.gamma ** (t // self.step_size)


@SCHEDULES.register("multistep")
class MultiStep(Schedule):
    """lr = base * gamma ** (number of milestones <= t), as ``MultiStepLR``.

    Args:
        milestones: Strictly increasing epoch (or step) indices (>= 1) at which lr is multiplied
            by gamma; e.g. [3, 6]: epochs 1-3 use base, 4-6 base * gamma, 7- base * gamma^2. Required.
        gamma: Default: 0.1.
        interval: epoch or step (Caffe's ``multistep`` with ``stepvalue`` milestones). Default: epoch.
    """

    def __init__(self, base_lr, epochs, steps_per_epoch, *, milestones: list, gamma: float = 0.1,
                 interval: str = "epoch", **common):
        self.interval = _interval(interval)
        super().__init__(base_lr, epochs, steps_per_epoch, **common)
        if not isinstance(milestones, (list, tuple)) or not milestones:
            raise OptionError("milestones", f"must be a non-empty list of epochs, e.g. [3, 6], got {milestones!r}")
        ms = [check_int("milestones", m, 1) for m in milestones]
        if any(b <= a for a, b in itertools.pairwise(ms)):
            raise OptionError("milestones", f"must be strictly increasing, got {ms}")
        self.milestones = ms
        self.gamma = check_float("gamma", gamma, 0.0, low_open=True)

    def at(self, t):
        return self.base_lr * self.gamma ** bisect.bisect_right(self.milestones, t)


@SCHEDULES.register("exponential")
class Exponential(Schedule):
    """lr = base * gamma ** t, as ``ExponentialLR`` (Caffe's ``exp`` with interval: step).

    Args:
        gamma: Multiplier per epoch (or step) (> 0). Required.
        interval: epoch or step. Default: epoch.
    """

    def __init__(self, base_lr, epochs, steps_per_epoch, *, gamma: float, interval: str = "epoch", **common):
        self.interval = _interval(interval)
        super().__init__(base_lr, epochs, steps_per_epoch, **common)
        self.gamma = check_float("gamma", gamma, 0.0, low_open=True)

    def at(self, t):
        return self.base_lr * self.gamma ** t


@SCHEDULES.register("cosine")
class Cosine(Schedule):
    """Cosine annealing over the run (after the warmup, if any).

    lr = eta_min + (base - eta_min) * (1 + cos(pi * t / T)) / 2 (``CosineAnnealingLR`` with
    T_max = T, the units after the warmup; the last one's lr is just above eta_min). With
    ``warmup_epochs`` w this is torch's ``SequentialLR([LinearLR(start_factor=1/(w+1),
    total_iters=w), CosineAnnealingLR(T_max=T)], milestones=[w])``.

    Args:
        eta_min: Final learning rate (>= 0). Default: 0.
        interval: epoch or step (anneal after every step). Default: epoch.

    Raises:
        OptionError: On ``eta_min`` above ``base_lr`` (the lr would rise instead of anneal),
            or a bad option value.

    References:
        Loshchilov & Hutter 2016 (SGDR), https://arxiv.org/abs/1608.03983
    """

    def __init__(self, base_lr, epochs, steps_per_epoch, *, eta_min: float = 0.0, interval: str = "epoch",
                 **common):
        self.interval = _interval(interval)
        super().__init__(base_lr, epochs, steps_per_epoch, **common)
        self.eta_min = check_float("eta_min", eta_min, 0.0)
        if self.eta_min > self.base_lr:
            raise OptionError("eta_min", f"is {self.eta_min:g}, above train.optimizer.lr {self.base_lr:g}: the lr "
                              f"would rise instead of anneal. Use a final lr below the start, e.g. "
                              f"eta_min: {self.base_lr / 100:g}")

    def at(self, t):
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * t / max(self.length, 1))) / 2


@SCHEDULES.register("inv")
class Inv(Schedule):
    """lr = base * (1 + gamma * t) ** -power: Caffe's ``lr_policy: "inv"``.

    Caffe's LeNet solver uses gamma 0.0001, power 0.75, per iteration.

    Args:
        gamma: (>= 0). Required.
        power: (>= 0). Required.
        interval: step (Caffe's iteration) or epoch. Default: step.

    References:
        Caffe ``sgd_solver.cpp`` ``SGDSolver::GetLearningRate``;
        ``examples/mnist/lenet_solver.prototxt``
    """

    def __init__(self, base_lr, epochs, steps_per_epoch, *, gamma: float, power: float, interval: str = "step",
                 **common):
        self.interval = _interval(interval)
        super().__init__(base_lr, epochs, steps_per_epoch, **common)
        self.gamma = check_float("gamma", gamma, 0.0)
        self.power = check_float("power", power, 0.0)

    def at(self, t):
        return self.base_lr * (1.0 + self.gamma * t) ** -self.power


@SCHEDULES.register("poly")
class Poly(Schedule):
    """lr = base * (1 - t / T) ** power, reaching 0 at the end of the run (T = its units after the
    warmup): Caffe's ``lr_policy: "poly"`` with max_iter = T, torch's ``PolynomialLR`` with
    total_iters = T.

    Args:
        power: (>= 0). Default: 1.0 (linear decay; torch's default).
        interval: step (Caffe) or epoch (torch). Default: step.

    References:
        Caffe ``sgd_solver.cpp`` ``SGDSolver::GetLearningRate``
    """

    def __init__(self, base_lr, epochs, steps_per_epoch, *, power: float = 1.0, interval: str = "step", **common):
        self.interval = _interval(interval)
        super().__init__(base_lr, epochs, steps_per_epoch, **common)
        self.power = check_float("power", power, 0.0)

    def at(self, t):
        return self.base_lr * max(0.0, 1.0 - t / max(self.length, 1)) ** self.power


@SCHEDULES.register("sigmoid")
class Sigmoid(Schedule):
    """lr = base / (1 + exp(-gamma * (t - step_size))): Caffe's ``lr_policy: "sigmoid"`` (a
    negative gamma decays, centred on ``step_size``; a positive one rises).

    Args:
        gamma: Steepness, not 0 (Caffe: negative to decay). Required.
        step_size: The centre, Caffe's ``stepsize`` (>= 0). Required.
        interval: step (Caffe) or epoch. Default: step.

    References:
        Caffe ``sgd_solver.cpp`` ``SGDSolver::GetLearningRate``
    """

    def __init__(self, base_lr, epochs, steps_per_epoch, *, gamma: float, step_size: int,
                 interval: str = "step", **common):
        self.interval = _interval(interval)
        super().__init__(base_lr, epochs, steps_per_epoch, **common)
        self.gamma = check_float("gamma", gamma)
        if self.gamma == 0:
            raise OptionError("gamma", "must not be 0 (the lr would be base/2 throughout); Caffe uses a negative "
                              "gamma to decay, e.g. -0.001")
        self.step_size = check_int("step_size", step_size, 0)

    def at(self, t):
        z = -self.gamma * (t - self.step_size)
        if z > 0:                                  # exp(z) may overflow: the same value as exp(-z) / (1 + exp(-z))
            e = math.exp(-z)
            return self.base_lr * e / (1.0 + e)
        return self.base_lr / (1.0 + math.exp(z))


@SCHEDULES.register("onecycle")
class OneCycle(Schedule):
    """The 1cycle policy, per optimizer step, as ``torch.optim.lr_scheduler.OneCycleLR``
    (``anneal_strategy="cos"``, ``three_phase=False``, ``cycle_momentum=False``).

    With total = the steps of the run after the warmup (``total_steps``: epochs * steps_per_epoch,
    or ``train.max_steps``), initial = max_lr / div_factor,
    final = initial / final_div_factor and cos_anneal(a, b, t) = b + (a - b) (1 + cos(pi t)) / 2:
    phase 1 ends at step s1 = pct_start * total - 1 and anneals initial -> max_lr;
    phase 2 ends at step total - 1 and anneals max_lr -> final; step s of a phase
    from p0 to p1 uses t = (s - p0) / (p1 - p0). Momentum is not cycled.

    Args:
        max_lr: Peak learning rate (> 0). Default: the optimizer's lr.
        pct_start: Fraction of the steps spent rising, in (0, 1). Default: 0.3.
        div_factor: initial = max_lr / div_factor (> 0). Default: 25.
        final_div_factor: final = initial / final_div_factor (> 0). Default: 1e4.

    References:
        Smith & Topin 2017, https://arxiv.org/abs/1708.07120
    """

    interval = "step"

    def __init__(self, base_lr, epochs, steps_per_epoch, *, max_lr: float | None = None,
                 pct_start: float = 0.3, div_factor: float = 25.0, final_div_factor: float = 1e4, **common):
        super().__init__(base_lr, epochs, steps_per_epoch, **common)
        self.max_lr = self.base_lr if max_lr is None else check_float("max_lr", max_lr, 0.0, low_open=True)
        self.pct_start = check_float("pct_start", pct_start, 0.0, 1.0, low_open=True, high_open=True)
        self.div_factor = check_float("div_factor", div_factor, 0.0, low_open=True)
        self.final_div_factor = check_float("final_div_factor", final_div_factor, 0.0, low_open=True)
        self.initial_lr = self.max_lr / self.div_factor
        self.min_lr = self.initial_lr / self.final_div_factor

    @staticmethod
    def _cos(start: float, end: float, pct: float) -> float:
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)

    def at(self, t):
        total = self.length
        if total < 1:                             # the run ends inside the warmup: this is its target
            return self.initial_lr
        step = min(t, total - 1)                  # past the plan (never in a normal run): stay at the end
        phases = ((float(self.pct_start * total) - 1, self.initial_lr, self.max_lr),
                  (total - 1, self.max_lr, self.min_lr))
        start = 0.0
        for i, (end, lr0, lr1) in enumerate(phases):
            if step <= end or i == len(phases) - 1:
                # a phase of zero length (torch divides by zero there) ends at its target
                pct = (step - start) / (end - start) if end != start else 1.0
                return self._cos(lr0, lr1, pct)
            start = end
        raise AssertionError("unreachable")  # pragma: no cover


@SCHEDULES.register("reduce_on_plateau")
class ReduceOnPlateau(Schedule):
    """Multiply lr by ``factor`` when ``monitor`` stops improving, as ``ReduceLROnPlateau``
    (``threshold_mode="rel"``, eps 1e-8).

    After each epoch: the value improves if it is < best * (1 - threshold) (mode min) or
    > best * (1 + threshold) (mode max); otherwise a bad epoch is counted. During cooldown
    bad epochs are not counted. When more than ``patience`` bad epochs accumulate,
    lr = max(lr * factor, min_lr) (skipped if that changes lr by at most 1e-8), cooldown
    starts and the count resets. The new lr applies from the next epoch.

    Args:
        monitor: val_loss, val_accuracy, train_loss or train_accuracy. Default: val_loss.
        mode: auto (min for losses, max for accuracies), min or max. Default: auto.
        factor: In (0, 1). Default: 0.1.
        patience: Bad epochs tolerated (>= 0). Default: 10.
        threshold: Relative improvement that counts (>= 0). Default: 1e-4.
        cooldown: Epochs after a reduction in which bad epochs are ignored (>= 0). Default: 0.
        min_lr: Lower bound of lr (>= 0). Default: 0.
    """

    EPS = 1e-8

    def __init__(self, base_lr, epochs, steps_per_epoch, *, monitor: str = "val_loss", mode: str = "auto",
                 factor: float = 0.1, patience: int = 10, threshold: float = 1e-4, cooldown: int = 0,
                 min_lr: float = 0.0, **common):
        super().__init__(base_lr, epochs, steps_per_epoch, **common)
        check_choice("monitor", monitor, MONITORS)
        check_choice("mode", mode, MODES)
        self.tracker = Monitor(monitor, mode)
        self.factor = check_float("factor", factor, 0.0, 1.0, low_open=True, high_open=True)
        self.patience = check_int("patience", patience, 0)
        self.threshold = check_float("threshold", threshold, 0.0)
        self.cooldown = check_int("cooldown", cooldown, 0)
        self.min_lr = check_float("min_lr", min_lr, 0.0)
        self.current_lr = self.base_lr
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    @property
    def best(self) -> float:
        return self.tracker.best

    def _is_better(self, a: float) -> bool:
        if self.tracker.mode == "min":
            return a < self.best * (1.0 - self.threshold)
        return a > self.best * (self.threshold + 1.0)

    def at(self, t):
        return self.current_lr

    def epoch_end(self, metrics):
        value = float(metrics[resolve_monitor(self.tracker.monitor, "val_loss" in metrics)])
        if self._is_better(value):
            self.tracker.best = value
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            new = max(self.current_lr * self.factor, self.min_lr)
            if self.current_lr - new > self.EPS:
                self.current_lr = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0

    def state(self):
        return {**self.tracker.state(), "lr": self.current_lr, "num_bad_epochs": self.num_bad_epochs,
                "cooldown_counter": self.cooldown_counter}

    def load_state(self, state):
        self.tracker.load_state(state)
        self.current_lr = check_float("lr", state.get("lr", self.base_lr), 0.0, low_open=True)
        self.num_bad_epochs = check_int("num_bad_epochs", state.get("num_bad_epochs", 0), 0)
        self.cooldown_counter = check_int("cooldown_counter", state.get("cooldown_counter", 0), 0)


def run_epochs(epochs: int | None, max_steps: int | None, steps_per_epoch: int) -> int:
    """Epochs a run trains: ``epochs``, or with ``max_steps`` (``train.max_steps``) the epochs
    its steps start, ceil(max_steps / steps_per_epoch) (the last one may end early)."""
    return epochs if max_steps is None else math.ceil(max_steps / steps_per_epoch)


def make_schedule(name: str, options: dict[str, Any], base_lr: float, epochs: int | None,
                  steps_per_epoch: int, max_steps: int | None = None) -> Schedule:
    """Build the schedule registered as ``name``. With ``max_steps`` (a run counted in steps,
    ``epochs`` None) a schedule that counts epochs spans :func:`run_epochs` epochs and one
    that counts steps has ``total_steps = max_steps`` as its horizon.

    Raises:
        KeyError: Unknown name. ValueError/TypeError: A bad or missing option.
    """
    schedule = SCHEDULES[name](base_lr, run_epochs(epochs, max_steps, steps_per_epoch), steps_per_epoch, **options)
    if max_steps is not None:
        schedule.total_steps = max_steps
    return schedule
