"""Reading exports out of the Elasticsearch sink: scrolls over the account's events (by `ingested`, the ingest time
the sink sets at bulk time) or profiles (all, or by `changed`, the time of their last write), a batch per page, with the sync client in the export thread."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import polars as pl
from elastic_transport import ConnectionError, ConnectionTimeout, Transport
from elasticsearch import ApiError, Elasticsearch, NotFoundError

from daemon.config import ElasticsearchConfig
from daemon.exports.selection import EVENT_SCHEMA, PROFILE_SCHEMA, SelectionError

_KEEP_ALIVE = "5m"
_MAX_PAGE = 10_000  # Elasticsearch's default max_result_window


class _CompatTransport(Transport):
    """As the sink's: elasticsearch-py 9 asks for `compatible-with=9`, which Elasticsearch 8 refuses."""

    def perform_request(self, method: str, target: str, *, headers: Any = None, **kwargs: Any) -> Any:
        if headers:
            headers = headers.copy()
            for name in ("accept", "content-type"):
                value = headers.get(name)
                if value and "compatible-with=9" in value:
                    headers[name] = value.replace("compatible-with=9", "compatible-with=8")
        return super().perform_request(method, target, headers=headers, **kwargs)


class ElasticsearchSelection:
    def __init__(self, config: ElasticsearchConfig, settle: float = 120.0) -> None:
        self.config = config
        self.settle = settle
        self.events_alias = f"{config.index_prefix}-events"
        self.profiles_index = f"{config.index_prefix}-profiles"
        auth = (config.username, config.password) if config.username else None
        self.client = Elasticsearch(
            config.url,
            basic_auth=auth,
            request_timeout=config.request_timeout,
            max_retries=2,
            retry_on_timeout=True,
            transport_class=_CompatTransport,
        )

    def _call(self, method: Any, **kwargs: Any) -> Any:
        try:
            return method(**kwargs)
        except NotFoundError:
            raise
        except (ConnectionError, ConnectionTimeout) as exc:
            reason = str(getattr(exc, "message", "") or exc).splitlines()[0][:200]
            raise SelectionError(f"elasticsearch unreachable at {self.config.url}: {reason}") from None
        except ApiError as exc:
            raise SelectionError(f"elasticsearch at {self.config.url} answered {exc.meta.status} {exc.error}") from None

    def watermark(self) -> dict[str, Any]:
        # Events ingested up to `settle` ago: any bulk request older than that has been indexed and refreshed.
        return {"seq": int((time.time() - self.settle) * 1000)}

    def _scroll(self, index: str, query: dict[str, Any], fields: list[str], batch_rows: int) -> Iterator[list[dict]]:
        try:
            self._call(self.client.indices.refresh, index=index)
            response = self._call(
                self.client.search,
                index=index,
                query=query,
                sort=["_doc"],
                size=min(batch_rows, _MAX_PAGE),
                scroll=_KEEP_ALIVE,
                source_includes=fields,
            )
        except NotFoundError:  # nothing stored yet: the alias or index does not exist
            return
        scroll_id = response.get("_scroll_id")
        try:
            while True:
                hits = response["hits"]["hits"]
                if not hits:
                    return
                yield [hit["_source"] for hit in hits]
                response = self._call(self.client.scroll, scroll_id=scroll_id, scroll=_KEEP_ALIVE)
                scroll_id = response.get("_scroll_id", scroll_id)
        finally:
            if scroll_id:
                # A scroll that cannot be cleared (gone already, cluster down) times out by itself.
                with contextlib.suppress(Exception):
                    self.client.clear_scroll(scroll_id=scroll_id)

    def events(
        self,
        account: str,
        names: tuple[str, ...],
        since_ms: int | None,
        low: dict[str, Any],
        high: dict[str, Any],
        batch_rows: int,
    ) -> Iterator[pl.DataFrame]:
        after, until = int(low.get("seq", 0)), int(high.get("seq", 0))
        window: list[dict[str, Any]] = [{"range": {"ingested": {"gt": after, "lte": until}}}]
        if after == 0:
            # Events stored before the sink recorded ingest times are in every export's first window.
            window.append({"bool": {"must_not": [{"exists": {"field": "ingested"}}]}})
        filters: list[dict[str, Any]] = [
            {"term": {"account": account}},
            {"bool": {"should": window, "minimum_should_match": 1}},
        ]
        if names:
            filters.append({"terms": {"name": list(names)}})
        if since_ms is not None:
            filters.append({"range": {"ts": {"gte": since_ms}}})
        fields = ["identity", "name", "ts", "properties", "ingested"]
        for page in self._scroll(self.events_alias, {"bool": {"filter": filters}}, fields, batch_rows):
            yield pl.DataFrame(
                {
                    "seq": [int(doc.get("ingested") or 0) for doc in page],
                    "identity": [doc["identity"] for doc in page],
                    "name": [doc["name"] for doc in page],
                    "ts": [_ms(doc["ts"]) for doc in page],
                    "properties": [json.dumps(doc.get("properties") or {}, ensure_ascii=False) for doc in page],
                },
                schema=EVENT_SCHEMA,
            )

    def profiles(self, account: str, batch_rows: int) -> Iterator[pl.DataFrame]:
        query = {"bool": {"filter": [{"term": {"account": account}}]}}
        for page in self._scroll(self.profiles_index, query, ["identity", "ts", "properties"], batch_rows):
            yield _profile_frame(page)

    def profiles_watermark(self, account: str) -> dict[str, Any]:
        # As for events: profiles written up to `settle` ago have been indexed and refreshed.
        return self.watermark()

    def changed_profiles(
        self, account: str, low: dict[str, Any], high: dict[str, Any], batch_rows: int
    ) -> Iterator[pl.DataFrame]:
        after, until = int(low.get("seq", 0)), int(high.get("seq", 0))
        window: list[dict[str, Any]] = [{"range": {"changed": {"gt": after, "lte": until}}}]
        if after == 0:
            # Profiles last written before the sink recorded changes are in every export's first window.
            window.append({"bool": {"must_not": [{"exists": {"field": "changed"}}]}})
        query = {
            "bool": {
                "filter": [{"term": {"account": account}}, {"bool": {"should": window, "minimum_should_match": 1}}]
            }
        }
        for page in self._scroll(self.profiles_index, query, ["identity", "ts", "properties"], batch_rows):
            yield _profile_frame(page)

    def stored_names(self, account: str, names: tuple[str, ...]) -> set[str]:
        try:
            response = self._call(
                self.client.search,
                index=self.events_alias,
                size=0,
                query={"bool": {"filter": [{"term": {"account": account}}, {"terms": {"name": list(names)}}]}},
                aggs={"names": {"terms": {"field": "name", "size": max(len(names), 1)}}},
            )
        except NotFoundError:
            return set()
        return {bucket["key"] for bucket in response["aggregations"]["names"]["buckets"]}

    def close(self) -> None:
        self.client.close()


def _profile_frame(page: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "identity": [doc["identity"] for doc in page],
            "ts": [_ms(doc["ts"]) for doc in page],
            "properties": [json.dumps(doc.get("properties") or {}, ensure_ascii=False) for doc in page],
        },
        schema=PROFILE_SCHEMA,
    )


def _ms(value: Any) -> int:
    if isinstance(value, int | float):
        return int(value)
    from datetime import datetime

    return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() * 1000)
