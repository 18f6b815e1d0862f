"""A sequential stack of registered layers: build from specs, forward, backward, state.

``build`` checks every layer's type and options (unless a validated config did), then
runs the shapes through each layer's own ``output_shape`` before any data is touched; every problem comes back
as a :class:`~cnncli.errors.ConfigError` located at ``model.layers[i]``, or at
``model.layers[i].option`` when a layer refuses an option's value
(the pattern of keras ``base_conv.py`` ``compute_output_shape``). No weight array,
padded input or activation may exceed ``checks.MAX_ELEMENTS`` values.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnncli.checks import OptionError, check_bool, check_float, check_int, check_size
from cnncli.errors import ConfigError, Problem
from cnncli.layers import LAYERS, Layer, parallel, resolve
from cnncli.layers.windows import to_chwn
from cnncli.registry import check_block, locate


@dataclass(frozen=True)
class LayerSpec:
    """One ``model.layers`` item: registered type name, YAML options, and where it came from."""

    type: str
    options: dict[str, Any] = field(default_factory=dict)
    path: str = ""
    line: int | None = None
    option_lines: dict[str, int] = field(default_factory=dict)
    #: True when a validated config made it (``config.validate``): :func:`build` then checks
    #: nothing again and calls each constructor once.
    checked: bool = field(default=False, compare=False, repr=False)


#: Options any layer with parameters takes besides its constructor's: how the optimizer
#: treats its parameters (Keras ``trainable``, Caffe's ``param { lr_mult decay_mult }``).
#: Checked here, applied in one place: ``optim.Optimizer`` (via :meth:`Model.trainable_params`
#: and :meth:`Model.multipliers`). Name -> (check, default).
def _multiplier(name: str):
    """The check of a multiplier: a number >= 0, or a list of them, one per parameter of the
    layer in its order (``[weight, bias]``: Caffe's one ``param`` block per blob)."""
    def check(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            if not v:
                raise OptionError(name, "must be a number >= 0 or a list of them (one per parameter: "
                                        "[weight, bias]), got []")
            return [check_float(f"{name}[{i}]", x, 0.0) for i, x in enumerate(v)]
        return check_float(name, v, 0.0)
    return check


PARAM_OPTIONS: dict[str, tuple[Any, Any]] = {
    "trainable": (lambda v: check_bool("trainable", v), True),
    "lr_mult": (_multiplier("lr_mult"), 1.0),
    "decay_mult": (_multiplier("decay_mult"), 1.0),
}


def split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(constructor options, :data:`PARAM_OPTIONS` given) of a layer's YAML options."""
    return ({k: v for k, v in options.items() if k not in PARAM_OPTIONS},
            {k: v for k, v in options.items() if k in PARAM_OPTIONS})


def _param_option_problems(spec: LayerSpec, given: dict[str, Any]) -> list[Problem]:
    """Problems of the :data:`PARAM_OPTIONS` values of ``spec``, each at its option."""
    problems = []
    for k, v in given.items():
        try:
            PARAM_OPTIONS[k][0](v)
        except OptionError as e:
            problems.append(Problem(f"{spec.path}.{k}", e.detail, spec.option_lines.get(k) or spec.line))
    return problems


def _check_param_options(spec: LayerSpec, type_name: str, layer: Layer, given: dict[str, Any]) -> None:
    """Refuse :data:`PARAM_OPTIONS` on a layer without parameters, and a multiplier list whose
    length is not the layer's parameter count.

    Raises:
        ConfigError: At the option.
    """
    for k, v in given.items():
        where = (f"{spec.path}.{k}", spec.option_lines.get(k) or spec.line)
        if not layer.params:
            raise ConfigError([Problem(where[0], f"{type_name} has no parameters, so '{k}' has nothing to act on; "
                                       f"remove it", where[1])])
        if isinstance(v, (list, tuple)) and len(v) != len(layer.params):
            raise ConfigError([Problem(where[0], f"has {len(v)} values but {type_name} has {len(layer.params)} "
                                       f"parameters ({', '.join(layer.params)}): give one per parameter, or one "
                                       f"number for all", where[1])])


def _builder_args(cls: type, inferred: dict[str, int], rng: np.random.Generator, dtype) -> dict[str, Any]:
    """The constructor arguments ``build`` supplies: the inferred sizes, and ``rng``/``dtype``
    where the constructor takes them."""
    accepted = inspect.signature(cls.__init__).parameters
    return {**inferred, **{k: v for k, v in (("rng", rng), ("dtype", dtype)) if k in accepted}}


def _dry_run(cls: type, options: dict[str, Any]) -> None:
    """Run a layer's constructor on ``options`` without allocating (``init.shapes_only``),
    the inferred sizes set to 1: it checks the values that need no input shape."""
    from cnncli.layers.init import shapes_only

    with shapes_only():
        cls(**options, **_builder_args(cls, dict.fromkeys(cls.inferred, 1), np.random.default_rng(0), np.float32))


def check_spec(spec: LayerSpec, values: bool = True) -> list[Problem]:
    """Problems of one layer that need no input shape: an unknown type, unknown or missing
    options, and (with ``values``) option values the constructor refuses (``kernel_size: "3"``,
    ``p: 1.5``, ``stride: 0``) or :data:`PARAM_OPTIONS` values, each at its option.
    Shape-dependent errors (and :data:`PARAM_OPTIONS` on a layer without parameters) are left
    to :func:`build`."""
    own, given = split_options(spec.options)
    found = check_block(LAYERS, spec.type, own, path=spec.path, line=spec.line, option_lines=spec.option_lines,
                        typed=False, construct=_dry_run if values else None)[1]
    return found + (_param_option_problems(spec, given) if values else [])


def check_specs(specs: list[LayerSpec]) -> list[Problem]:
    """:func:`check_spec` of every layer, in order, then the rule for the whole stack: it ends in
    logits, not in a layer that ``outputs_probabilities`` (softmax, log_softmax)."""
    problems = [p for spec in specs for p in check_spec(spec)]
    last = specs[-1] if specs else None
    try:
        cls = LAYERS.get(last.type) if last is not None else None
    except KeyError:
        cls = None                                   # reported by check_spec
    if cls is not None and cls.outputs_probabilities:
        problems.append(Problem(last.path, f"the model ends with {cls.type_name}, but its output must be logits: "
                                f"the loss applies log-softmax itself (as PyTorch's CrossEntropyLoss, Keras's "
                                f"from_logits=True), and eval, predict and export read the output as logits. Remove "
                                f"this last layer; eval and predict still report probabilities.", last.line))
    return problems


class Model:
    """Sequential model over NCHW batches.

    Attributes:
        layers: The layer objects, in order.
        input_shape: One sample's shape (C, H, W) or (F,).
        shapes: Output shape of each layer (no batch axis).
        rng: The generator that drew the initial weights and draws dropout masks.
        settings: Per layer, its :data:`PARAM_OPTIONS` values (``{}`` for a layer without
            parameters). A layer with ``trainable: false`` is frozen: the optimizer never sees
            its parameters, and in training it runs in evaluation mode (a frozen batchnorm
            normalizes with its running statistics and does not update them, as torchvision's
            ``FrozenBatchNorm2d``); gradients still flow through it to the layers before.
    """

    def __init__(self, layers: list[Layer], input_shape: tuple[int, ...],
                 shapes: list[tuple[int, ...]], rng: np.random.Generator, dtype,
                 settings: list[dict[str, Any]] | None = None):
        self.layers = layers
        self.input_shape = tuple(input_shape)
        self.shapes = shapes
        self.rng = rng
        self.dtype = np.dtype(dtype)
        self.settings = settings if settings is not None else [{} for _ in layers]
        self.frozen = [s.get("trainable", True) is False for s in self.settings]
        #: (part bounds, per part its copies of the layers) of a training forward split over
        #: the threads, until its backward (:meth:`_forward_parts`)
        self._parts: tuple[list[int], list[list[Layer]]] | None = None

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.shapes[-1] if self.shapes else self.input_shape

    def training_bytes_per_image(self) -> int:
        """Bytes one image adds to a training step: the sum of the layers'
        ``training_values`` (each output and its gradient, plus a convolution's im2col
        matrix kept for backward: an upper bound for a conv trained by rows, which keeps
        its input only) at the model's dtype. A rough estimate, used to
        refuse batches that cannot fit before any memory is touched (for configs/mnist-small.yaml
        at batch 1,500 it gives 1.8 GiB; the measured peak of such a run was 1.27 GB)."""
        values = sum(layer.training_values(out) for layer, out in zip(self.layers, self.shapes))
        return values * self.dtype.itemsize

    #: Evaluation runs larger batches in chunks (:meth:`eval_chunks`), unless a layer mixes
    #: samples in evaluation; with T threads (``layers.parallel``) T chunks run at once. A
    #: chunk's largest layer output is at most this many bytes (bounded memory: a conv's
    #: lowered input grows with the chunk).
    EVAL_CHUNK_BYTES = 16 * 2**20
    #: ... and a batch is cut into a multiple of this many chunks (balanced over 1, 2 or 4
    #: threads) while each keeps at least :data:`EVAL_MIN_CHUNK` images; a batch that
    #: cannot give two such chunks runs in one pass.
    EVAL_CHUNKS_MULTIPLE = 4
    EVAL_MIN_CHUNK = 64

    def eval_chunks(self, n: int) -> list[int] | None:
        """Bounds of the chunks an evaluation batch of ``n`` images runs in (chunk i is images
        ``bounds[i]:bounds[i + 1]``), or None for one pass.

        The fewest chunks whose largest layer output fits :data:`EVAL_CHUNK_BYTES`, rounded
        up to a multiple of :data:`EVAL_CHUNKS_MULTIPLE` if the chunks keep
        :data:`EVAL_MIN_CHUNK` images; equal sizes (differing by at most one). Example:
        LeNet-5 (largest output 6 x 28 x 28 float32, 18.4 KiB an image) evaluates a batch
        of 1000 in 4 chunks of 250; ``configs/mnist-small.yaml`` (32 x 28 x 28) in 8 of 125.

        The bounds depend on ``n`` and the model only, never on the thread count, so neither
        do the results' bits (a GEMM's or a SIMD loop's rounding can depend on where a chunk
        starts and ends).
        """
        largest = max(int(np.prod(s)) for s in (self.input_shape, *self.shapes)) * self.dtype.itemsize
        cap = max(self.EVAL_MIN_CHUNK, self.EVAL_CHUNK_BYTES // max(largest, 1))
        k = -(-n // cap)
        m = self.EVAL_CHUNKS_MULTIPLE
        if n // (-(-k // m) * m) >= self.EVAL_MIN_CHUNK:
            k = -(-k // m) * m
        return None if k <= 1 else [n * i // k for i in range(k + 1)]

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """(N, *input_shape) -> (N, *output_shape) logits, same dtype.

        Image batches are copied once into CHWN memory order (still logically NCHW; see
        ``layers/windows.py``), which every layer keeps and the heavy ones are fast in.
        In evaluation (``training=False``) the layers keep nothing for a backward pass and
        larger batches run in chunks (:meth:`eval_chunks`), spread over the threads; results are
        those of one pass up to float rounding (each sample is computed independently in
        evaluation), and the same bits for any thread count. In training, a batch is split
        by samples over the threads when no layer trains on whole-batch statistics
        (:meth:`_forward_parts`). Call a layer's own
        ``forward`` to back-propagate through evaluation mode.
        """
        if training:
            parts = self._sample_parts(x.shape[0])
            return self._run(x, True) if parts is None else self._forward_parts(x, parts)
        bounds = self.eval_chunks(x.shape[0])
        if bounds is None or any(getattr(l, "mixes_samples_in_eval", False) for l in self.layers):
            return self._run(x, False)
        parts: list = [None] * (len(bounds) - 1)

        def run(i: int) -> None:
            parts[i] = self._run(x[bounds[i]:bounds[i + 1]], False)
        parallel.over_items(run, len(parts))      # chunks on all threads, each with one BLAS thread
        return np.concatenate(parts)

    #: A training batch is split over the threads when each part gets at least this many images.
    MIN_PART = 16

    def _sample_parts(self, n: int) -> list[int] | None:
        """Bounds of the parts a training batch of ``n`` images is split into, one per thread
        (``layers.parallel.workers``), or None to run it whole: with one thread, inside a
        thread's share of other work, for parts of fewer than :data:`MIN_PART` images, or
        when a layer trains on statistics of the whole batch (batchnorm, unless frozen with
        running statistics to normalize by)."""
        k = parallel.workers()
        if k <= 1 or parallel.nested() or n < k * self.MIN_PART:
            return None
        if any((layer.normalizes_over_batch and not frozen) or getattr(layer, "mixes_samples_in_eval", False)
               for layer, frozen in zip(self.layers, self.frozen)):
            return None
        return [n * i // k for i in range(k + 1)]

    def _forward_parts(self, x: np.ndarray, parts: list[int]) -> np.ndarray:
        """Training forward of a batch split by samples: part i (images ``parts[i]:parts[i+1]``)
        runs through its own shallow copies of the layers (the same weight arrays, their own
        caches and gradients; part 0 through the layers themselves), the parts on all threads
        at once with one BLAS thread each (``parallel.over_items``), as data-parallel
        training does across devices (PyTorch ``DistributedDataParallel``). No layer waits
        for another thread between the layers, which a 2-core machine pays for dearly.

        Masks of the dropout layers are drawn here for the whole batch, in layer order: the
        generator's draws, and so the masks, are those of an unsplit pass. :meth:`backward`
        then sums the parts' gradients in part order, so the bits depend on the thread count
        (the number of parts), not on which thread ran which part.

        Shape and dtype as :meth:`forward`: (N, *input_shape) in, (N, *output_shape) logits out.
        """
        k = len(parts) - 1
        copies = [self.layers] + [[_part_copy(layer) for layer in self.layers] for _ in range(k - 1)]
        for j, layer in enumerate(self.layers):
            keep = None if self.frozen[j] else layer.draw_mask((x.shape[0], *(self.shapes[j - 1] if j else self.input_shape)))
            if keep is not None:
                for i, own in enumerate(copies):
                    own[j].keep = keep[parts[i]:parts[i + 1]]
        outs: list = [None] * k

        def run(i: int) -> None:
            h = x[parts[i]:parts[i + 1]]
            if h.ndim == 4:
                h = to_chwn(h)
            for layer, frozen in zip(copies[i], self.frozen):
                h = layer.forward(h, not frozen)
            outs[i] = h
        parallel.over_items(run, k)
        self._parts = (parts, copies)
        return np.concatenate(outs)

    def _run(self, x: np.ndarray, training: bool) -> np.ndarray:
        if x.ndim == 4:
            x = to_chwn(x)
        if not training:                   # nothing kept for a backward pass
            for layer in self.layers:
                x = layer.infer(x)
            return x
        for layer, frozen in zip(self.layers, self.frozen):
            x = layer.forward(x, not frozen)
        return x

    def backward(self, dy: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """Back-propagate d loss / d output; fills every layer's ``grads``.

        Returns d loss / d input, or None with ``input_grad=False`` (training needs no
        input gradient, so a first layer with ``backward_params`` skips computing it).
        Each layer's forward cache is released once used: one backward per forward. After
        a forward split by samples (:meth:`_forward_parts`) each part runs back through its
        own layers on the threads, and each gradient is the sum of the parts', in part order.
        """
        if self._parts is None:
            return _backward(self.layers, dy, input_grad)
        (parts, copies), self._parts = self._parts, None
        dxs: list = [None] * len(copies)

        def run(i: int) -> None:
            dxs[i] = _backward(copies[i], dy[parts[i]:parts[i + 1]], input_grad)
        parallel.over_items(run, len(copies))
        for j, layer in enumerate(self.layers):
            for name in layer.grads:
                total = layer.grads[name]
                for own in copies[1:]:
                    total = total + own[j].grads[name]
                layer.grads[name] = total
        return None if dxs[0] is None else np.concatenate(dxs)

    def params(self) -> dict[str, np.ndarray]:
        """Trainable arrays keyed ``"{index}.{name}"`` (the arrays themselves, not copies)."""
        return {f"{i}.{n}": a for i, l in enumerate(self.layers) for n, a in l.params.items()}

    def trainable_params(self) -> dict[str, np.ndarray]:
        """:meth:`params` less those of frozen layers (``trainable: false``): what the
        optimizer updates (torch: the parameters with ``requires_grad``)."""
        return {f"{i}.{n}": a for i, l in enumerate(self.layers) if not self.frozen[i] for n, a in l.params.items()}

    def multipliers(self) -> dict[str, tuple[float, float]]:
        """``{key: (lr_mult, decay_mult)}`` of the trainable parameters (Caffe's per-layer
        ``param`` multipliers; (1, 1) unless the layer sets them; a list gives one per
        parameter, in the layer's order)."""
        def each(value: Any, j: int) -> float:
            return float(value[j] if isinstance(value, (list, tuple)) else value)
        return {f"{i}.{n}": (each(self.settings[i]["lr_mult"], j), each(self.settings[i]["decay_mult"], j))
                for i, l in enumerate(self.layers) if not self.frozen[i] for j, n in enumerate(l.params)}

    def grads(self) -> dict[str, np.ndarray]:
        return {f"{i}.{n}": l.grads[n] for i, l in enumerate(self.layers) for n in l.params}

    def buffers(self) -> dict[str, np.ndarray]:
        return {f"{i}.{n}": a for i, l in enumerate(self.layers) for n, a in l.buffers.items()}

    def num_params(self) -> int:
        return sum(a.size for a in self.params().values())

    def array_bytes(self) -> int:
        """Bytes of the parameters and buffers, from their shapes and dtypes: also right for a
        model built under ``init.shapes_only`` (weights are zero views, nothing allocated),
        which is how a model too large for memory is sized before it is built."""
        return sum(a.size * a.dtype.itemsize for a in (*self.params().values(), *self.buffers().values()))

    def load_arrays(self, params: dict[str, np.ndarray], buffers: dict[str, np.ndarray]) -> None:
        """Copy saved arrays into the model in place (optimizer references stay valid).

        Nothing is copied unless every array fits (:meth:`check_arrays`).

        Raises:
            ValueError: Naming the first missing, unexpected, mis-shaped or mis-typed array.
        """
        for target, a in self.check_arrays(params, buffers):
            target[...] = a

    def check_arrays(self, params: dict[str, np.ndarray], buffers: dict[str, np.ndarray]
                     ) -> list[tuple[np.ndarray, np.ndarray]]:
        """(model array, saved array) pairs if every saved array fits: same keys, same shapes,
        and the same kind of number (floating-point for float arrays, integers for integer
        counters). Reads only shapes and dtypes, so a ``shapes_only`` model can check them.

        Raises:
            ValueError: Naming the first missing, unexpected, mis-shaped or mis-typed array.
        """
        pairs = []
        for kind, mine, theirs in (("parameter", self.params(), params), ("buffer", self.buffers(), buffers)):
            missing = sorted(set(mine) - set(theirs))
            extra = sorted(set(theirs) - set(mine))
            if missing or extra:
                raise ValueError(f"{kind}s do not match the model: missing {missing or 'none'}, "
                                 f"unexpected {extra or 'none'}")
            for key, a in theirs.items():
                a = np.asarray(a)
                if a.shape != mine[key].shape:
                    raise ValueError(f"{kind} {key} has shape {a.shape}, the model needs {mine[key].shape}")
                want = "f" if mine[key].dtype.kind == "f" else "iu"
                if a.dtype.kind not in want or a.dtype.names is not None:
                    raise ValueError(f"{kind} {key} holds {a.dtype} values, the model needs {mine[key].dtype}")
                pairs.append((mine[key], a))
        return pairs


def _part_copy(layer: Layer) -> Layer:
    """A shallow copy of ``layer`` for one part of a split batch (``Model._forward_parts``):
    the same ``params`` and ``buffers`` (one set of weights), its own cache and gradients."""
    own = copy.copy(layer)
    own.grads, own._cache = {}, None
    return own


def _backward(layers: list[Layer], dy: np.ndarray, input_grad: bool) -> np.ndarray | None:
    """``Model.backward`` through ``layers`` (the model's own, or one part's copies)."""
    for layer in layers[:0:-1]:
        dy = layer.backward(dy)
        layer._cache = None            # its forward cache is spent: free it before the next step
    if not layers:
        return dy
    first = layers[0]
    if not input_grad and hasattr(first, "backward_params"):
        first.backward_params(dy)
        dx = None
    else:
        dx = first.backward(dy)
    first._cache = None
    return dx


def summarize(model: "Model") -> list[dict[str, Any]]:
    """One row per layer: index, type, output shape, trainable parameters, non-trainable
    values (float buffers such as running statistics), forward FLOPs per sample, and for a
    layer with parameters its ``trainable``, ``lr_mult`` and ``decay_mult``.

    Shapes and FLOPs come from each layer's own ``output_shape`` and ``flops``.
    """
    rows, shape = [], model.input_shape
    for i, layer in enumerate(model.layers):
        rows.append({"index": i, "type": layer.type_name, "output_shape": model.shapes[i],
                     "params": sum(a.size for a in layer.params.values()),
                     "non_trainable": sum(a.size for a in layer.buffers.values() if a.dtype.kind == "f"),
                     "flops": int(layer.flops(shape)), **model.settings[i]})
        shape = model.shapes[i]
    return rows


def build(specs: list[LayerSpec], input_shape: tuple[int, ...], *, seed: int = 0,
          dtype=np.float32, rng: np.random.Generator | None = None) -> Model:
    """Build a :class:`Model` from layer specs for inputs of ``input_shape`` (no batch axis).

    Fills each layer's inferred sizes (``in_channels``, ``in_features``, ``num_features``)
    from the running shape and validates geometry with ``output_shape``. Each layer's
    constructor runs once; specs a validated config made (``spec.checked``) are not checked
    again, others get the checks of :func:`check_spec` that need no constructor call first.

    Args:
        specs: The layers, in order.
        input_shape: One sample's shape, e.g. (1, 28, 28).
        seed: Seeds the generator for initial weights and dropout masks (ignored if ``rng``).
        dtype: float32 to train, float64 for gradcheck.

    Raises:
        ConfigError: Every type/option-name problem; else the first refused value or shape
            problem, at ``model.layers[i].option`` or ``model.layers[i]``.
    """
    problems = [p for spec in specs if not spec.checked for p in check_spec(spec, values=False)]
    if problems:
        raise ConfigError(problems)
    shape = check_input_shape(input_shape)
    rng = rng if rng is not None else np.random.default_rng(seed)
    layers, shapes, settings = [], [], []
    for spec in specs:
        cls = resolve(spec.type)
        own, given = split_options(spec.options)
        try:
            inferred = {name: infer(shape) for name, infer in cls.inferred.items()}
            layer = cls(**own, **_builder_args(cls, inferred, rng, dtype))
            shape = tuple(layer.output_shape(shape))
            check_size("its output (one sample)", shape)
        except (ValueError, TypeError, OverflowError) as e:
            raise ConfigError([locate(e, cls.type_name, spec.path, spec.line, spec.options,
                                      spec.option_lines)]) from None
        except MemoryError:
            raise ConfigError([Problem(spec.path, f"({cls.type_name}) not enough memory for its weights; "
                                       f"use smaller sizes", spec.line)]) from None
        _check_param_options(spec, cls.type_name, layer, given)
        layers.append(layer)
        shapes.append(shape)
        settings.append({k: given.get(k, default) for k, (_, default) in PARAM_OPTIONS.items()} if layer.params
                        else {})
    return Model(layers, tuple(int(s) for s in input_shape), shapes, rng, dtype, settings)


def check_input_shape(input_shape: Any) -> tuple[int, ...]:
    """``input_shape`` as a tuple of ints if it is (C, H, W) or (F,) of positive integers
    holding at most ``MAX_ELEMENTS`` values.

    Raises:
        ConfigError: At ``model.input_shape`` otherwise.
    """
    try:
        if not isinstance(input_shape, (tuple, list)) or len(input_shape) not in (1, 3):
            raise ValueError(f"must be [C, H, W] or [F], got {input_shape!r}")
        shape = tuple(check_int("input_shape", s, 1) for s in input_shape)
        check_size("an input", shape)
    except ValueError as e:
        msg = str(e)
        raise ConfigError([Problem("model.input_shape", msg.removeprefix("input_shape "))]) from None
    return shape
