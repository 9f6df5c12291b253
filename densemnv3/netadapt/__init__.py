"""NetAdapt: shrink a trained model's layer widths to a latency budget on its target runtime."""
