"""The one cache folder rule (explicit folder, SST_CACHE_DIR, XDG/home, temp) and cache keys."""

from pathlib import Path

from sst.data.cache import cache_key, default_cache_dir


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SST_CACHE_DIR", str(tmp_path / "env"))
    assert default_cache_dir("") == tmp_path / "env"
    assert default_cache_dir(str(tmp_path / "arg")) == tmp_path / "arg"
    monkeypatch.delenv("SST_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)

    def no_home():
        raise RuntimeError("Could not determine home directory")

    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    assert default_cache_dir("").name == "sst-cache"


def test_explicit_folder_wins_and_paths_are_accepted(monkeypatch, tmp_path):
    monkeypatch.setenv("SST_CACHE_DIR", str(tmp_path / "env"))
    assert default_cache_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir("~/c") == tmp_path / "home" / "c"


def test_xdg_cache_home_then_home(monkeypatch, tmp_path):
    monkeypatch.delenv("SST_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "sst"
    assert (tmp_path / "xdg" / "sst").is_dir()
    monkeypatch.setenv("XDG_CACHE_HOME", "")  # empty counts as unset
    monkeypatch.setattr(Path, "home", staticmethod(lambda: tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "sst"


def test_cache_key_is_short_stable_and_distinguishes_parts():
    assert cache_key("a", 1) == cache_key("a", 1)
    assert len(cache_key("a", 1)) == 16
    assert cache_key("a", 1) != cache_key("a", 2) != cache_key(("a", 1))
