"""Speech enhancement front ends (``--denoise``): a stateful streaming denoiser per session, below the runtimes
that schedule it (rtsep.runtime.denoise) and above the sans-I/O cores whose resampler it uses."""
