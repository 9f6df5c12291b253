"""Write the decoded-sample cache of a segmentation config's training split (any layout).

``densemnv3 cache-dataset CONFIG [--split SPLIT] [--out DIR]
[--set data.root=... data.decoded_cache=DIR]``

Decodes every pair of ``data.root``'s split once into uncompressed ``.npy`` files under
``data.decoded_cache`` (or ``--out``), which training then memory-maps instead of decoding PNGs
(see :mod:`densemnv3.data.cache`). Needs about 8 MB of disk per 1024x2048 sample (24 GB for
Cityscapes train). Turn it on with ``--set data.decoded_cache=DIR``; rerun this tool after the
dataset changes (training refuses a stale cache and says so).
"""

import argparse
import dataclasses
import time

from densemnv3.cli.arguments import add_set_argument


def main(argv: list[str] | None = None) -> int:
    from densemnv3.config import load_config
    from densemnv3.data.cache import write_decoded_cache
    from densemnv3.data.formats import segmentation_dataset
    from densemnv3.errors import UserError
    from densemnv3.tasks.common import ensure_synthetic

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", help="a segmentation config")
    parser.add_argument("--split", help="dataset split (default: data.train_split)")
    parser.add_argument("--out", help="cache folder (default: data.decoded_cache)")
    parser.add_argument(
        "--threads", type=int, default=None, help="decoding threads (default: cores, at most 8)"
    )
    parser.add_argument("--no-progress", action="store_true")
    add_set_argument(parser)
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    if cfg.task != "segmentation":
        raise UserError(
            f"{args.config}: the decoded cache is for segmentation configs, this one is "
            f"{cfg.task!r}"
        )
    out = args.out or cfg.data.decoded_cache
    if out is None:
        raise UserError("say where to write the cache: --set data.decoded_cache=DIR (or --out DIR)")
    ensure_synthetic(cfg)
    split = args.split or cfg.data.train_split
    data = dataclasses.replace(cfg.data, cache_images=False)  # each pair is read once here
    dataset = segmentation_dataset(data, split, None)
    start = time.perf_counter()
    write_decoded_cache(dataset, out, progress=not args.no_progress, threads=args.threads)
    bad = sum(1 for _ in dataset.bad_files)
    print(
        f"wrote {out}: {len(dataset)} samples of {cfg.data.root} split "
        f"{split!r}{f' ({bad} bad, skipped in training)' if bad else ''} in "
        f"{time.perf_counter() - start:.1f} s; train with --set data.decoded_cache={out}"
    )
    return 0
