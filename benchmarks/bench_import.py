"""Benchmark: importing a generated CSV into SQLite with phone normalisation.

Measures, each import in a fresh child process so peak memory is its own:

- the baseline: reading the same file with the ``csv`` module and nothing else;
- the importer alone: ``import_file`` into a repository that discards writes;
- the repository alone: ``SQLRepository.upsert`` of the same, prebuilt customers;
- ``import_file`` into a new SQLite database (matching on phone, every row
  normalised: phone to E.164, email checked, a date read), into a group
  (every customer joins it with origin IMPORTED), and the same without a group;
- the same without a group into a database that has six rule groups, then a
  read of each (which catches up on the import): issue 12 asks at most 1.5x the
  import into an empty database;
- ``import_file`` into a MemoryRepository, into a group (it keeps every
  customer in memory, so its RSS grows with the file by design);
- peak RSS (``resource.getrusage``) of each child, and for SQLite with a
  group at the full size and at a tenth of it: memory must not grow with the file;
- the CPU seconds of each child beside its wall time: on a shared machine the
  rate per CPU second is the steadier figure;
- the seconds the cyclic garbage collector took in each child (it walks every
  tracked object: a share of the import's time that no code path shows).

Goals (issue 5): at least 20,000 rows/s, under 300 MB peak RSS at 1,000,000 rows.

Usage::

    python benchmarks/bench_import.py              # 1,000,000 rows
    python benchmarks/bench_import.py --rows 100000
    python benchmarks/bench_import.py --quick      # 20,000 rows
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

GOAL_RATE = 20_000
GOAL_RSS_MB = 300

FIRST = ["Élise", "Marc", "Zoé", "Luc", "Amélie", "Hugo", "Chloé", "Noah", "Léa", "William", "Jade", "Félix"]
LAST = ["Roy", "Tremblay", "Côté", "Gagnon", "Bouchard", "Lefebvre", "Morin", "Pelletier", "Bélanger", "Lavoie"]
CITIES = ["Laval", "Montréal", "Québec", "Longueuil", "Gatineau", "Terrebonne", "Lévis", "Sherbrooke"]
PHONE_STYLES = ["({a}) {e}-{l}", "{a} {e} {l}", "{a}-{e}-{l}", "+1 {a} {e} {l}", "{a}.{e}.{l}", "1-{a}-{e}-{l}"]


# The six rule groups of the "into a database with rule groups" measure (issue: at most 1.5x the empty one).
RULE_GROUPS = [
    ("Laval", 'customer.city = "Laval"'),
    ("Big cities", 'customer.city in ["Montréal", "Québec"]'),
    ("Seen lately", "appointment.last_time within last 90 days"),
    ("Ever seen", "appointment.count >= 1"),
    ("Tremblay", 'customer.last_name = "Tremblay"'),
    ("Lapsed in Laval", 'customer in group "Laval" and customer not in group "Seen lately"'),
]


def generate(path: Path, rows: int, seed: int = 5, bad_every: int = 1000) -> None:
    """A CSV export with a BOM, semicolons and French headers; one row in ``bad_every`` has a bad phone."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8-sig", newline="") as file:
        writer = csv.writer(file, delimiter=";")
        writer.writerow(["Prénom", "Nom", "Cellulaire", "Courriel", "Ville", "Rendez-vous", "Notes"])
        for i in range(rows):
            area = 200 + (i // 10_000_000) % 800
            exchange, line = divmod(i % 10_000_000, 10_000)
            phone = rng.choice(PHONE_STYLES).format(a=area, e=f"{exchange:03}", l=f"{line:04}")
            if bad_every and i % bad_every == bad_every - 1:
                phone = "555-01"
            first, last = rng.choice(FIRST), rng.choice(LAST)
            day = f"2026-{1 + i % 12:02}-{1 + i % 28:02} {8 + i % 10}:{15 * (i % 4):02}" if i % 3 else ""
            notes = "rappeler\nle matin" if i % 97 == 0 else ""
            writer.writerow([first, last, phone, f"client{i}@example.com", rng.choice(CITIES), day, notes])


def baseline(path: Path) -> float:
    """Seconds to read the file with the csv module only."""
    start = time.perf_counter()
    with path.open(encoding="utf-8-sig", newline="") as file:
        for _ in csv.reader(file, delimiter=";"):
            pass
    return time.perf_counter() - start


def _null_repository() -> Any:
    """A repository that stores nothing: isolates the importer's own cost (reading, normalising, matching)."""
    from cohorts.repository import MemoryRepository

    class NullRepository(MemoryRepository):
        def upsert(self, customers: Any) -> None:
            for _ in customers:
                pass

    return NullRepository(region="CA")


def child(path: str, db: str, mode: str) -> dict[str, float]:
    """Run one measurement (in this process) and return its figures.

    ``sqlite``: the whole import into SQLite, with a group; ``sqlite-nogroup``
    without one; ``sqlite-6groups`` without one into a database with six rule groups, then a read
    of each group (which catches up on the import). ``null``: the same into a repository that discards writes,
    without a group (reading, normalising and matching: the importer's own
    cost); ``memory`` into MemoryRepository, with a group. ``upsert``: the customers the file
    holds, already normalised, written with ``SQLRepository.upsert`` in the
    importer's batches (the repository's floor).
    """
    from cohorts import Customer, Event
    from cohorts.importers import BATCH_SIZE, import_file, normalise_time

    rows = created = rejected = 0
    collecting = _GcClock()
    gc.callbacks.append(collecting)
    if mode == "upsert":
        from cohorts.sql import SQLRepository

        repository = SQLRepository(f"sqlite:///{db}", region="CA")
        with open(path, encoding="utf-8-sig", newline="") as file:
            records = csv.reader(file, delimiter=";")
            next(records)
            start, cpu_start = time.perf_counter(), _cpu_seconds()
            batch: list[Customer] = []
            with repository.transaction():
                for i, (first, last, _phone, email, city, day, _notes) in enumerate(records):
                    events = [Event("appointment", normalise_time(day))] if day else []
                    attributes = {
                        "first_name": first,
                        "last_name": last,
                        "phone": f"+1514{i:07}",
                        "email": email,
                        "city": city,
                    }
                    batch.append(Customer(f"c{i}", attributes, events))
                    if len(batch) == BATCH_SIZE:
                        repository.upsert(batch)
                        batch = []
                repository.upsert(batch)
            rows = created = i + 1
    else:
        if mode == "memory":
            from cohorts.repository import MemoryRepository

            repository = MemoryRepository(region="CA")
            group = "Imported"
        elif mode == "null":
            repository = _null_repository()
            group = None
        else:
            from cohorts.sql import SQLRepository

            repository = SQLRepository(f"sqlite:///{db}", region="CA")
            group = None if mode in ("sqlite-nogroup", "sqlite-6groups") else "Imported"
        groups = None
        if mode == "sqlite-6groups":  # the database already has rule groups: they catch up at the next read
            from cohorts.groups import Groups

            groups = Groups(repository)
            for name, rule in RULE_GROUPS:
                groups.create(name, rule)
            groups.refresh()  # at the current time: the import's writes are dated now
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        report = import_file(path, repository, group=group, region="CA", match_on="phone")
        if groups is not None:
            members = sum(groups.count(name) for name, _ in RULE_GROUPS)
            assert members > 0
        rows, created, rejected = report.rows_read, report.created, report.rejected
    seconds = time.perf_counter() - start
    gc.callbacks.remove(collecting)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - cpu_start
    return {
        "rows": rows,
        "created": created,
        "rejected": rejected,
        "seconds": seconds,
        "cpu": cpu,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "gc_seconds": collecting.seconds,
    }


class _GcClock:
    """A ``gc.callbacks`` entry adding up the time spent in collections."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cpu_note(figures: dict[str, float]) -> str:
    return (
        f"{figures['cpu']:.2f} s CPU, {figures['rows'] / figures['cpu']:,.0f} rows per CPU s, "
        f"{figures['gc_seconds']:.2f} s in gc"
    )


def run_child(path: Path, mode: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as scratch:
        db = os.path.join(scratch, "customers.db")
        command = [sys.executable, __file__, "--child", str(path), "--db", db, "--mode", mode]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    figures: dict[str, float] = json.loads(output.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the generated file (default 1,000,000)")
    parser.add_argument("--quick", action="store_true", help="20,000 rows")
    parser.add_argument("--child", metavar="FILE", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="sqlite", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.db, args.mode)))
        return
    rows = 20_000 if args.quick else args.rows
    tenth = max(rows // 10, 1)
    with tempfile.TemporaryDirectory() as scratch:
        small_path, full_path = Path(scratch) / "small.csv", Path(scratch) / "full.csv"
        generate(full_path, rows)
        generate(small_path, tenth)
        size_mb = full_path.stat().st_size / 1e6
        print(f"file: {rows:,} rows, {size_mb:.1f} MB (semicolons, BOM, 1 bad phone per 1,000 rows)")
        read_seconds = baseline(full_path)
        print(f"baseline csv.reader only:             {rows / read_seconds:>9,.0f} rows/s ({read_seconds:.2f} s)")
        alone = run_child(full_path, "null")
        print(
            f"importer alone (writes discarded):    {alone['rows'] / alone['seconds']:>9,.0f} rows/s "
            f"({alone['seconds']:.2f} s, {alone['seconds'] / read_seconds:.0f}x the baseline, "
            f"peak RSS {alone['peak_rss_mb']:.0f} MB; {_cpu_note(alone)})"
        )
        upsert = run_child(full_path, "upsert")
        print(
            f"SQLRepository.upsert alone:           {upsert['rows'] / upsert['seconds']:>9,.0f} rows/s "
            f"({upsert['seconds']:.2f} s, prebuilt customers in the same batches; {_cpu_note(upsert)})"
        )
        small = run_child(small_path, "sqlite")
        full = run_child(full_path, "sqlite")
        plain = run_child(full_path, "sqlite-nogroup")
        ruled = run_child(full_path, "sqlite-6groups")
        memory = run_child(full_path, "memory")
    rate = full["rows"] / full["seconds"]
    print(
        f"import_file into SQLite with a group: {rate:>9,.0f} rows/s ({full['seconds']:.2f} s; "
        f"{full['created']:,.0f} created, {full['rejected']:,.0f} rejected; "
        f"{full['seconds'] / read_seconds:.0f}x the baseline, peak RSS {full['peak_rss_mb']:.0f} MB; {_cpu_note(full)})"
    )
    print(
        f"import_file into SQLite, no group:    {plain['rows'] / plain['seconds']:>9,.0f} rows/s "
        f"({plain['seconds']:.2f} s, {plain['seconds'] / read_seconds:.0f}x the baseline, "
        f"peak RSS {plain['peak_rss_mb']:.0f} MB; {_cpu_note(plain)}; the group costs "
        f"{full['cpu'] / plain['cpu']:.2f}x in CPU)"
    )
    print(
        f"import_file into SQLite, 6 rule groups then a read of each: {ruled['rows'] / ruled['seconds']:>9,.0f} rows/s "
        f"({ruled['seconds']:.2f} s, {ruled['seconds'] / plain['seconds']:.2f}x the import into an empty database, "
        f"{ruled['cpu'] / plain['cpu']:.2f}x in CPU; goal at most 1.5x)"
    )
    print(
        f"import_file into memory, a group:     {memory['rows'] / memory['seconds']:>9,.0f} rows/s "
        f"({memory['seconds']:.2f} s, {memory['seconds'] / read_seconds:.0f}x the baseline, "
        f"peak RSS {memory['peak_rss_mb']:.0f} MB: it holds every customer; {_cpu_note(memory)})"
    )
    print(
        f"peak RSS of the SQLite import: {full['peak_rss_mb']:.0f} MB at {rows:,} rows, "
        f"{small['peak_rss_mb']:.0f} MB at {tenth:,} rows (ratio {full['peak_rss_mb'] / small['peak_rss_mb']:.2f} "
        f"for 10x the rows)"
    )
    print(
        f"goals: >= {GOAL_RATE:,} rows/s: {'met' if rate >= GOAL_RATE else 'NOT met'}; "
        f"< {GOAL_RSS_MB} MB: {'met' if full['peak_rss_mb'] < GOAL_RSS_MB else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
