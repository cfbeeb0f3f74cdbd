"""The only code that places models on torch devices: model workers and micro-batching across sessions."""
