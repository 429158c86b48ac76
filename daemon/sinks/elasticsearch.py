"""The Elasticsearch sink: async bulk into a profiles index and monthly event indices behind an alias."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Iterator
from typing import Any

import polars as pl
from elastic_transport import AsyncTransport, ConnectionError, ConnectionTimeout, SerializationError
from elasticsearch import ApiError, AsyncElasticsearch, NotFoundError

from daemon.config import ElasticsearchConfig
from daemon.errors import RetryableError
from daemon.logs import event
from daemon.metrics import SINK_ERRORS
from daemon.sinks import profile_ops
from daemon.sinks.base import (
    EVENT_COLUMNS,
    INCOMPLETE_EVENT,
    PROFILE_COLUMNS,
    RowFailure,
    Sink,
    Written,
    check_columns,
    iso_ms,
    valid_events,
)

log = logging.getLogger("ingestd.sink")

# Dates as epoch_millis or ISO 8601, never epoch_second (which noida-db, our test server, mishandles).
_DATE = {"type": "date", "format": "strict_date_optional_time||epoch_millis"}
# Partners' properties are stored, not indexed: one file's "Age" as text and another's as a number
# must not turn into mapping conflicts that reject rows.
_PROPERTIES = {"type": "object", "enabled": False}
EVENT_MAPPINGS = {
    "dynamic": "strict",
    "properties": {
        "account": {"type": "keyword"},
        "identity": {"type": "keyword"},
        "name": {"type": "keyword"},
        "ts": _DATE,
        "line": {"type": "long"},
        # exports: when the event was written (epoch ms, set at bulk time), the arrival order runs read by.
        "ingested": {"type": "long"},
        "properties": _PROPERTIES,
    },
}
PROFILE_MAPPINGS = {
    "dynamic": "strict",
    "properties": {
        "account": {"type": "keyword"},
        "identity": {"type": "keyword"},
        "ts": _DATE,
        # exports: when the profile was last written (epoch ms, set at bulk time), what recurring runs select by.
        "changed": {"type": "long"},
        "properties": _PROPERTIES,
    },
}

# base.apply_ops in painless; the map is assigned back at the end (not mutated through a reference) so
# that Elasticsearch and noida-db agree. Equality keeps true and 1 apart, as base._same does.
APPLY_OPS = """
Map p = ctx._source.properties;
if (p == null) { p = new HashMap(); }
for (def op : params.ops) {
  String kind = op[0]; String key = op[1]; def value = op[2];
  if (kind == '$set') { p[key] = value; }
  else if (kind == '$delete') { p.remove(key); }
  else if (kind == '$add') {
    def current = p[key];
    List values;
    if (current == null) { values = new ArrayList(); }
    else if (current instanceof List) { values = current; }
    else { values = new ArrayList(); values.add(current); }
    boolean found = false;
    for (def item : values) {
      if (item == value && (item instanceof Boolean) == (value instanceof Boolean)) { found = true; break; }
    }
    if (!found) { values.add(value); }
    p[key] = values;
  } else if (kind == '$remove') {
    def current = p[key];
    if (current == null) { continue; }
    List values;
    if (current instanceof List) { values = current; } else { values = new ArrayList(); values.add(current); }
    List kept = new ArrayList();
    for (def item : values) {
      if (!(item == value && (item instanceof Boolean) == (value instanceof Boolean))) { kept.add(item); }
    }
    if (kept.isEmpty()) { p.remove(key); } else if (current instanceof List) { p[key] = kept; }
  }
}
ctx._source.properties = p;
ctx._source.account = params.account;
ctx._source.identity = params.identity;
ctx._source.ts = params.ts;
ctx._source.changed = params.changed;
"""

_MAX_ID_BYTES = 512  # Elasticsearch refuses longer document ids
_CHUNK_BYTES = 8 * 1024 * 1024
_CHUNK_ACTIONS = 5_000
_IN_FLIGHT = 2  # bulk requests at once per batch
_HEALTH_TIMEOUT = 5.0
_FILTER = "errors,items.*.status,items.*.error"
_LOOKUP_IDS = 10_000  # ids per lookup search: the default index.max_result_window


class _CompatTransport(AsyncTransport):
    """elasticsearch-py 9 asks for `compatible-with=9`, which Elasticsearch 8 refuses; 8 is understood by both."""

    # An async override of the sync Transport method, as AsyncTransport's own (which ignores the same code).
    async def perform_request(self, method: str, target: str, *, headers: Any = None, **kwargs: Any) -> Any:  # type: ignore[override]
        if headers:
            headers = headers.copy()
            for name in ("accept", "content-type"):
                value = headers.get(name)
                if value and "compatible-with=9" in value:
                    headers[name] = value.replace("compatible-with=9", "compatible-with=8")
        return await super().perform_request(method, target, headers=headers, **kwargs)


def profile_id(account: str, identity: str) -> str:
    """`account:identity`, or its sha256 when that would exceed Elasticsearch's 512-byte id limit."""
    doc_id = f"{account}:{identity}"
    if len(doc_id.encode()) <= _MAX_ID_BYTES:
        return doc_id
    return f"{account}:sha256:{hashlib.sha256(identity.encode()).hexdigest()}"


