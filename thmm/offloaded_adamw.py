# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""AdamW whose moments wait in a temporary file between optimizer steps (``--low-cpu-memory``, and
by default where keeping them in memory would take training past its memory limit).

AdamW keeps two moments per parameter, as large as the parameters themselves, but reads them only in
the optimizer step. On a CPU the forward and backward passes, where the activations and the gradients
take their memory, do not need them. So :class:`OffloadedAdamW` keeps the moments of each large
parameter in an unnamed temporary file, reads them back for that parameter's update and writes them out
again, one parameter at a time; only the largest parameter's moments are ever in memory. For the
default THMM heads on 634 IPC subclasses this takes 0.67 GB (of a 2.5 GB epoch peak) out of resident
memory. The file stays in page cache while memory allows (4% more epoch time on 2 cores at batch 512);
where the kernel reclaims that cache, each step reads and writes the moments on disk, which is why the
trainer asks for it only with ``--low-cpu-memory`` or over the memory limit (``thmm.trainer.offload_moments``;
bench/cpu_memory.py, bench/scale.py --memory-limit; docs/benchmarks.md).

The update itself is torch's AdamW (the same kernel, the same order of operations), so the weights are
bit for bit those of ``torch.optim.AdamW``: tested, as are ``state_dict`` and ``load_state_dict``
(checkpoints hold the moments as usual). The file has no name (``O_TMPFILE`` where the file system has it;
otherwise it is unlinked at once), so nothing is left behind, even by a killed process. Where it cannot be
written (a full disk, say) the moments stay in memory, with a warning.
"""

from __future__ import annotations

import os
import tempfile
import warnings

import torch

MOMENTS = ("exp_avg", "exp_avg_sq")
# parameters below this many elements keep their moments in memory: biases, norms, small layers
OFFLOAD_MIN_ELEMENTS = 1 << 20


class OffloadedAdamW(torch.optim.AdamW):
    """``torch.optim.AdamW`` (same arguments) whose moments of parameters of at least ``min_elements``
    elements live in an unnamed file in ``folder`` (by default the temporary folder) between steps. CPU
    tensors only; AMSGrad's third buffer stays in memory."""

    def __init__(self, params, *args, min_elements: int | None = None, folder: str | os.PathLike | None = None,
                 **kwargs):
        super().__init__(params, *args, **kwargs)
        self.min_elements = OFFLOAD_MIN_ELEMENTS if min_elements is None else min_elements
        self.folder = folder  # where the file goes (None: the temporary folder)
        self._file = None  # opened at the first write
        self._slots: dict[torch.Tensor, dict[str, int]] = {}  # parameter -> moment -> offset in the file
        self._file_size = 0
        self._offload_failed = False

    @staticmethod
    def moment_bytes(params, min_elements: int | None = None) -> int:
        """The bytes of the moments it would keep in its file for these parameters (those that train)."""
        least = OFFLOAD_MIN_ELEMENTS if min_elements is None else min_elements
        return sum(2 * p.numel() * p.element_size() for p in params if p.requires_grad and p.numel() >= least)

    # --- which parameters, and where -------------------------------------------------------------------

    def _offloaded(self, param: torch.Tensor) -> bool:
        return (not self._offload_failed and param.device.type == "cpu" and param.numel() >= self.min_elements)

    def _slot(self, param: torch.Tensor) -> dict[str, int]:
        slot = self._slots.get(param)
        if slot is None:
            nbytes = param.numel() * param.element_size()
            slot = {}
            for name in MOMENTS:
                slot[name] = self._file_size
                self._file_size += nbytes
            self._slots[param] = slot
        return slot

    # --- moving the moments ----------------------------------------------------------------------------

    def _write_out(self, param: torch.Tensor) -> None:
        """Write ``param``'s moments to the file and drop them from memory; on an OSError keep them, and
        every other parameter's from now on, in memory."""
        state = self.state.get(param)
        if self._offload_failed or not state or any(name not in state for name in MOMENTS):
            return
        try:
            if self._file is None:
                self._file = tempfile.TemporaryFile(prefix="thmm-adamw-", dir=self.folder)
            slot = self._slot(param)
            for name in MOMENTS:
                write_all(self._file.fileno(), state[name], slot[name])
        except OSError as err:
            self._stop_offloading(err)
            return
        for name in MOMENTS:
            del state[name]

    def _read_in(self, param: torch.Tensor) -> None:
        """Put ``param``'s moments back in its state, from the file (a no-op when they are in memory)."""
        state = self.state.get(param)
        slot = self._slots.get(param)
        if not state or slot is None or all(name in state for name in MOMENTS):
            return
        for name in MOMENTS:
            moment = torch.empty_like(param, memory_format=torch.contiguous_format)
            read_all(self._file.fileno(), moment, slot[name])
            state[name] = moment

    def _stop_offloading(self, err: OSError) -> None:
        warnings.warn(f"--low-cpu-memory: the optimizer's moments stay in memory, since the temporary file "
                      f"could not be written ({err})", RuntimeWarning, stacklevel=3)
        for param in list(self._slots):
            self._read_in(param)
        self._offload_failed = True
        self._close()

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file, self._slots, self._file_size = None, {}, 0

    # --- the optimizer's interface ---------------------------------------------------------------------

    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        kept = [group["params"] for group in self.param_groups]
        # decided once, before any write: a failed write mid-step must not leave a parameter unstepped
        offloaded = [[p for p in params if self._offloaded(p)] for params in kept]
        in_memory = [[p for p in params if not self._offloaded(p)] for params in kept]
        try:
            # the parameters whose moments stay in memory: one call, as plain AdamW steps them
            for group, params in zip(self.param_groups, in_memory):
                group["params"] = params
            super().step()
            # the others one at a time, so that only one parameter's moments are ever in memory
            for group, params in zip(self.param_groups, offloaded):
                for param in params:
                    if param.grad is None:
                        continue
                    for other in self.param_groups:
                        other["params"] = [param] if other is group else []
                    self._read_in(param)  # nothing to read at the first step: AdamW creates them
                    super().step()
                    self._write_out(param)
        finally:
            for group, params in zip(self.param_groups, kept):
                group["params"] = params
        return loss

    def state_dict(self):
        """The usual state dict, moments included: they are read back for it, and leave memory again when
        the caller drops the dict."""
        for param in list(self._slots):
            self._read_in(param)
        try:
            packed = super().state_dict()
            # torch packs each parameter's own state dict: copies, so that dropping the moments below keeps them here
            packed["state"] = {index: dict(state) for index, state in packed["state"].items()}
            return packed
        finally:
            for param in list(self._slots):  # the file still holds these values: drop them, do not rewrite
                if param in self.state:
                    for name in MOMENTS:
                        self.state[param].pop(name, None)

    def load_state_dict(self, state_dict) -> None:
        self._close()
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            for param in group["params"]:
                if self._offloaded(param):
                    self._write_out(param)

    def release(self) -> None:
        """Forget the moments (memory and file): training is over."""
        self.state.clear()
        self._close()


