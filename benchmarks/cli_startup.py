"""Wall time of `langclip --help` against `python -c "import transformers"` (and `import langclip`), median of 5.

    python benchmarks/cli_startup.py
"""

import statistics
import subprocess
import sys
import time

COMMANDS = {
    "langclip --help": [sys.executable, "-m", "langclip.cli", "--help"],
    'python -c "import transformers"': [sys.executable, "-c", "import transformers"],
    'python -c "import langclip"': [sys.executable, "-c", "import langclip"],
}


def seconds(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    times = {name: statistics.median(seconds(command) for _ in range(5)) for name, command in COMMANDS.items()}
    base = times['python -c "import transformers"']
    print("| command | s (median of 5) | vs import transformers |\n| --- | --: | --: |")
    for name, value in times.items():
        print(f"| {name} | {value:.3f} | {value / base:.2f}x |")


if __name__ == "__main__":
    main()
