"""Pickle readers that never execute pickled code.

* :func:`load_plain_pickle` reads data-only pickles (dict, list, tuple, int, float, str, ...)
  and refuses any global reference: the split ``.pkl`` lists are such files.
* :func:`load_restricted` reads ``torch.save`` checkpoints whose extra entries reference
  classes of other projects (optimizer/scheduler state, PyTorch-Lightning callbacks): tensors
  and plain containers are rebuilt, every other class or function becomes an inert
  placeholder that records its arguments and is never called.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
import zlib
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hmfss.errors import HmfssError


class Inert:
    """Stand-in for a pickled object of an unknown class; holds what it was built from."""

    _origin = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<inert {self._origin}>"


def _placeholder(module: str, name: str) -> type:
    return type(name, (Inert,), {"_origin": f"{module}.{name}", "__module__": "hmfss.inert"})


def _reconstruct(cls: Any, base: Any, state: Any) -> Any:
    """Safe replacement of ``copyreg._reconstructor``: builds an inert object."""
    obj = Inert(cls, base, state)
    return obj


_TORCH_REBUILD = {
    "_rebuild_tensor",
    "_rebuild_tensor_v2",
    "_rebuild_tensor_v3",
    "_rebuild_parameter",
    "_rebuild_parameter_with_state",
    "_rebuild_device_tensor_from_numpy",
}
_SAFE_BUILTINS = {"set": set, "frozenset": frozenset, "slice": slice, "complex": complex, "bytearray": bytearray}
_SAFE_COLLECTIONS = {"OrderedDict": collections.OrderedDict, "Counter": collections.Counter}


class _CheckpointUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name in _TORCH_REBUILD:
            return getattr(torch._utils, name)
        if module == "torch" and (name.endswith("Storage") or name == "Size" or isinstance(getattr(torch, name, None), torch.dtype)):
            return getattr(torch, name)
        if module in ("torch.storage",) and name in ("UntypedStorage", "TypedStorage", "_load_from_bytes"):
            if name == "_load_from_bytes":
                return lambda data: torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            return getattr(torch.storage, name)
        if module == "collections" and name in _SAFE_COLLECTIONS:
            return _SAFE_COLLECTIONS[name]
        if module == "builtins" and name in _SAFE_BUILTINS:
            return _SAFE_BUILTINS[name]
        if module == "copyreg" and name == "_reconstructor":
            return _reconstruct
        return _placeholder(module, name)


class _RestrictedPickleModule:
    """A ``pickle_module`` for ``torch.load`` that uses :class:`_CheckpointUnpickler`."""

    Unpickler = _CheckpointUnpickler
    load = staticmethod(lambda f, **kw: _CheckpointUnpickler(f, **kw).load())
    __name__ = "hmfss_restricted_pickle"


def load_restricted(path: str | Path, mmap: bool = False) -> Any:
    """``torch.load`` a checkpoint on the CPU with unknown classes replaced by placeholders
    (``mmap``: map a zip-format file's tensors instead of reading them into memory)."""
    return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_RestrictedPickleModule,
                      mmap=mmap)


class _DataOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def load_plain_pickle(path: str | Path) -> Any:
    """Read a data-only pickle; any reference to a class or function is refused."""
    path = Path(path)
    if not path.is_file():
        raise HmfssError(f"file not found: {path}")
    try:
        with path.open("rb") as handle:
            return _DataOnlyUnpickler(handle).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise HmfssError(f"cannot read {path}: {exc}") from None


_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # first pickle of torch's pre-1.6 (non-zip) format
_ELEMENT_BYTES = {"Double": 8, "Float": 4, "Half": 2, "BFloat16": 2, "Long": 8, "Int": 4, "Short": 2,
                  "Char": 1, "Byte": 1, "Bool": 1, "ComplexFloat": 8, "ComplexDouble": 16, "Untyped": 1}


class _StorageSizeScanner(pickle.Unpickler):
    """Reads a legacy checkpoint's main pickle without building anything: every class is an
    inert placeholder and every storage reference only records its declared byte size."""

    def __init__(self, handle: Any) -> None:
        super().__init__(handle)
        self.sizes: dict[str, int] = {}

    def find_class(self, module: str, name: str) -> Any:
        return _placeholder(module, name)

    def persistent_load(self, pid: Any) -> None:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {type(pid).__name__}")
        storage_type, key, numel = pid[1], pid[2], pid[4]
        if isinstance(numel, bool) or not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError(f"storage {key!r} declares {numel!r} elements")
        kind = getattr(storage_type, "_origin", "").rsplit(".", 1)[-1].removesuffix("Storage")
        self.sizes[str(key)] = numel * _ELEMENT_BYTES.get(kind, 16)


