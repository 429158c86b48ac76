"""The Elasticsearch sink against noida-db as an import grows: is a batch's write as fast at the end as at the start?

    python bench/sink_es_growth.py                     # 400k events in batches of 10k (the kill -9 test's import)
    python bench/sink_es_growth.py --rows 200000 --batch-rows 50000

Writes synthetic event frames (one month, so one index) to a noida-db of its own through ElasticsearchSink, timing
each write_events call. Prints the median of the first and of the last five batches and their ratio (flat: about
1). Baseline, in the same run at the end: the ids lookup the sink used to make before every batch, a search of
the whole events alias for one batch's ids (noida-db scans every document for it), against the median of the
last five writes. Prints figures, asserts nothing."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from daemon.config import ElasticsearchConfig  # noqa: E402
from daemon.sinks.elasticsearch import ElasticsearchSink  # noqa: E402
from tests.fixtures.noida import Noida  # noqa: E402

SEPT_2020_MS = 1_600_000_000_000


def frame(start: int, rows: int) -> pl.DataFrame:
    line = pl.int_range(start, start + rows, eager=True).alias("line")
    return pl.DataFrame(line).with_columns(
        event_id=pl.col("line").hash(seed=7).cast(pl.String),  # a 64-bit decimal: a valid 128-bit id
        identity=pl.lit("user") + (pl.col("line") % 5000).cast(pl.String),
        name=pl.lit("Bought"),
        ts=pl.col("line") + SEPT_2020_MS,
        properties=pl.lit('{"n":1}'),
    )


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def run(rows: int, batch_rows: int, server: Noida) -> None:
    sink = ElasticsearchSink(ElasticsearchConfig(url=server.url, index_prefix="bench", request_timeout="600s"))
    await sink.start()
    times: list[float] = []
    try:
        for start in range(0, rows, batch_rows):
            batch = frame(start, min(batch_rows, rows - start))
            began = time.perf_counter()
            written = await sink.write_events("acme", batch)
            times.append(time.perf_counter() - began)
            if written:
                raise SystemExit(f"noida-db refused {len(written)} rows: {written[0].message}")
        assert server.process is not None
        first, last = statistics.median(times[:5]), statistics.median(times[-5:])
        print(f"rows {rows:,} in {len(times)} batches of {batch_rows:,}: {sum(times):.1f} s of writes")
        print(f"  write per batch, median of first 5: {first:.2f} s, of last 5: {last:.2f} s, ratio {last / first:.2f}")
        print(f"  noida-db RSS at the end: {rss_kb(server.process.pid) / 1024:.0f} MiB")
        # Baseline: the lookup made before every batch until now, at the import's final size.
        await sink.client.indices.refresh(index=sink.events_alias)
        ids = frame(0, batch_rows)["event_id"].to_list()
        began = time.perf_counter()
        found = await sink._stored_ids(sink.events_alias, ids)
        lookup = time.perf_counter() - began
        print(
            f"  baseline, the former per-batch lookup of {len(ids):,} ids in the whole alias: {lookup:.2f} s"
            f" ({len(found):,} found), {lookup / last:.1f} x the median of the last 5 writes"
        )
    finally:
        await sink.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--batch-rows", type=int, default=10_000, help="rows per write (config jobs.batch_rows)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ingestd-bench-es-") as tmp:
        server = Noida(Path(tmp) / "noida")
        server.start()
        try:
            asyncio.run(run(args.rows, args.batch_rows, server))
        finally:
            server.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
