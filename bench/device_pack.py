"""Copy the sample caches a long-stream config needs into ``.devdata/cache`` (for ``bench/device_run.sh``).

Usage::

    python -m bench.device_pack configs/bench/long_stream_brain.yaml

Loads every dataset of the config once (filling ``.cache/clickadapt`` from ``../shared/data`` if needed) and
copies exactly those cache files, so that the GPU machine, which has no copy of the data, finds them.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import yaml

from bench.long_stream import LongStreamConfig
from clickadapt.data.registry import cache_key, get_reader, load_samples

TARGET = Path(".devdata/cache")


def main() -> int:
    """Copy the caches of one config; print what was copied."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    args = parser.parse_args()
    config = LongStreamConfig.model_validate(yaml.safe_load(args.config.read_text()))
    if config.cache_dir is None:
        raise SystemExit(f"{args.config}: cache_dir is null; nothing to pack")
    datasets = [d for s in config.segments for d in s.datasets]
    datasets += [*config.forgetting, *config.sentinel_data, *config.rehearsal_data]
    TARGET.mkdir(parents=True, exist_ok=True)
    for dataset in datasets:
        load_samples(dataset, config.cache_dir)
        path = config.cache_dir / f"{get_reader(dataset.reader).name}-{cache_key(dataset)[:24]}.npz"
        shutil.copy2(path, TARGET / path.name)
        print(f"{path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
