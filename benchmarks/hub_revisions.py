"""The revisions a run pushes with `hub.push_every`: the demo trained against a Hub on 127.0.0.1.

    python -m benchmarks.hub_revisions [--recipe demo] [--every 500] [--output_dir out/demo_revisions] [--json FILE]

Starts the tests' local Hub (tests/fake_hub.py: the endpoints huggingface_hub calls, repos kept in memory), runs
`accelerate launch train_mlm.py RECIPE --hub.repo_id demo-org/NAME --hub.push_every N` against it (the store the
demo prepared is reused), then lists every branch that arrived: its files and bytes, and for revisions the phase,
step, tokens seen and held-out loss from the revision.json that arrived with it. The demo takes about 15 minutes
on 2 cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from benchmarks.common import ROOT, arguments, markdown_table, write_json

sys.path.insert(0, str(ROOT / "tests"))  # the local Hub the tests use

TOKEN = "hf_BenchmarkToken000000000000"


def main(argv=None):
    parser = arguments(__doc__)
    parser.add_argument("--recipe", default="demo")
    parser.add_argument("--every", type=int, default=500, help="hub.push_every: optimizer steps")
    parser.add_argument("--output_dir", default="out/demo_revisions")
    args = parser.parse_args(argv)
    from fake_hub import FakeHub

    repo = f"demo-org/{args.recipe}-revisions"
    with FakeHub(TOKEN) as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN, "HF_HUB_OFFLINE": "0"}
        command = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "train_mlm.py",
            args.recipe,
            "--output_dir",
            args.output_dir,
            "--hub.repo_id",
            repo,
            "--hub.push_every",
            str(args.every),
        ]
        started = time.monotonic()
        subprocess.run(command, cwd=ROOT, env=env, check=True)
        wall = time.monotonic() - started
        rows = []
        for branch in sorted(hub.repos[repo]["branches"]):
            files = hub.files(repo, branch)
            record = json.loads(files["revision.json"]) if "revision.json" in files else {}
            rows.append(
                {
                    "branch": branch,
                    "files": len(files),
                    "bytes": sum(len(v) for v in files.values()),
                    "phase": record.get("phase", ""),
                    "step": record.get("step", ""),
                    "run step": record.get("run_step", ""),
                    "tokens seen": f"{record['tokens_seen']:,.0f}" if record else "",
                    "held-out loss": f"{record['held_out_loss']:.4f}" if record else "",
                }
            )
    print(f"\n{repo} after `{' '.join(command[2:])}` ({wall:.0f} s):\n")
    print(markdown_table(list(rows[0]), [list(row.values()) for row in rows]))
    write_json(args.json, {"wall_s": wall, "branches": rows})


if __name__ == "__main__":
    main()