class ElasticsearchSink(Sink):
    """Writes are bulk requests; 429s, 5xx and connection errors are retried, then raised as RetryableError."""

    name = "elasticsearch"
    attempts = 4  # per request before giving up to the worker, which pauses the job and retries later
    first_delay = 0.5

    def __init__(self, config: ElasticsearchConfig) -> None:
        self.config = config
        self.max_retry_delay = config.max_retry_delay
        self.url = config.url
        prefix = config.index_prefix
        self.profiles_index = f"{prefix}-profiles"
        self.events_alias = f"{prefix}-events"
        self.events_pattern = f"{prefix}-events-*"  # the monthly indices, which the template puts behind the alias
        self.script_id = f"{prefix}-apply-profile-ops"
        self._client: AsyncElasticsearch | None = None
        self._schema_ready = False

    def banner(self) -> list[str]:
        return [f"  sink   elasticsearch {self.url} (indices {self.config.index_prefix}-*)"]

    async def open_for_reading(self) -> None:
        self.attempts = 1  # a person is waiting: say at once that the cluster is down; nothing to create

    @property
    def client(self) -> AsyncElasticsearch:
        if self._client is None:
            auth = (self.config.username, self.config.password) if self.config.username else None
            self._client = AsyncElasticsearch(
                self.url,
                basic_auth=auth,
                request_timeout=self.config.request_timeout,
                max_retries=0,  # retries are ours, so an outage is reported instead of hidden
                retry_on_timeout=False,
                transport_class=_CompatTransport,
            )
        return self._client

    async def start(self) -> None:
        try:
            await self._ensure_schema()
        except RetryableError as exc:
            # The daemon still starts; writes wait for Elasticsearch and create the schema then.
            event(log, "sink.unavailable", logging.WARNING, driver=self.name, reason=str(exc))

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def _ensure_schema(self) -> None:
        if self._schema_ready:
            return
        try:
            await self._create_schema()
        except ApiError as exc:
            # An operator's problem (an old or locked-down cluster), not the partner's: pause jobs and say why.
            raise RetryableError(
                f"elasticsearch at {self.url} refused the index templates: {exc.meta.status} {exc.error} {exc.info}"[
                    :500
                ],
                delay=self.config.max_retry_delay,
            ) from exc
        self._schema_ready = True

    async def _create_schema(self) -> None:
        prefix = self.config.index_prefix
        await self._call(
            self.client.indices.put_index_template,
            name=f"{prefix}-events",
            index_patterns=[self.events_pattern],
            priority=200,
            template={"mappings": EVENT_MAPPINGS, "aliases": {self.events_alias: {}}},
        )
        await self._call(
            self.client.indices.put_index_template,
            name=f"{prefix}-profiles",
            index_patterns=[self.profiles_index],
            priority=200,
            template={"mappings": PROFILE_MAPPINGS},
        )
        # exports: event indices made before the `ingested` field existed learn it (strict mappings refuse it).
        if await self._call(self.client.indices.exists_alias, name=self.events_alias):
            await self._call(
                self.client.indices.put_mapping, index=self.events_alias, properties={"ingested": {"type": "long"}}
            )
        if not await self._call(self.client.indices.exists, index=self.profiles_index):
            try:
                await self._call(self.client.indices.create, index=self.profiles_index)
            except ApiError as exc:
                if exc.error != "resource_already_exists_exception":  # another process was quicker
                    raise
        else:  # made before the `changed` field existed: it learns it (the strict mapping would refuse it)
            await self._call(
                self.client.indices.put_mapping, index=self.profiles_index, properties={"changed": {"type": "long"}}
            )
        await self._call(self.client.put_script, id=self.script_id, script={"lang": "painless", "source": APPLY_OPS})

    async def _call(self, method: Any, **kwargs: Any) -> Any:
        """One API call with back-off on 429, 5xx and connection errors; RetryableError when they persist."""
        delay = self.first_delay
        for attempt in range(1, self.attempts + 1):
            try:
                return await method(**kwargs)
            except (ConnectionError, ConnectionTimeout, SerializationError) as exc:
                reason = f"elasticsearch unreachable at {self.url}: {_short(exc)}"
            except ApiError as exc:
                if exc.meta.status in (401, 403):
                    # Wrong credentials are fixed by an operator, not by retrying now: pause, lose nothing.
                    SINK_ERRORS.labels(kind="auth").inc()
                    raise RetryableError(
                        f"elasticsearch at {self.url} refused the credentials ({exc.meta.status} {exc.error})",
                        delay=self.config.max_retry_delay,
                    ) from exc
                if exc.meta.status != 429 and exc.meta.status < 500:
                    raise
                reason = f"elasticsearch at {self.url} answered {exc.meta.status} {exc.error}"
            SINK_ERRORS.labels(kind="retry").inc()
            if attempt == self.attempts:
                raise RetryableError(reason, delay=min(delay, self.config.max_retry_delay))
            event(log, "sink.retry", logging.WARNING, driver=self.name, attempt=attempt, reason=reason)
            await asyncio.sleep(min(delay, self.config.max_retry_delay))
            delay *= 2
        raise AssertionError("unreachable")

    async def _bulk(self, actions: list[str], lines: list[list[int]]) -> Written:
        """Send pre-serialised action+document pairs; `lines[i]` are the CSV lines behind action i.

        A few requests are in flight at once, so serialising and parsing here overlaps the server's work;
        that is safe because a batch holds one action per document.
        """
        gate = asyncio.Semaphore(_IN_FLIGHT)

        async def send(chunk: list[int]) -> Written:
            async with gate:
                return await self._send_chunk(actions, lines, chunk)

        tasks = [asyncio.ensure_future(send(chunk)) for chunk in _chunks(actions)]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return Written(
            [failure for failures in results for failure in failures], sum(part.duplicates for part in results)
        )

    async def _send_chunk(self, actions: list[str], lines: list[list[int]], chunk: list[int]) -> Written:
        """One bulk request; items refused with 429 are sent again with back-off; 409 on create = already stored."""
        failures = Written()
        pending = chunk
        delay = self.first_delay
        for attempt in range(1, self.attempts + 1):
            body = "".join(actions[i] for i in pending)
            response = await self._call(self.client.bulk, operations=body, filter_path=_FILTER)
            if not response.get("errors"):
                break
            rejected = []
            for index, item in zip(pending, response["items"], strict=True):
                result = next(iter(item.values()))
                status = result.get("status", 0)
                if status < 300:
                    continue
                if status == 409 and "create" in item:
                    failures.duplicates += 1
                    continue
                if status == 429:
                    rejected.append(index)
                    continue
                message = _item_error(result)
                SINK_ERRORS.labels(kind="row").inc()
                failures.extend(RowFailure(line, message) for line in lines[index])
            if not rejected:
                break
            if attempt == self.attempts:
                raise RetryableError(f"elasticsearch at {self.url} is overloaded (429)", delay=delay)
            SINK_ERRORS.labels(kind="retry").inc()
            event(log, "sink.retry", logging.WARNING, driver=self.name, attempt=attempt, rejected=len(rejected))
            await asyncio.sleep(min(delay, self.config.max_retry_delay))
            delay *= 2
            pending = rejected
        return failures

    async def write_events(self, account: str, frame: pl.DataFrame) -> Written:
        check_columns(frame, EVENT_COLUMNS, "events")
        await self._ensure_schema()
        # Serialising a batch is CPU work: done in a thread so the event loop stays free.
        failures, actions, lines, ids, targets, by_index = await asyncio.to_thread(self._event_actions, account, frame)
        if not actions:
            return Written(failures)
        # An event's monthly index comes from its ts, and an event without one takes the processing time's:
        # imported again in a later month, it would go to another index, where `create` cannot see it. So ids
        # already stored behind the alias in another index than their own are skipped (and counted) before the
        # bulk request; in their own index `create` answers 409.
        present = await self._stored_elsewhere(by_index)
        skipped = 0
        if present:
            kept = [i for i, doc_id in enumerate(ids) if doc_id not in present]
            skipped = len(ids) - len(kept)
            actions, lines = [actions[i] for i in kept], [lines[i] for i in kept]
            ids, targets = [ids[i] for i in kept], [targets[i] for i in kept]
        written = await self._bulk(actions, lines) if actions else Written()
        if written:
            written = await self._refused_but_stored(written, lines, ids, targets)
        return Written(failures + written, written.duplicates + skipped)

    async def _refused_but_stored(
        self, written: Written, lines: list[list[int]], ids: list[str], targets: list[str]
    ) -> Written:
        """Refused rows whose id is stored in their own index already are duplicates, not failures: `create`
        answers 409 for those, but an index made read-only since answers with its block, stored or not."""
        refused = {failure.line for failure in written}
        asked: dict[str, list[str]] = {}
        line_of: dict[str, int] = {}
        for [line], doc_id, target in zip(lines, ids, targets, strict=True):
            if line in refused:
                asked.setdefault(target, []).append(doc_id)
                line_of[doc_id] = line
        stored = {line_of[doc_id] for target, part in asked.items() for doc_id in await self._stored_ids(target, part)}
        if not stored:
            return written
        return Written([failure for failure in written if failure.line not in stored], written.duplicates + len(stored))

    async def _stored_elsewhere(self, by_index: dict[str, list[str]]) -> set[str]:
        """The ids of `by_index` (target index -> ids written to it) stored in another monthly index than their
        target.

        Only the other indices are searched: a search by ids costs by the documents it looks through (noida-db,
        the test server, scans them all), and the index being written to is the one that grows, so searching it
        made an import quadratic in its size. They are named as a wildcard and an exclusion, so the request
        line stays short however many months there are."""
        found: set[str] = set()
        for target, ids in by_index.items():
            found |= await self._stored_ids(f"{self.events_pattern},-{target}", ids)
        return found

    async def _stored_ids(self, index: str, ids: list[str]) -> set[str]:
        """The ids among `ids` stored in `index` (an index, alias or multi-target expression)."""
        found: set[str] = set()
        for start in range(0, len(ids), _LOOKUP_IDS):
            part = ids[start : start + _LOOKUP_IDS]
            try:
                response = await self._call(
                    self.client.search,
                    index=index,
                    query={"ids": {"values": part}},
                    size=len(part),
                    source=False,
                    filter_path="hits.hits._id",
                )
            except NotFoundError:  # no event stored yet, or the index was deleted meanwhile
                return found
            found.update(hit["_id"] for hit in (response.get("hits") or {}).get("hits") or [])
        return found

    def _event_actions(
        self, account: str, frame: pl.DataFrame
    ) -> tuple[list[RowFailure], list[str], list[list[int]], list[str], list[str], dict[str, list[str]]]:
        """The refused rows; the bulk action pairs with their CSV lines, ids and target indices; the ids by target."""
        complete = valid_events()
        failures = [RowFailure(line, INCOMPLETE_EVENT) for line in frame.filter(~complete)["line"].to_list()]
        good = frame.filter(complete)
        if good.is_empty():
            return failures, [], [], [], [], {}
        # Serialised column-wise by polars: the properties cell is already a JSON object and is spliced in as is.
        prefix = self.config.index_prefix
        month = pl.from_epoch(pl.col("ts"), time_unit="ms").dt.strftime("%Y.%m")
        # `ingested` (exports): when this batch was written; a retry after a crash is a 409, the first time stays.
        ingested = pl.lit(int(time.time() * 1000)).alias("ingested")
        head = pl.struct(
            pl.lit(account).alias("account"), "identity", "name", "ts", "line", ingested
        ).struct.json_encode()
        index = pl.concat_str(pl.lit(f"{prefix}-events-"), month)
        pairs = good.select(
            pl.concat_str(
                pl.lit('{"create":{"_index":"'),
                index,
                pl.lit('","_id":"'),
                pl.col("event_id"),
                pl.lit('"}}\n'),
                head.str.head(-1),
                pl.lit(',"properties":'),
                pl.col("properties"),
                pl.lit("}\n"),
            ).alias("pair"),
            "line",
            "event_id",
            index.alias("index"),
        )
        lines = [[line] for line in pairs["line"].to_list()]
        grouped = pairs.group_by("index").agg("event_id")
        by_index = dict(zip(grouped["index"].to_list(), grouped["event_id"].to_list(), strict=True))
        return failures, pairs["pair"].to_list(), lines, pairs["event_id"].to_list(), pairs["index"].to_list(), by_index

    async def write_profiles(self, account: str, frame: pl.DataFrame) -> Written:
        check_columns(frame, PROFILE_COLUMNS, "profiles")
        await self._ensure_schema()
        failures, actions, lines = await asyncio.to_thread(self._profile_actions, account, frame)
        if not actions:
            return Written(failures)
        written = await self._bulk(actions, lines)
        return Written(failures + written)  # a profile row is applied, never a duplicate

    def _profile_actions(
        self, account: str, frame: pl.DataFrame
    ) -> tuple[list[RowFailure], list[str], list[list[int]]]:
        # One scripted upsert per identity carrying its rows' ops in order: order kept, batch idempotent. The
        # script applies them, so here the cells are only checked and joined, column-wise.
        failures, rows = profile_ops.checked(frame)
        if rows.is_empty():
            return failures, [], []
        inner = pl.col("ops").str.strip_chars(" \t\n\r")
        inner = inner.str.slice(1, inner.str.len_chars() - 2)
        grouped = rows.group_by("identity", maintain_order=True).agg(
            pl.col("ts").last(), pl.col("line"), inner.filter(inner.str.strip_chars(" \t\n\r") != "").alias("ops")
        )
        ids = [profile_id(account, identity) for identity in grouped["identity"].to_list()]
        head = pl.struct(pl.lit(self.profiles_index).alias("_index"), pl.Series("_id", ids)).struct.json_encode()
        # `changed` (exports): when this batch was written; a retry after a crash stamps the profile again.
        changed = pl.lit(int(time.time() * 1000)).alias("changed")
        params = pl.struct(pl.lit(account).alias("account"), "identity", "ts", changed).struct.json_encode()
        actions = grouped.select(
            pl.concat_str(
                pl.lit('{"update":'),
                head,
                pl.lit(
                    f'}}\n{{"scripted_upsert":true,"upsert":{{}},"script":{{"id":"{self.script_id}","params":{{"ops":['
                ),
                pl.col("ops").list.join(","),
                pl.lit("],"),
                params.str.slice(1),
                pl.lit("}}\n"),
            )
        ).to_series()
        return failures, actions.to_list(), grouped["line"].to_list()

    async def get_profile(self, account: str, identity: str) -> dict[str, Any] | None:
        try:
            response = await self._call(self.client.get, index=self.profiles_index, id=profile_id(account, identity))
        except NotFoundError:
            return None
        source = response["_source"]
        return {"identity": identity, "properties": source.get("properties") or {}, "ts": iso_ms(int(source["ts"]))}

    async def list_events(self, account: str, identity: str, limit: int = 1000) -> list[dict[str, Any]]:
        try:
            # Reads come from people and scripts right after an import: make its last batch searchable.
            await self._call(self.client.indices.refresh, index=self.events_alias)
            response = await self._call(
                self.client.search,
                index=self.events_alias,
                query={"bool": {"filter": [{"term": {"account": account}}, {"term": {"identity": identity}}]}},
                sort=[{"ts": "asc"}, {"line": "asc"}],
                size=min(limit, 10_000),
                source_includes=["name", "ts", "properties"],
            )
        except NotFoundError:  # no event stored yet: the alias does not exist
            return []
        return [
            {
                "name": hit["_source"]["name"],
                "ts": iso_ms(int(hit["_source"]["ts"])),
                "properties": hit["_source"].get("properties") or {},
            }
            for hit in response["hits"]["hits"]
        ]

    async def health(self) -> str | None:
        try:
            # Short: /healthz must answer even when Elasticsearch hangs instead of refusing.
            await self.client.options(request_timeout=_HEALTH_TIMEOUT).info()
        except (ConnectionError, ConnectionTimeout) as exc:
            return f"elasticsearch unreachable at {self.url}: {_short(exc)}"
        except ApiError as exc:
            return f"elasticsearch at {self.url} answered {exc.meta.status} {exc.error}"
        return None


