"""Split a safetensors file into parts under a size limit, and join them back, metadata kept.

    python scripts/safetensors_parts.py split run/model.safetensors out/ --max-mb 15.5
    python scripts/safetensors_parts.py join model.safetensors out/model.part*.safetensors

A transport aid: the GPU machine returns files of at most 16 MiB, and a prior's fp32 weights are
larger. Each part is a whole safetensors file holding some of the tensors and the original's
metadata; joining checks that no tensor is missing or given twice.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

PART_NAME = re.compile(r"\.part\d+of(\d+)\.safetensors$")


def split(path: Path, out: Path, max_bytes: int) -> list[Path]:
    with safe_open(str(path), "pt") as f:
        metadata, names = f.metadata() or {}, sorted(f.keys())
        tensors = {n: f.get_tensor(n) for n in names}
    parts: list[dict] = [{}]
    size = 0
    for name in names:
        nbytes = tensors[name].numel() * tensors[name].element_size()
        if parts[-1] and size + nbytes > max_bytes:
            parts.append({})
            size = 0
        parts[-1][name] = tensors[name]
        size += nbytes
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, part in enumerate(parts):
        target = out / f"{path.stem}.part{i}of{len(parts)}.safetensors"
        save_file(part, str(target), metadata=metadata)
        written.append(target)
    return written


def join(target: Path, parts: list[Path]) -> None:
    tensors, metadata = {}, None
    for part in parts:
        with safe_open(str(part), "pt") as f:
            if metadata is None:
                metadata = f.metadata() or {}
            elif (f.metadata() or {}) != metadata:
                raise SystemExit(f"{part}: its metadata differs from {parts[0]}'s; these are parts of different files")
            for name in f.keys():
                if name in tensors:
                    raise SystemExit(f"{part}: tensor {name} is also in an earlier part")
                tensors[name] = f.get_tensor(name)
    counts = {m.group(1) if (m := PART_NAME.search(p.name)) else None for p in parts}
    if counts != {str(len(parts))}:
        raise SystemExit(f"expected every part of one split (name.partIofN.safetensors), got {[p.name for p in parts]}")
    tmp = target.with_name(target.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("split")
    s.add_argument("file", type=Path)
    s.add_argument("out", type=Path)
    s.add_argument("--max-mb", type=float, default=15.5, help="largest part in MiB (the GPU machine returns files up to 16)")
    j = sub.add_parser("join")
    j.add_argument("target", type=Path)
    j.add_argument("parts", type=Path, nargs="+")
    args = parser.parse_args()
    if args.command == "split":
        for p in split(args.file, args.out, int(args.max_mb * 2**20)):
            print(p)
    else:
        join(args.target, sorted(args.parts))


if __name__ == "__main__":
    main()
