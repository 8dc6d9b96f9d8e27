"""`python -m erda_sparse.data.prepare --data-root DIR`: builds the preprocessing cache of a ScanNet v2
raw folder (train and val by default), in parallel, with a progress bar. Stale files are rebuilt."""
import argparse
import sys

from . import cache, scannet


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-root", required=True, help="ScanNet v2 raw folder (scans/, scannetv2_*.txt)")
    p.add_argument("--cache-dir", default=None, help="where the cache goes (default: per data root, under ~/.cache)")
    p.add_argument("--splits", default="train,val", help="comma-separated among train, val, test")
    p.add_argument("--workers", type=int, default=None)
    args = p.parse_args(argv)
    try:
        cache_dir, by_split = cache.prepare(args.data_root, tuple(args.splits.split(",")), args.cache_dir,
                                            args.workers)
    except scannet.ScanNetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n = sum(len(v) for v in by_split.values())
    print(f"{n} scene(s) cached in {cache_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
