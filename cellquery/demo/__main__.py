"""`python -m cellquery.demo env|summary|stop-server [--scale S] [--storage local|s3]`: shell exports for
the demo, what it holds, or stop the object server of an S3 demo (it is started again when needed)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from cellquery.demo.catalog import SCALES
from cellquery.instances.demo_instance import STORAGE_KINDS, DemoInstance
from cellquery.instances.lamin import connect


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m cellquery.demo")
    parser.add_argument("command", choices=["env", "summary", "stop-server"])
    parser.add_argument("--scale", default="small", choices=SCALES)
    parser.add_argument("--storage", default="local", choices=STORAGE_KINDS)
    parser.add_argument("--project", type=Path, default=Path.cwd())
    args = parser.parse_args()
    demo = DemoInstance(args.project, args.scale, storage_kind=args.storage)
    if args.command == "stop-server":
        demo.object_server.stop()
        return
    if args.command == "env":
        for name, value in demo.env().items():
            print(f"export {name}={shlex.quote(value)}")
        return
    if not demo.sqlite_path.exists():
        raise SystemExit(f"no demo instance at {demo.root}: run `make demo SCALE={args.scale}` first")
    from cellquery.demo.summary import as_text, summarise

    print(as_text(summarise(connect(demo.env()))))


if __name__ == "__main__":
    main()
