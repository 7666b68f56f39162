"""The demo's GitHub and Unleash: the repository's contract fakes, real HTTP servers on 127.0.0.1.

`make demo` runs from a checkout, where tests/fakes holds the contract fakes the adapters are
tested against (real HTTP servers that check every request against the vendors' documented
shapes). The demo connects its track to them, so the branch cut on branch day really creates a
ref through the GitHub adapter and the robot's halt really turns the kill-switch flags off through
the Unleash adapter. Outside a checkout (an installed package without tests/) the demo says so and
runs without them: those actions are then skipped, with the reason, like on any track that has
nothing connected.
"""

from __future__ import annotations

import importlib
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

GH_TOKEN = "ghp_faketoken0001"
UNLEASH_TOKEN = "*:*.unleash-admin-fake-0001"
KILL_SWITCH = ("new_player", "lyrics_v2")


class DemoHands:
    """The fakes, running; `connections` are what the demo's track connects to."""

    def __init__(self, stack: ExitStack, server: Any, github: Any, unleash: Any):
        self.stack, self.server, self.github, self.unleash = stack, server, github, unleash

    @classmethod
    def start(cls) -> DemoHands | None:
        """Start the fakes, or None outside a checkout."""
        root = Path(__file__).resolve().parents[1]
        if not (root / "tests" / "fakes" / "server.py").exists():
            return None
        if str(root) not in sys.path:
            sys.path.append(str(root))
        # Imported by name: the fakes are test code, not part of the package (nor of its type checks).
        fakes = {name: importlib.import_module(f"tests.fakes.{name}") for name in ("server", "github", "unleash")}
        stack = ExitStack()
        server = stack.enter_context(fakes["server"].FakeServer())
        github = fakes["github"].GitHubFake(server, owner="spotify", repo="music-android", token=GH_TOKEN)
        unleash = fakes["unleash"].UnleashFake(server, token=UNLEASH_TOKEN)
        for flag in KILL_SWITCH:
            unleash.add_feature(flag, production=True)
        os.environ.setdefault("DEMO_GITHUB_TOKEN", GH_TOKEN)
        os.environ.setdefault("DEMO_UNLEASH_TOKEN", UNLEASH_TOKEN)
        return cls(stack, server, github, unleash)

    def connections(self) -> dict[str, dict[str, Any]]:
        return {
            "vcs": {"kind": "github", "owner": "spotify", "repo": "music-android", "base_url": self.server.url,
                    "token": {"env": "DEMO_GITHUB_TOKEN"}},
            "flags": {"kind": "unleash", "base_url": self.server.url, "token": {"env": "DEMO_UNLEASH_TOKEN"},
                      "environment": "production", "kill_switch": list(KILL_SWITCH)},
        }  # fmt: skip

    def flags(self) -> str:
        return ", ".join(f"{f} {'on' if self.unleash.features[f]['environments']['production']['enabled'] else 'off'}" for f in KILL_SWITCH)

    def close(self) -> None:
        self.stack.close()
