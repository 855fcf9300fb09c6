"""What a model is fed when it is timed: every input's shape, dtype and values, resolved on the host.

Nothing is guessed silently. A leading batch dimension left free defaults to 1 and the feed says so; any
other free dimension without a given shape is an error naming the input, the dimension and the option that
sets it. The exact arrays go into the bundle (inputs.npz) and their description into every record.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgebench.types import EdgebenchError, TensorSpec

FILL_WORDS = ("zeros", "ones", "random")
SUPPORTED_DTYPES = ("float32", "float64", "float16", "int64", "int32", "int8", "uint8", "bool")


@dataclass(frozen=True)
class Feed:
    """One model input as fed: the concrete shape, the dtype handed to the runtime, where values came from."""

    name: str
    shape: tuple
    dtype: str
    source: str  # e.g. "random normal (seed 0)", "zeros", "value 16000", "file state.npy", "eval data"

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "source": self.source}

    @property
    def text(self) -> str:
        dims = "x".join(str(d) for d in self.shape) or "scalar"
        return f"{self.name}={dims} {self.dtype} ({self.source})"


def feeds_text(feeds) -> str:
    """One line for tables and CSV: `x=1x3x640x640 float32 (random normal (seed 0)); sr=scalar int64 (...)`."""
    return "; ".join(Feed(**f).text if isinstance(f, dict) else f.text for f in feeds)


def parse_shape(text: str, where: str = "shape") -> tuple:
    """'1x3x640x640' -> (1, 3, 640, 640); 'scalar' or '' -> ()."""
    text = text.strip().lower()
    if text in ("", "scalar", "()"):
        return ()
    try:
        dims = tuple(int(d) for d in text.replace(",", "x").split("x"))
    except ValueError:
        raise EdgebenchError(f"{where}: '{text}' is not a shape like 1x3x640x640") from None
    if any(d <= 0 for d in dims):
        raise EdgebenchError(f"{where}: '{text}' has a dimension <= 0")
    return dims


def _split(arg: str, option: str) -> tuple[str, str]:
    name, sep, value = arg.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise EdgebenchError(f"{option} '{arg}': expected NAME=VALUE")
    return name.strip(), value.strip()


def parse_shape_args(args) -> dict:
    """['x=1x3x640x640', ...] from repeated --shape options."""
    shapes = {}
    for arg in args or ():
        name, value = _split(arg, "--shape")
        shapes[name] = parse_shape(value, f"--shape {name}")
    return shapes


def parse_input_args(args) -> dict:
    """['sr=16000', 'state=zeros', 'x=img.npy'] from repeated --input options: arrays, numbers or fill words."""
    values: dict = {}
    for arg in args or ():
        name, value = _split(arg, "--input")
        if value.lower() in FILL_WORDS:
            values[name] = value.lower()
        elif value.lower().endswith(".npy"):
            path = Path(value).expanduser()
            try:
                values[name] = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise EdgebenchError(f"--input {name}: cannot read {path}: {exc}") from None
        else:
            try:
                values[name] = np.asarray(int(value) if value.lstrip("+-").isdigit() else float(value))
            except ValueError:
                raise EdgebenchError(f"--input {name}={value}: expected a .npy file, a number or one of "
                                     f"{', '.join(FILL_WORDS)}") from None
    return values


def load_inputs_npz(path) -> dict:
    """--inputs FILE.npz: one array per input name."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise EdgebenchError(f"cannot read inputs file {path}: {exc}") from None


def _dims_text(shape) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, int) and d > 0 else (repr(d) if d else "?") for d in shape) + "]"


def _free(d) -> bool:
    return not (isinstance(d, int) and d > 0)


def _check_against_spec(spec: TensorSpec, shape: tuple, what: str) -> None:
    if len(shape) != len(spec.shape):
        raise EdgebenchError(f"input '{spec.name}': {what} {list(shape)} has rank {len(shape)}, the model's input "
                             f"{_dims_text(spec.shape)} has rank {len(spec.shape)}")
    for i, (want, got) in enumerate(zip(spec.shape, shape)):
        if not _free(want) and want != got:
            raise EdgebenchError(f"input '{spec.name}': {what} {list(shape)} does not fit the model's input "
                                 f"{_dims_text(spec.shape)} (dimension {i} is fixed at {want})")


def _shape_for(spec: TensorSpec, given: tuple | None) -> tuple[tuple, str]:
    """The concrete shape and a note (e.g. that the batch dimension defaulted to 1)."""
    if given is not None:
        _check_against_spec(spec, tuple(given), "shape")
        return tuple(int(d) for d in given), ""
    free = [i for i, d in enumerate(spec.shape) if _free(d)]
    if any(i > 0 for i in free):
        dims = ", ".join(f"{i}" + (f" ('{spec.shape[i]}')" if spec.shape[i] else "") for i in free if i > 0)
        example = "x".join("N" if _free(d) else str(d) for d in spec.shape) or "scalar"
        raise EdgebenchError(
            f"input '{spec.name}' {_dims_text(spec.shape)} has free dimension(s) {dims}: set them with "
            f"--shape {spec.name}={example} (Python: shapes={{'{spec.name}': ...}}); edgebench does not guess")
    shape = tuple(1 if _free(d) else int(d) for d in spec.shape)
    return shape, ("batch dimension defaulted to 1" if free else "")


