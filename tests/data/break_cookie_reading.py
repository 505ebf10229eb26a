"""A pytest plugin for one self-test: makes reading a response's cookie raise, as a bug or a response in a
shape nobody foresaw would, to show the smoke gate confines the damage to the check that step serves."""
from harness.smoke.probes import Exchange


def _explode(self: Exchange, name: str) -> str | None:
    raise RuntimeError("cookie jar exploded")


Exchange.cookie = _explode  # type: ignore[method-assign]
