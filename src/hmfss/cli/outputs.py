"""Output files of ``hmfss predict``: one distinct name per query, no output replacing another
or an input, every query decoded before the first output is written, and the progress bar."""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from hmfss.errors import HmfssError


def output_names(paths: list[Path]) -> list[str]:
    """One distinct output name (without ``_mask.png``) per distinct query path; names that
    differ only by letter case count as the same (case-insensitive file systems).

    Queries of one folder that differ only by suffix get it (``x_jpg``, ``x_png``); a name
    still shared by queries of different folders gets the fewest trailing folder names that
    tell them apart (``a/x``, ``b/x``); any name still taken (``x.jpg`` beside ``x.JPG``, or
    beside ``x_jpg.png``) gets a number (``x_jpg_2``).
    """
    resolved = [p.resolve() for p in paths]
    same_folder = Counter((p.parent, p.stem.casefold()) for p in resolved)
    names = [f"{p.stem}_{p.suffix.lstrip('.').lower()}" if same_folder[p.parent, p.stem.casefold()] > 1 else p.stem
             for p in resolved]
    groups: dict[str, list[int]] = {}
    for index, name in enumerate(names):
        groups.setdefault(name.casefold(), []).append(index)
    folders = [p.parent.parts[1:] for p in resolved]  # without the root: names stay inside --out
    for group in groups.values():
        if len(group) < 2:
            continue
        for n in range(1, max(len(folders[i]) for i in group) + 1):
            candidate = ["/".join(folders[i][-n:] + (names[i],)) for i in group]
            if len({c.casefold() for c in candidate}) == len(group):
                for i, value in zip(group, candidate):
                    names[i] = value
                break
    return _numbered_duplicates(names)


def _numbered_duplicates(names: list[str]) -> list[str]:
    """``names`` with every repeat (letter case ignored) after the first numbered ``_2``,
    ``_3``, ... where that name is free."""
    taken = {name.casefold() for name in names}
    seen: set[str] = set()
    out = []
    for name in names:
        if name.casefold() in seen:
            number = 2
            while f"{name}_{number}".casefold() in taken:
                number += 1
            name = f"{name}_{number}"
            taken.add(name.casefold())
        seen.add(name.casefold())
        out.append(name)
    return out


def check_output_files(out_dir: Path, files: list[tuple[str, Path]], inputs: list[Path]) -> None:
    """Refuse a run whose outputs (file name, query it is written for) would overwrite one
    another (letter case ignored) or one of the run's input files."""
    owners: dict[str, tuple[str, Path]] = {}
    for name, query in files:
        other = owners.setdefault(name.casefold(), (name, query))
        if other[1] != query or other[0] != name:
            raise HmfssError(f"two outputs would be named {out_dir / name}: one for {other[1]}, one for {query} "
                             "(rename a query or a class folder)")
    protected = {p.resolve() for p in inputs}
    for name, query in files:
        if (out_dir / name).resolve() in protected:
            raise HmfssError(f"--out {out_dir}: the output {out_dir / name} for {query} would overwrite an input "
                             "file; choose another --out folder")


def query_outputs(queries: list[Path], names: list[str], suffixes: list[str]) -> list[tuple[str, Path]]:
    """(output file name, query) for every query and suffix."""
    return [(f"{name}{suffix}", query) for query, name in zip(queries, names) for suffix in suffixes]


def check_queries_decode(queries: list[Path]) -> None:
    """Decode every query once (JPEGs at a reduced scale) before anything is written: a
    truncated file or NaN samples are refused now, not after the first outputs exist. A few
    threads decode at once (Pillow decodes without the GIL); the first bad query in order wins."""
    from hmfss.data.io import check_image_file, read_image

    for query in queries:
        check_image_file(query)
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for _ in pool.map(lambda query: read_image(query, draft=(1, 1)).size, queries):
            pass


@contextmanager
def progress_bar(total: int) -> Iterator:
    """A tqdm bar over ``total`` queries (none for a single one), ended on its own line even
    when the run stops with an error, so that the error message starts a line."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc="predict", unit="img", disable=total < 2)
    try:
        yield bar
    finally:
        bar.close()