def runtime_dtype(spec: TensorSpec, quantized_io: bool) -> str:
    """What the host hands the runner: quantized (int8/uint8) float-model inputs are fed as float32 and
    quantized by the runner with the input's own scale and zero point."""
    if quantized_io and spec.dtype in ("int8", "uint8"):
        return "float32"
    if spec.dtype not in SUPPORTED_DTYPES:
        raise EdgebenchError(f"input '{spec.name}' has dtype {spec.dtype}, which edgebench cannot feed yet "
                             f"(supported: {', '.join(SUPPORTED_DTYPES)})")
    return spec.dtype


def _default_values(name: str, shape: tuple, dtype: str) -> tuple[np.ndarray, str]:
    kind = np.dtype(dtype).kind
    if kind == "b":
        return np.ones(shape, dtype=bool) if "mask" in name.lower() else np.zeros(shape, dtype=bool), \
            "ones (a mask)" if "mask" in name.lower() else "zeros"
    if kind in "iu":  # ids or flags: zeros are valid for any vocabulary; a mask of ones attends to everything
        if "mask" in name.lower():
            return np.ones(shape, dtype=dtype), "ones (a mask)"
        return np.zeros(shape, dtype=dtype), "zeros"
    return np.random.default_rng(0).standard_normal(shape).astype(dtype), "random normal (seed 0)"


def _eval_feed(spec: TensorSpec, eval_x, given: tuple | None) -> tuple[np.ndarray, str]:
    """The first eval samples as the timed batch: the eval data fixes the free dimensions after the batch."""
    x = np.asarray(eval_x)
    if given is not None:
        n = given[0] if given else 1
    else:
        n = spec.shape[0] if spec.shape and not _free(spec.shape[0]) else 1
    if x.shape[0] < n:
        raise EdgebenchError(f"eval data has {x.shape[0]} samples, fewer than the batch of {n}")
    _check_against_spec(spec, x[:n].shape, "eval data shape")
    return x[:n], "eval data"


def _one_feed(spec: TensorSpec, value, given: tuple | None, dtype: str, eval_x) -> tuple[Feed, np.ndarray]:
    label = ""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], str):
        value, label = np.asarray(value[0]), value[1]  # an array with a word on where it came from
    note = ""
    if isinstance(value, np.ndarray) and value.ndim > 0:  # a whole tensor: its shape is the shape
        if given is not None and tuple(given) != value.shape:
            raise EdgebenchError(f"input '{spec.name}': --shape {list(given)} disagrees with the given array's "
                                 f"shape {list(value.shape)}")
        _check_against_spec(spec, value.shape, "the given array's shape")
        array, source = value, label or "given array"
    elif value is None and eval_x is not None:  # a classifier's first input: real samples
        array, source = _eval_feed(spec, eval_x, given)
    else:
        shape, note = _shape_for(spec, given)
        if value is None:
            array, source = _default_values(spec.name, shape, dtype)
        elif isinstance(value, np.ndarray):  # a scalar, e.g. a sample rate
            array, source = np.full(shape, value.item()), f"value {value.item():g}"
        elif value == "zeros":
            array, source = np.zeros(shape), "zeros"
        elif value == "ones":
            array, source = np.ones(shape), "ones"
        elif value == "random":
            array, source = np.random.default_rng(0).standard_normal(shape), "random normal (seed 0)"
        else:
            raise EdgebenchError(f"input '{spec.name}': cannot feed {value!r} (an array, a number or one of "
                                 f"{', '.join(FILL_WORDS)})")
    array = np.asarray(array)
    if np.dtype(dtype).kind in "iub" and array.dtype.kind == "f" and not np.all(np.mod(array, 1) == 0):
        raise EdgebenchError(f"input '{spec.name}' is {dtype} but the given values are not whole numbers")
    array = np.array(array, dtype=dtype, order="C")  # (np.ascontiguousarray would make a scalar 1-d)
    feed = Feed(spec.name, tuple(int(d) for d in array.shape), dtype, source + (f"; {note}" if note else ""))
    return feed, array


def resolve_feeds(specs, shapes: dict | None = None, values: dict | None = None, eval_x=None,
                  quantized_io: bool = False) -> tuple[list[Feed], dict]:
    """Every input's concrete shape, dtype and values; errors name the input and the option to set.

    values: input name -> array, number, 'zeros' / 'ones' / 'random', or (array, where it came from).
    eval_x: eval samples of the first input (a classifier's); its first samples are the timed batch."""
    shapes, values = dict(shapes or {}), dict(values or {})
    names = [s.name for s in specs]
    for what, given in (("--shape", shapes), ("--input", values)):
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise EdgebenchError(f"{what}: the model has no input named {', '.join(repr(u) for u in unknown)} "
                                 f"(its inputs: {', '.join(names)})")
    feeds, arrays = [], {}
    for k, spec in enumerate(specs):
        given = tuple(shapes[spec.name]) if spec.name in shapes else None
        feed, array = _one_feed(spec, values.get(spec.name), given, runtime_dtype(spec, quantized_io),
                                eval_x if k == 0 else None)
        feeds.append(feed)
        arrays[spec.name] = array
    return feeds, arrays
