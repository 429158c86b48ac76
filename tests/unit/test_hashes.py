"""The stored hashes (event ids, the sqlite sink's identity hashes) are the same with polars-hash's plugin and
without it: a daemon that falls back to xxhash (the plugin fails to load) finds and de-duplicates what one with
the plugin stored."""

import polars as pl
import pytest
import xxhash

from manifests import hashes

TEXTS = ["user-1", "Zoë", "", "\x00", "日本語", "a" * 5_000, "\U0001f600 emoji", "line\nbreak"]


def test_the_plugin_loads_here() -> None:
    assert hashes._plh is not None


@pytest.mark.parametrize("plugin", [True, False])
def test_hashes_match_xxhash_with_and_without_the_plugin(monkeypatch: pytest.MonkeyPatch, plugin: bool) -> None:
    if not plugin:
        monkeypatch.setattr(hashes, "_plh", None)
    frame = pl.DataFrame({"text": TEXTS})
    short = frame.select(hashes.signed_xxh3_64("text")).to_series().to_list()
    long = hashes.event_ids(frame["text"]).to_list()
    unsigned = [xxhash.xxh3_64_intdigest(text.encode()) for text in TEXTS]
    assert short == [value - 2**64 if value >= 2**63 else value for value in unsigned]
    assert short == [hashes.signed_xxh3_64_of(text) for text in TEXTS]
    assert any(value < 0 for value in short) and any(value > 0 for value in short)
    assert long == [str(xxhash.xxh3_128_intdigest(text.encode())) for text in TEXTS]
