"""Wall time of `langclip --help` and of `langclip <command> --help` for every command, against
`python -c "import transformers"` (and `import langclip`) in the same run: median of 5 runs each, as a markdown table.

    python benchmarks/cli_startup.py
"""

import statistics
import subprocess
import sys
import time

from langclip.cli import COMMANDS as CLI_COMMANDS

RUNS = 5
BASELINE = 'python -c "import transformers"'
COMMANDS = {
    "langclip --help": [sys.executable, "-m", "langclip.cli", "--help"],
    **{f"langclip {name} --help": [sys.executable, "-m", "langclip.cli", name, "--help"] for name in CLI_COMMANDS},
    BASELINE: [sys.executable, "-c", "import transformers"],
    'python -c "import langclip"': [sys.executable, "-c", "import langclip"],
}


def seconds(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    times = {name: statistics.median(seconds(command) for _ in range(RUNS)) for name, command in COMMANDS.items()}
    base = times[BASELINE]
    print(f"| command | s (median of {RUNS}) | vs import transformers |\n| --- | --: | --: |")
    for name, value in times.items():
        print(f"| {name} | {value:.3f} | {value / base:.2f}x |")


if __name__ == "__main__":
    main()
