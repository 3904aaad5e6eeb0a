"""build/action.py: keys depend on content only, canonically."""

from build.action import Action, canonical_json


def test_key_is_canonical_and_order_independent():
    a = Action(mode="docker", component="etcd", platform="linux/amd64", inputs={"b": 1, "a": [1, 2]})
    b = Action(mode="docker", component="etcd", platform="linux/amd64", inputs={"a": [1, 2], "b": 1})
    assert a.key() == b.key() and len(a.key()) == 64
    assert canonical_json({"b": 1, "a": 2}) == b'{"a":2,"b":1}'


def test_every_field_changes_the_key():
    base = dict(mode="docker", component="etcd", platform="linux/amd64", inputs={"image": "sha256:1"})
    keys = {Action(**base).key()}
    for field, value in [("mode", "fetch"), ("component", "kine"), ("platform", "linux/arm64"),
                         ("inputs", {"image": "sha256:2"}), ("inputs", {"image": "sha256:1", "fips": True})]:
        keys.add(Action(**{**base, field: value}).key())
    assert len(keys) == 6


def test_salt_invalidates_everything(monkeypatch):
    a = Action(mode="fetch", component="x", platform="linux/amd64", inputs={})
    k1 = a.key()
    monkeypatch.setenv("MKE_CACHE_SALT", "other")
    assert a.key() != k1
