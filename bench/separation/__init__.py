"""Separator benchmarks: checkpoint quality and RTF (eval), quality through ``rtsep process`` (process_remix),
adaptation on reference turns (adapt, adapt_sweep) and its step speed (adapt_step_speed)."""