def legacy_declared_bytes(path: str | Path) -> int:
    """Bytes of tensor data a legacy (pre-zip) ``torch.save`` file declares, read from its
    pickles without allocating anything; raises HmfssError for a file of another kind."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            magic = _DataOnlyUnpickler(handle).load()
            if magic != _LEGACY_MAGIC:
                raise HmfssError(f"cannot read checkpoint {path}: damaged or not a PyTorch checkpoint "
                                 f"(a pickle without torch's header)")
            _DataOnlyUnpickler(handle).load()  # protocol version
            _DataOnlyUnpickler(handle).load()  # system info
            scanner = _StorageSizeScanner(handle)
            scanner.load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise HmfssError(f"cannot read checkpoint {path}: damaged or not a PyTorch checkpoint ({exc})") from None
    return sum(scanner.sizes.values())


_CRC_CHUNK = 1 << 24  # bytes read at a time while checking a member (zlib's CRC runs at GB/s)


def _damaged_member(archive: zipfile.ZipFile) -> tuple[str, str] | None:
    """(name, reason) of the first member of ``archive`` whose data fails its CRC-32 (or
    cannot be read back), else None. ``torch.load`` never checks these CRCs, so a flipped
    byte in a tensor's data would otherwise load as a wrong weight."""
    for info in archive.infolist():
        try:
            with archive.open(info) as member:
                while member.read(_CRC_CHUNK):
                    pass
        except zipfile.BadZipFile as exc:
            return info.filename, "CRC mismatch" if "CRC" in str(exc) else str(exc)
        except (EOFError, OSError, ValueError, zlib.error) as exc:
            return info.filename, str(exc) or type(exc).__name__
    return None


def check_archive_crc(path: str | Path, kind: str = "checkpoint") -> None:
    """Refuse a zip-format ``torch.save`` file (described as ``kind``) whose member data does
    not match its CRC-32; legacy (pickle) files carry no CRC and pass unchecked."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            found = _damaged_member(archive)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise HmfssError(f"{kind} {path} is a damaged zip archive: {exc}") from None
    if found is not None:
        name, reason = found
        raise HmfssError(f"{kind} {path} is damaged: {reason} in {name} (re-download or re-save it)")


def _dtype_kind(dtype: torch.dtype) -> str:
    """"complex", "floating" or "integer" (bool and quantized included)."""
    if dtype.is_complex:
        return "complex"
    return "floating" if dtype.is_floating_point else "integer"


def tensor_problem(key: str, value: Tensor, own: Tensor | None = None) -> str | None:
    """Why ``value`` cannot be loaded as the model's ``own`` tensor ``key`` (None: it can).

    ``load_state_dict`` copies any dtype into a parameter (integers or complex numbers become
    silently wrong float weights) and fails with a dispatcher traceback on sparse tensors."""
    if value.layout != torch.strided:
        return f"{key} is a {str(value.layout).removeprefix('torch.')} tensor, not a dense one"
    kind = _dtype_kind(value.dtype)
    if kind == "complex":
        return f"{key} holds complex numbers ({str(value.dtype).removeprefix('torch.')})"
    if own is not None and kind != _dtype_kind(own.dtype):
        return (f"{key} holds {kind} values ({str(value.dtype).removeprefix('torch.')}), the model expects "
                f"{_dtype_kind(own.dtype)} ones ({str(own.dtype).removeprefix('torch.')})")
    return None


def _describe(names: list[str]) -> str:
    more = f" (and {len(names) - 1} more)" if len(names) > 1 else ""
    return f"{names[0]!r}{more}"


def load_state(model: nn.Module, state: dict[str, Tensor], path: str | Path, kind: str = "checkpoint") -> None:
    """Strictly load ``state``: any missing/unexpected key, shape mismatch, non-dense layout or
    wrong kind of dtype (see :func:`tensor_problem`) is an error naming the file (described as
    ``kind``) and the key."""
    own = model.state_dict()
    cfg = getattr(model, "config", None)
    what = f"{cfg.arch}/{cfg.backbone}" if cfg is not None else type(model).__name__
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing:
        raise HmfssError(f"{kind} {path} does not fit {what}: missing key {_describe(missing)}")
    if unexpected:
        raise HmfssError(f"{kind} {path} does not fit {what}: unexpected key {_describe(unexpected)}")
    for key, value in state.items():
        problem = tensor_problem(key, value, own[key])
        if problem is not None:
            raise HmfssError(f"{kind} {path} does not fit {what}: {problem}")
        if tuple(value.shape) != tuple(own[key].shape):
            raise HmfssError(
                f"{kind} {path} does not fit {what}: {key} has shape {tuple(value.shape)}, "
                f"the model expects {tuple(own[key].shape)}"
            )
    model.load_state_dict(state)