def _chunks(actions: list[str]) -> Iterator[list[int]]:
    """Indices of `actions` in requests of at most _CHUNK_ACTIONS actions and about _CHUNK_BYTES."""
    chunk: list[int] = []
    size = 0
    for index, action in enumerate(actions):
        if chunk and (len(chunk) >= _CHUNK_ACTIONS or size + len(action) > _CHUNK_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(index)
        size += len(action)
    if chunk:
        yield chunk


def _item_error(result: dict[str, Any]) -> str:
    error = result.get("error") or {}
    if isinstance(error, dict):
        reason = error.get("reason") or error.get("type") or "unknown error"
        cause = error.get("caused_by")
        while isinstance(cause, dict) and cause.get("caused_by"):  # the innermost cause says what was wrong
            cause = cause["caused_by"]
        if isinstance(cause, dict) and cause.get("reason") and cause["reason"] not in reason:
            reason = f"{reason}: {cause['reason']}"
    else:
        reason = str(error)
    return f"Elasticsearch refused the row ({result.get('status')}): {reason}"


def _short(exc: Exception) -> str:
    # elastic_transport's str() is only "Connection error"; .message has the cause ("Cannot connect to host ...").
    text = str(getattr(exc, "message", "") or exc)
    return text.splitlines()[0][:200] if text else type(exc).__name__
