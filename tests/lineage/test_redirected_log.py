"""A run redirected to a file reads like a log: one line per record (no 80-column wrapping, no
padding), progress as periodic lines (no carriage returns), none of the known noise warnings."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from .project_copy import subprocess_env

NOISE = ["register_new_resolver", "characters, which is not recommended", "Removed shared tensor",
         "--pipeline` is deprecated", "is deprecated and will be removed", "Add type hints to the `predict` method",
         "Loading data from", "Saving data to", "\x1b[", "is relative"]


def test_a_redirected_run_logs_plain_lines(trained_project: Path, tmp_path: Path):
    project = tmp_path / "project"
    shutil.copytree(trained_project, project, ignore=shutil.ignore_patterns("build", "notebooks", "mlruns"))
    log = tmp_path / "run.log"
    params = ",".join(["reward.defaults.training.progress_bar=true",
                       "policy.sft.training.progress_bar=true", "policy.sft.training.checkpoint_every=10"])
    with log.open("w") as out:  # stdout and stderr to a file, as `kedro run > run.log 2>&1`
        result = subprocess.run(
            [sys.executable, "-m", "kedro", "run", "--env", "ci", "--pipelines", "reward,policy",
             "--namespaces", "reward_bt,policy_sft", "--params", params],
            cwd=project, env=subprocess_env(), stdout=out, stderr=subprocess.STDOUT, timeout=900,
        )
    text = log.read_text()
    assert result.returncode == 0, text[-3000:]
    print(f"redirected log: {len(text.encode())} bytes, {len(text.splitlines())} lines")
    assert "\r" not in text
    lines = text.splitlines()
    padded = [line for line in lines if line != line.rstrip() or re.match(r"^ {10,}\S", line)]
    assert not padded, f"wrapped or padded lines (rich layout): {padded[:5]}"
    for noise in NOISE:
        assert noise not in text, f"noise in the log: {noise!r}"
    assert any(re.search(r"reward_bt train 8/8 \(100%\) loss=\d", line) for line in lines), "no final progress line of reward_bt"
    assert any(re.search(r"policy_sft train 20/20 \(100%\) loss=\d", line) for line in lines), "no final progress line of policy_sft"
    assert any(line.endswith("Completed node: reward_bt.train_reward_model") for line in lines)  # node lines stay
    # start-up lines before the slow imports, then the check's result
    starts = [i for i, line in enumerate(lines) if line.endswith(("loading the pipelines...", "(importing torch first)..."))
              or re.search(r"prefalign: parameters of (reward, policy|policy, reward) checked$", line)]
    assert len(starts) == 3 and starts == sorted(starts) and starts[0] < 10, [lines[i] for i in starts]
    # The report paths printed at the end are whole paths (not broken across lines).
    start = next(i for i, line in enumerate(lines) if line.endswith("reports of this run:"))
    reported = [line.split(": ", 1)[1] for line in lines[start + 1:] if line.startswith("  ")]
    assert reported and all(Path(path).is_file() for path in reported), reported
