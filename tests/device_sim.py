"""A stand-in accelerator for device-placement tests on a machine without a GPU.

Inside :class:`SimulatedDevice`, the ``meta`` device plays a GPU: a tensor moved or created
there is a :class:`OnDevice` wrapper that reports ``device == meta`` but holds real CPU data,
so the code computes as usual. Every op runs through the mode, which fails, as CUDA does,
when an op mixes tensors on the device with tensors on the host (0-dim host tensors and CPU
index tensors excepted, as CUDA accepts them), and when a host generator draws numbers for the
device. ``.numpy()`` of a device tensor fails too; ``.cpu()`` brings it back.

Why ``meta``: a real ``cuda`` identity needs the CUDA runtime as soon as autograd records a
device tensor; ``meta`` has the device machinery PyTorch needs (a no-op guard) and no data of
its own, which the wrapper provides.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

DEVICE = torch.device("meta")
aten = torch.ops.aten
INDEX_OPS = {aten.index.Tensor, aten.index_put_.default, aten.index_put.default,
             aten._index_put_impl_.default}


class DeviceMismatch(RuntimeError):
    """An op mixed device and host tensors (CUDA raises here too)."""


class OnDevice(torch.Tensor):
    """A tensor on the simulated device: metadata says ``meta``, ``elem`` holds the data."""

    @staticmethod
    def __new__(cls, elem: torch.Tensor):
        r = torch.Tensor._make_wrapper_subclass(
            cls, elem.size(), strides=elem.stride(), storage_offset=elem.storage_offset(),
            dtype=elem.dtype, layout=elem.layout, device=DEVICE,
            requires_grad=elem.requires_grad)
        r.elem = elem
        return r

    def __repr__(self) -> str:
        return f"OnDevice({self.elem!r})"

    def __reduce_ex__(self, protocol):
        # saved as its host data, as torch.load(map_location="cpu") gives a GPU tensor back
        return self.elem.detach().__reduce_ex__(protocol)

    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise RuntimeError(f"{func}: a simulated device tensor outside SimulatedDevice")


def _on_sim(device) -> bool:
    return device is not None and torch.device(device).type == DEVICE.type


def _unwrap(t):
    return t.elem if isinstance(t, OnDevice) else t


def _wrap(t):
    return OnDevice(t) if isinstance(t, torch.Tensor) and not isinstance(t, OnDevice) else t


class SimulatedDevice(TorchDispatchMode):
    """Run code with ``meta`` as its device; see the module docstring. ``ops`` counts the ops
    that ran on the device (a test can check the work really went there)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0
        self._saved: dict = {}

    # torch.tensor / as_tensor with a device build the data below the dispatcher, so a
    # ``meta`` target would drop it: build on the host, then move through the mode.
    def __enter__(self):
        for name in ("tensor", "as_tensor"):
            real = self._saved[name] = getattr(torch, name)
            setattr(torch, name, self._host_first(real))
        real_new = self._saved["new_tensor"] = torch.Tensor.new_tensor

        def new_tensor(t, data, *args, **kwargs):
            if isinstance(t, OnDevice) and kwargs.get("device") is None:
                return real_new(t.elem, data, *args, **kwargs).to(t.device)
            return real_new(t, data, *args, **kwargs)

        torch.Tensor.new_tensor = new_tensor
        return super().__enter__()

    def __exit__(self, *exc):
        torch.Tensor.new_tensor = self._saved.pop("new_tensor")
        for name, real in self._saved.items():
            setattr(torch, name, real)
        return super().__exit__(*exc)

    @staticmethod
    def _host_first(real):
        def make(data, *args, device=None, **kwargs):
            if _on_sim(device):
                return real(data, *args, **kwargs).to(device)
            return real(data, *args, device=device, **kwargs)

        return make

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is aten._to_copy.default:  # .to(device) / .cpu() / dtype casts
            src, target = args[0], kwargs.get("device")
            kw = {**kwargs, **({"device": torch.device("cpu")} if target is not None else {})}
            out = func(_unwrap(src), **kw)
            on_device = _on_sim(target) or (target is None and isinstance(src, OnDevice))
            return OnDevice(out) if on_device else out
        if func is aten.copy_.default:  # cross-device copies are legal
            func(_unwrap(args[0]), _unwrap(args[1]))
            return args[0]
        flat, _ = tree_flatten((args, kwargs))
        tensors = [t for t in flat if isinstance(t, torch.Tensor)]
        device = [t for t in tensors if isinstance(t, OnDevice)]
        host = [t for t in tensors if not isinstance(t, OnDevice) and t.dim() > 0]
        if func in INDEX_OPS:
            index_ids = {id(t) for t in tree_flatten(args[1])[0] if isinstance(t, torch.Tensor)}
            host = [t for t in host if id(t) not in index_ids]
        if _on_sim(kwargs.get("device")):  # a factory asked for the device
            generator = kwargs.get("generator")
            if generator is not None:
                raise DeviceMismatch(f"{func}: a host generator drawing for the device")
            out = func(*tree_map(_unwrap, args), **{**kwargs, "device": torch.device("cpu")})
            self.ops += 1
            return tree_map(_wrap, out)
        if device and host:
            shapes = [tuple(t.shape) for t in host]
            raise DeviceMismatch(f"{func}: device tensors mixed with host tensors {shapes}")
        out = func(*tree_map(_unwrap, args), **tree_map(_unwrap, kwargs))
        if not device or func is aten._local_scalar_dense.default:  # .item() gives a number
            return out
        self.ops += 1
        return tree_map(_wrap, out)


def on_device(t: torch.Tensor) -> bool:
    return isinstance(t, OnDevice)


class ModuleDeviceCheck:
    """A global forward pre-hook: every module that runs must hold its parameters and buffers
    on the device and receive its tensor inputs there. Failures are collected in ``bad``."""

    def __init__(self) -> None:
        self.bad: list[str] = []
        self.modules = 0

    def _hook(self, module, args, kwargs=None):
        self.modules += 1
        name = type(module).__name__
        for what, t in [*(("parameter " + n, p) for n, p in module.named_parameters(
                recurse=False)), *(("buffer " + n, b) for n, b in module.named_buffers(
                recurse=False))]:
            if not isinstance(t, OnDevice):
                self.bad.append(f"{name} {what} on {t.device}")
        inputs = tree_flatten((args, kwargs or {}))[0]
        for t in inputs:
            if isinstance(t, torch.Tensor) and t.dim() > 0 and not isinstance(t, OnDevice):
                self.bad.append(f"{name} input {tuple(t.shape)} on the host")

    def __enter__(self):
        from torch.nn.modules.module import register_module_forward_pre_hook

        self._handle = register_module_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self._handle.remove()
        return False
