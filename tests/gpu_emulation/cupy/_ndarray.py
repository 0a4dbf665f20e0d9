"""`cupy.ndarray` of the emulated device: NumPy memory that host code cannot read implicitly.

An array holds a NumPy array (`_a`, its "device memory"; a fresh allocation per device array, so
AddressSanitizer sees each one's bounds) but is not one. As in CuPy 14:
- ``np.asarray(x)`` / ``x.__array__()`` raise TypeError (use ``x.get()`` / ``cupy.asnumpy``);
- a NumPy array mixed into a CuPy operation raises TypeError (``Unsupported type``);
- ``int()``, ``float()``, ``bool()`` and ``.item()`` of a one-element array read it back;
- reductions and integer indexing give 0-d arrays, never host scalars;
- NumPy functions and ufuncs called on CuPy arrays dispatch to CuPy (NEP 13/18) when CuPy has
  a function of that name, else raise TypeError.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_IMPLICIT = (
    "Implicit conversion to a NumPy array is not allowed. "
    "Please use `.get()` to construct a NumPy array explicitly."
)
POISON = 0xA5  # bytes of cupy.empty(): reading memory nobody wrote gives this, not zeros


def unsupported(value: Any) -> TypeError:
    return TypeError(f"Unsupported type {type(value)}")


def unwrap(value: Any) -> Any:
    """The NumPy view of an emulated array (recursively in lists/tuples); a NumPy array is a
    host array where device data is wanted: TypeError, as CuPy raises."""
    if isinstance(value, ndarray):
        return value._a
    if isinstance(value, np.ndarray):
        raise unsupported(value)
    if isinstance(value, list | tuple):
        return type(value)(unwrap(item) for item in value)
    return value


def wrap(value: Any) -> Any:
    """Device arrays for what a NumPy call returned (scalars become 0-d arrays, as in CuPy)."""
    if isinstance(value, np.ndarray):
        return ndarray._from_numpy(value)
    if isinstance(value, np.generic | bool | int | float | complex):
        return ndarray._from_numpy(np.asarray(value))
    if isinstance(value, tuple | list):
        return type(value)(wrap(item) for item in value)
    return value


def call(function: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """`function` (a NumPy callable) on unwrapped arguments; `out=` comes back as given."""
    out = kwargs.get("out")
    result = function(*unwrap(args), **{key: unwrap(value) for key, value in kwargs.items()})
    if isinstance(out, ndarray) and result is out._a:
        return out
    return wrap(result)


def _index(key: Any) -> Any:
    """An index for the NumPy memory: device arrays unwrapped; host lists/arrays are copied to
    the device by CuPy, so they are accepted."""
    if isinstance(key, ndarray):
        return key._a
    if isinstance(key, tuple):
        return tuple(_index(item) for item in key)
    return key


class _Flags:
    def __init__(self, array: np.ndarray) -> None:
        self.c_contiguous = bool(array.flags.c_contiguous)
        self.f_contiguous = bool(array.flags.f_contiguous)
        self.owndata = bool(array.flags.owndata)

    def __getitem__(self, name: str) -> bool:
        key = {"C_CONTIGUOUS": "c_contiguous", "F_CONTIGUOUS": "f_contiguous"}.get(name, name)
        return bool(getattr(self, key.lower()))


class ndarray:
    """An emulated device array (see the module docstring)."""

    __slots__ = ("__weakref__", "_a", "_keep")
    __array_priority__ = 100.0

    def __init__(
        self,
        shape: Any,
        dtype: Any = float,
        memptr: Any = None,
        strides: Any = None,
        order: str = "C",
    ) -> None:
        dtype = np.dtype(dtype)
        if memptr is None:
            array = np.empty(shape, dtype=dtype, order=order)
            array.view(np.uint8).fill(POISON) if array.size else None
            self._a, self._keep = array, None
            return
        from cupy.cuda.memory import _host_view as host_view  # the emulated address space

        count = int(np.prod(shape)) if np.ndim(shape) else int(shape)
        flat = host_view(memptr, count * dtype.itemsize)
        array = flat.view(dtype)
        if strides is not None:
            array = np.lib.stride_tricks.as_strided(array, shape=shape, strides=strides)
        else:
            array = array.reshape(shape, order=order)
        self._a, self._keep = array, memptr

    @classmethod
    def _from_numpy(cls, array: np.ndarray, keep: Any = None) -> ndarray:
        self = cls.__new__(cls)
        self._a, self._keep = array, keep
        return self

    # ------------------------------------------------------------- attributes
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    size = property(lambda self: self._a.size)
    ndim = property(lambda self: self._a.ndim)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: _Flags(self._a))
    T = property(lambda self: ndarray._from_numpy(self._a.T, self))

    @property
    def data(self) -> Any:
        from cupy.cuda.memory import MemoryPointer, UnownedMemory

        memory = UnownedMemory(self._a.ctypes.data, self._a.nbytes, self, 0)
        return MemoryPointer(memory, 0)

    @property
    def device(self) -> Any:
        from cupy.cuda import Device

        return Device(0)

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        strides = None if self._a.flags.c_contiguous else self._a.strides
        return {
            "shape": self._a.shape,
            "typestr": self._a.dtype.str,
            "data": (int(self._a.ctypes.data), False),
            "strides": strides,
            "version": 3,
            "descr": self._a.dtype.descr,
        }

    # ------------------------------------------------------- host transfers
    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise TypeError(_IMPLICIT)

    def get(self, stream: Any = None, order: str = "C", out: Any = None, blocking: bool = True):
        if out is not None:
            if not isinstance(out, np.ndarray):
                raise TypeError("Only numpy.ndarray can be obtained from cupy.ndarray")
            np.copyto(out, self._a)
            return out
        return np.array(self._a, order=order, copy=True)

    def set(self, arr: np.ndarray, stream: Any = None) -> None:
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray, not {type(arr)}")
        if arr.shape != self._a.shape or arr.dtype != self._a.dtype:
            raise ValueError("Shape or dtype mismatch")
        np.copyto(self._a, arr)

    def tolist(self) -> Any:
        return self._a.tolist()

    def item(self, *args: Any) -> Any:
        return self._a.item(*args)

    def tobytes(self, order: str = "C") -> bytes:
        return self._a.tobytes(order=order)

    def _scalar(self, kind: type) -> Any:
        if self._a.size != 1:
            raise TypeError("only length-1 arrays can be converted to Python scalars")
        return kind(self._a.reshape(()))

    def __int__(self) -> int:
        return self._scalar(int)

    def __float__(self) -> float:
        return self._scalar(float)

    def __complex__(self) -> complex:
        return self._scalar(complex)

    def __bool__(self) -> bool:
        if self._a.size != 1:
            raise ValueError(
                "The truth value of an array with more than one element is ambiguous. "
                "Use a.any() or a.all()"
            )
        return bool(self._a.reshape(()))

    def __len__(self) -> int:
        if self._a.ndim == 0:
            raise TypeError("len() of unsized object")
        return len(self._a)

    def __iter__(self) -> Any:
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self._a)))

    def __repr__(self) -> str:
        return repr(self._a)

    def __str__(self) -> str:
        return str(self._a)

    def __format__(self, spec: str) -> str:
        return format(self._a.reshape(()) if self._a.ndim == 0 else self._a, spec)

    # ---------------------------------------------------------------- indexing
    def __getitem__(self, key: Any) -> ndarray:
        result = self._a[_index(key)]
        if isinstance(result, np.ndarray):
            return ndarray._from_numpy(result, self if result.base is not None else None)
        return wrap(result)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._a[_index(key)] = unwrap(value)

    # ---------------------------------------------------------- NumPy protocols
    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        outs = kwargs.get("out", ())
        for value in (*inputs, *(outs if isinstance(outs, tuple) else (outs,))):
            if isinstance(value, np.ndarray):
                return NotImplemented  # NumPy then raises TypeError
        if method == "__call__":
            import cupy

            function = getattr(cupy, ufunc.__name__, None)
            if function is None:
                return NotImplemented
            if "out" in kwargs and isinstance(outs, tuple) and len(outs) == 1:
                kwargs["out"] = outs[0]
            return function(*inputs, **kwargs)
        return call(getattr(ufunc, method), inputs, kwargs)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        import cupy

        function = getattr(cupy, func.__name__, None)
        if function is None or func.__module__ not in ("numpy", "numpy.core.multiarray"):
            return NotImplemented
        return function(*args, **kwargs)

    # -------------------------------------------------------------- methods
    def astype(
        self, dtype: Any, order: str = "K", casting: Any = None, subok: Any = None, copy=True
    ) -> ndarray:
        if not copy and np.dtype(dtype) == self._a.dtype:
            return self
        return ndarray._from_numpy(self._a.astype(dtype, order=order, copy=True))

    def view(self, dtype: Any = None, array_class: Any = None) -> ndarray:
        return ndarray._from_numpy(self._a.view(dtype) if dtype is not None else self._a.view())

    def copy(self, order: str = "C") -> ndarray:
        return ndarray._from_numpy(self._a.copy(order=order))

    def fill(self, value: Any) -> None:
        self._a.fill(unwrap(value))

    def sort(self, axis: int = -1, kind: Any = None) -> None:
        self._a.sort(axis=axis)


def _method(name: str) -> Any:
    def method(self: ndarray, *args: Any, **kwargs: Any) -> Any:
        return call(getattr(self._a, name), args, kwargs)

    method.__name__ = name
    return method


_METHODS = [
    "all",
    "any",
    "argmax",
    "argmin",
    "argsort",
    "clip",
    "conj",
    "cumprod",
    "cumsum",
    "diagonal",
    "dot",
    "flatten",
    "max",
    "mean",
    "min",
    "nonzero",
    "prod",
    "ravel",
    "repeat",
    "reshape",
    "round",
    "squeeze",
    "std",
    "sum",
    "swapaxes",
    "take",
    "trace",
    "transpose",
    "var",
]
for _name in _METHODS:
    setattr(ndarray, _name, _method(_name))


def _operator(name: str) -> Any:
    def operator(self: ndarray, other: Any) -> Any:
        if isinstance(other, np.ndarray | list):
            raise unsupported(other)
        mine = getattr(self._a, name)
        return wrap(mine(unwrap(other)))

    operator.__name__ = name
    return operator


_BINARY = [
    "add",
    "sub",
    "mul",
    "truediv",
    "floordiv",
    "mod",
    "pow",
    "and",
    "or",
    "xor",
    "lshift",
    "rshift",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "matmul",
]
for _name in _BINARY:
    setattr(ndarray, f"__{_name}__", _operator(f"__{_name}__"))
    if _name not in ("eq", "ne", "lt", "le", "gt", "ge"):
        setattr(ndarray, f"__r{_name}__", _operator(f"__r{_name}__"))


def _inplace(name: str) -> Any:
    def operator(self: ndarray, other: Any) -> ndarray:
        if isinstance(other, np.ndarray | list):
            raise unsupported(other)
        getattr(self._a, name)(unwrap(other))
        return self

    operator.__name__ = name
    return operator


for _name in _BINARY:
    if _name not in ("eq", "ne", "lt", "le", "gt", "ge", "matmul"):
        setattr(ndarray, f"__i{_name}__", _inplace(f"__i{_name}__"))
for _name in ("neg", "pos", "abs", "invert"):
    setattr(ndarray, f"__{_name}__", lambda self, _n=_name: wrap(getattr(self._a, f"__{_n}__")()))
ndarray.__hash__ = None  # type: ignore[assignment]
ndarray.__module__ = "cupy"
