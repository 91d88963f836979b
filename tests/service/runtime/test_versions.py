from service.runtime.versions import is_version, version_key


def test_only_major_minor_patch_with_an_optional_pre_release_is_a_version():
    for name in ("0.0.1", "1.2.0", "10.20.30", "1.3.0-rc1", "1.3.0-rc.1", "0.0.0-dev.20261127130000"):
        assert is_version(name), name
    for name in (
        "candidate",
        "1.2.0.bak",
        "1.2",
        "v1.2.0",
        "01.2.0",
        "1.2.0-",
        "1.2.0-rc..1",
        "1.2.0+build",
        "",
        "1\u0661.0.0",
    ):
        assert not is_version(name), name


def test_semver_precedence():
    ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.1",
        "1.9.0",
        "1.10.0",
        "2.0.0-dev.1",
    ]
    assert sorted(reversed(ordered), key=version_key) == ordered
