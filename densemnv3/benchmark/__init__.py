"""The cases ``tools/benchmark.py`` times: densemnv3 vs torchvision, interleaved in one process.

- :mod:`.timing`: interleaved timing, device sync, the record every timed case starts from;
- :mod:`.reference`: torchvision's models for the model cases, from its public API only;
- :mod:`.models`: the model cases (same weights and inputs; params, FLOPs, output difference);
- :mod:`.data`: the data cases (decode + training augmentation of one sample);
- :mod:`.train`: the ``train_seg`` case (on-device step rate vs loader-fed rate);
- :mod:`.report`: the markdown table, the ``train_seg`` lines, the machine description, the JSON.

The layers below (models, data, inference, engine) never import this package.
"""
