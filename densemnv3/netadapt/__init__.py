"""NetAdapt: shrink a trained model's layer widths to a latency budget on the runtime it will run on."""
