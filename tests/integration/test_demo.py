from io import StringIO

from rich.console import Console


def test_demo_walks_a_to_released_and_halts_b(tmp_path):
    from conductor.demo import run_demo

    buf = StringIO()
    code = run_demo(Console(file=buf, width=160), speed=0, workdir=tmp_path)
    text = buf.getvalue()
    assert code == 0, text[-3000:]
    assert "music-android/8.8.0 paused for approval" in text and "fingerprint" in text
    # B's halt is the statistical gate's, and its card says by how much and how sure.
    assert (
        "music-android/8.9.0 halted by the robot" in text and "regressed +0." in text and "99% sure it is worse by more than 0.25pp" in text
    )
    assert "A: released, B: halted (halted from rollout_1)" in text
    # The robot's other hands, against the repository's contract fakes of GitHub and Unleash.
    assert "cut_branch done    github: branch release/8.8.0 created" in text and "github: branch release/8.9.0 created" in text
    assert "kill_switch done   unleash: new_player, lyrics_v2 off in production" in text
    assert "at Unleash: new_player off, lyrics_v2 off" in text
    assert "Morning digest for music-android" in text and "1. music-android/8.9.0 halted: halted at rollout_1" in text
