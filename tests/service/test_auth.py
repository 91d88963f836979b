import hashlib
import statistics
import time

import pytest

from service.auth import KeyConfigError, KeyStore, new_key, parse_entry


def entry(key_id: str, key: str, revoked: bool = False) -> str:
    return f"{key_id}:sha256:{hashlib.sha256(key.encode()).hexdigest()}" + (":revoked" if revoked else "")


@pytest.fixture
def store() -> KeyStore:
    return KeyStore.from_settings(",".join([entry("portal-a", "alpha-key"), entry("old", "old-key", True)]), None)


def test_a_valid_key_passes_with_its_key_id(store):
    verdict = store.check("Bearer alpha-key")
    assert verdict.allowed and verdict.key_id == "portal-a"
    assert store.check("bearer   alpha-key ").allowed  # scheme is case-insensitive, spaces trimmed


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        (None, "needs an API key"),
        ("", "needs an API key"),
        ("Basic YWxhZGRpbjpvcGVuc2VzYW1l", "'Bearer <key>'"),
        ("Bearer", "'Bearer <key>'"),
        ("Bearer wrong-key", "not valid"),
        ("Bearer alpha-ke", "not valid"),
    ],
)
def test_missing_malformed_and_wrong_keys_are_refused_without_a_key_id(store, header, fragment):
    verdict = store.check(header)
    assert not verdict.allowed and verdict.key_id is None and fragment in verdict.reason


def test_a_revoked_key_is_known_but_refused(store):
    verdict = store.check("Bearer old-key")
    assert not verdict.allowed and verdict.key_id == "old" and "revoked" in verdict.reason


def test_keys_file_with_comments_and_env_entries_combine(tmp_path):
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# portals\n{entry('portal-b', 'beta-key')}\n\n")
    store = KeyStore.from_settings(entry("portal-a", "alpha-key"), keys_file)
    assert store.check("Bearer beta-key").key_id == "portal-b"
    assert store.check("Bearer alpha-key").key_id == "portal-a"
    assert not KeyStore.from_settings("", None).enabled


@pytest.mark.parametrize("content", ["", "\n\n", "# api keys\n# none yet\n"])
def test_a_key_file_without_an_entry_stops_the_start_instead_of_letting_everyone_in(tmp_path, content):
    keys_file = tmp_path / "api_keys"
    keys_file.write_text(content)
    with pytest.raises(KeyConfigError, match=r"api_keys holds no key entry"):
        KeyStore.from_settings("", keys_file)
    with pytest.raises(KeyConfigError, match="holds no key entry"):  # keys from the environment do not excuse it
        KeyStore.from_settings(entry("portal-a", "alpha-key"), keys_file)


def test_a_key_file_that_cannot_be_read_stops_the_start_with_its_name(tmp_path):
    with pytest.raises(KeyConfigError, match=r"cannot read the API key file .*missing \(No such file"):
        KeyStore.from_settings("", tmp_path / "missing")
    with pytest.raises(KeyConfigError, match=r"cannot read .*\(Is a directory\).*uid"):
        KeyStore.from_settings("", tmp_path)
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(KeyConfigError, match="UnicodeDecodeError"):
        KeyStore.from_settings("", binary)


@pytest.mark.parametrize(
    "bad",
    ["portal-a:alpha-key", "portal-a:sha256:1234", "bad id:sha256:" + "0" * 64, "x:md5:" + "0" * 64],
)
def test_malformed_entries_are_refused_at_start(bad):
    with pytest.raises(ValueError, match="must read"):
        parse_entry(bad)


def test_duplicate_key_ids_are_refused():
    with pytest.raises(ValueError, match="unique"):
        KeyStore.from_settings(f"{entry('a', 'k1')},{entry('a', 'k2')}", None)


def test_new_key_round_trips_and_is_random():
    key, stored = new_key("portal-c")
    store = KeyStore.from_settings(stored, None)
    assert store.check(f"Bearer {key}").key_id == "portal-c"
    assert key not in stored and new_key("portal-c")[0] != key


def test_comparison_time_does_not_depend_on_how_much_of_the_key_is_right(store):
    """Keys are hashed before a constant-time comparison with every entry, so a presented key that shares a long
    prefix with a real one takes as long as one that shares nothing. Medians of interleaved rounds, loose bound."""
    real = "alpha-key" + "x" * 55
    store = KeyStore.from_settings(entry("portal-a", real), None)
    near, far = "Bearer " + real[:-1] + "y", "Bearer " + "z" * len(real)
    rounds: dict[str, list[float]] = {"near": [], "far": []}
    for _ in range(30):
        for name, header in (("near", near), ("far", far)):
            t = time.perf_counter()
            for _ in range(300):
                store.check(header)
            rounds[name].append(time.perf_counter() - t)
    ratio = statistics.median(rounds["near"]) / statistics.median(rounds["far"])
    assert 0.7 < ratio < 1.4, ratio
