"""Command line for the embedded models: ``fermi-dspy models {list,fetch,path}`` (or ``python -m fermi_dspy.lm``).

Examples:
    fermi-dspy models list
    fermi-dspy models fetch qwen2.5-coder-0.5b
    fermi-dspy models path smollm2-135m
"""

import argparse
import logging
import sys

from fermi_dspy.lm.errors import FETCH_COMMAND, LocalLMError
from fermi_dspy.lm.models import MODELS, cached_model_path, default_cache_dir, ensure_model


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run the command line; return the exit status.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).
        prog: The program name shown in help (default: ``fermi-dspy models`` when run from that script).
    """
    if prog is None:
        prog = "fermi-dspy models" if sys.argv and sys.argv[0].endswith("fermi-dspy") else "python -m fermi_dspy.lm"
    parser = argparse.ArgumentParser(prog=prog, description="Manage the embedded local models.")
    parser.add_argument("--cache-dir", default=None, help=f"model cache (default: {default_cache_dir()})")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the registered models and whether they are cached")
    fetch = sub.add_parser("fetch", help="download, assemble and verify models")
    fetch.add_argument("names", nargs="+", metavar="NAME", choices=[*MODELS, "all"])
    fetch.add_argument("--download-dir", default=None, help="keep the downloaded wheels here")
    path = sub.add_parser("path", help="print the path of a cached model (exit 1 if missing)")
    path.add_argument("name", choices=list(MODELS))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    try:
        if args.command == "list":
            for name, spec in MODELS.items():
                cached = cached_model_path(name, args.cache_dir)
                status = str(cached) if cached else "not fetched"
                print(f"{name:20} {spec.description:40} {spec.size / 1e6:7.0f} MB  {status}")
        elif args.command == "fetch":
            names = list(MODELS) if "all" in args.names else args.names
            for name in names:
                print(ensure_model(name, args.cache_dir, download_dir=args.download_dir))
        else:
            cached = cached_model_path(args.name, args.cache_dir)
            if cached is None:
                print(f"{args.name} is not fetched; run `{FETCH_COMMAND.format(name=args.name)}`", file=sys.stderr)
                return 1
            print(cached)
    except LocalLMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
