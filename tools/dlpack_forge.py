"""Hand-made DLPack capsules for the bad-input matrix and the fuzz target.

``Forged(...)`` is an object whose ``__dlpack__`` returns a capsule with any header we like
(NULL shape, negative or huge shapes, misaligned data, odd dtypes, devices, versions, flags),
pointing into a real buffer it keeps alive. A consumer must refuse every header that does not
describe memory it may touch; headers that do describe real memory (within the buffer) must
work like the equivalent numpy array.
"""
from __future__ import annotations

import ctypes
from typing import Sequence

import numpy as np

_PyCapsule_New = ctypes.pythonapi.PyCapsule_New
_PyCapsule_New.restype = ctypes.py_object
_PyCapsule_New.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]

KDL_CPU, KDL_CUDA = 1, 2
KDL_INT, KDL_UINT, KDL_FLOAT, KDL_BFLOAT, KDL_BOOL = 0, 1, 2, 4, 6
FLAG_READ_ONLY, FLAG_IS_COPIED = 1, 2


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class DLPackVersion(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32)]


class DLManagedTensorVersioned(ctypes.Structure):
    _fields_ = [("version", DLPackVersion), ("manager_ctx", ctypes.c_void_p),
                ("deleter", ctypes.c_void_p), ("flags", ctypes.c_uint64), ("dl_tensor", DLTensor)]


class DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", DLTensor), ("manager_ctx", ctypes.c_void_p),
                ("deleter", ctypes.c_void_p)]


_NP_CODES = {np.dtype(np.float32): (KDL_FLOAT, 32), np.dtype(np.float64): (KDL_FLOAT, 64),
             np.dtype(np.float16): (KDL_FLOAT, 16), np.dtype(np.int64): (KDL_INT, 64),
             np.dtype(np.int32): (KDL_INT, 32), np.dtype(np.int8): (KDL_INT, 8),
             np.dtype(np.uint8): (KDL_UINT, 8), np.dtype(np.bool_): (KDL_BOOL, 8)}


class Forged:
    """``__dlpack__`` returns a fresh capsule with the given header over ``buffer``.

    shape/strides: sequences of ints (strides in elements), or None for a NULL pointer.
    ``data_offset`` is added to the buffer's address in bytes (misalignment); ``byte_offset``
    goes into the header field of that name.
    """

    def __init__(self, buffer: np.ndarray, shape: Sequence[int] | None,
                 strides: Sequence[int] | None = (), *, ndim: int | None = None,
                 code: int | None = None, bits: int | None = None, lanes: int = 1,
                 device: int = KDL_CPU, versioned: bool = True, major: int = 1, minor: int = 0,
                 flags: int = 0, data_offset: int = 0, byte_offset: int = 0,
                 null_data: bool = False, address: int | None = None):
        self.buffer = np.ascontiguousarray(buffer)
        c, b = _NP_CODES.get(self.buffer.dtype, (KDL_FLOAT, 32))
        self.code = c if code is None else code
        self.bits = b if bits is None else bits
        self.lanes = lanes
        self.shape = None if shape is None else [int(s) for s in shape]
        if strides == () and self.shape is not None:  # compact row-major
            st, run = [], 1
            for s in reversed(self.shape):
                st.append(run)
                run *= max(s, 1)
            strides = list(reversed(st))
        self.strides = None if strides is None else [int(s) for s in strides]
        self.ndim = len(self.shape or []) if ndim is None else ndim
        self.device, self.versioned, self.major, self.minor = device, versioned, major, minor
        self.flags, self.data_offset, self.byte_offset = flags, data_offset, byte_offset
        self.null_data = null_data
        self.address = address  # an absolute data pointer (never dereferenced by a correct consumer)
        self._keep: list = []

    def __dlpack__(self, *args, **kwargs):
        n = max(self.ndim, 1, len(self.shape or []), len(self.strides or []))
        shape = (ctypes.c_int64 * n)(*((self.shape or []) + [0] * (n - len(self.shape or []))))
        strides = (ctypes.c_int64 * n)(*((self.strides or []) + [0] * (n - len(self.strides or []))))
        t = DLTensor()
        t.data = (None if self.null_data else self.address if self.address is not None
                  else self.buffer.ctypes.data + self.data_offset)
        t.device = DLDevice(self.device, 0)
        t.ndim = self.ndim
        t.dtype = DLDataType(self.code, self.bits, self.lanes)
        t.shape = None if self.shape is None else ctypes.cast(shape, ctypes.POINTER(ctypes.c_int64))
        t.strides = (None if self.strides is None
                     else ctypes.cast(strides, ctypes.POINTER(ctypes.c_int64)))
        t.byte_offset = self.byte_offset
        if self.versioned:
            m = DLManagedTensorVersioned()
            m.version = DLPackVersion(self.major, self.minor)
            m.flags = self.flags
            m.dl_tensor = t
            name = b"dltensor_versioned"
        else:
            m = DLManagedTensor()
            m.dl_tensor = t
            name = b"dltensor"
        # the consumer never calls the (NULL) deleter; this object keeps everything alive
        self._keep.append((m, shape, strides))
        if len(self._keep) > 4:
            del self._keep[0]
        return _PyCapsule_New(ctypes.addressof(m), name, None)

    def __dlpack_device__(self):
        return (self.device, 0)