def write_all(fd: int, tensor: torch.Tensor, offset: int) -> None:
    """Write a contiguous CPU tensor's bytes at ``offset`` (looping: one write may be short)."""
    view = memoryview(tensor.detach().contiguous().view(-1).view(torch.uint8).numpy())
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def read_all(fd: int, tensor: torch.Tensor, offset: int) -> None:
    """Fill a contiguous CPU tensor from ``offset``; an EOFError if the file ends first."""
    view = memoryview(tensor.view(-1).view(torch.uint8).numpy())
    while view:
        read = os.preadv(fd, [view], offset)
        if read == 0:
            raise EOFError(f"the optimizer's moment file ended at byte {offset}")
        view, offset = view[read:], offset + read


MEMORY_FILE_SYSTEMS = frozenset({"tmpfs", "ramfs"})
MOUNTS = "/proc/self/mounts"


def moments_folder(fallback: str | os.PathLike) -> str:
    """Where the moments' file goes: the temporary folder, unless it lives in memory (``/tmp`` on tmpfs,
    as on some distributions), where the file would take the very memory it is meant to free; then
    ``fallback`` (the run's output folder)."""
    folder = tempfile.gettempdir()
    return str(fallback) if file_system_type(folder) in MEMORY_FILE_SYSTEMS else folder


def file_system_type(path: str | os.PathLike) -> str | None:
    """The type of the file system ``path`` is on (the longest mount point above it), from
    ``/proc/self/mounts``; ``None`` where that cannot be read (not Linux)."""
    real = os.path.realpath(path)
    best, kind = "", None
    try:
        with open(MOUNTS) as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = fields[1].replace("\\040", " ")
                inside = real == point or real.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):
                    best, kind = point, fields[2]
    except OSError:
        return None
    return kind
