"""Generated feature bags for every task of docs/tasks.md: the examples' data, in seconds.

Writes, for each task asked for, ``OUT/<task>/features/planted/*.h5`` (real bag files, 8
features per tile, on a square tile grid) and ``OUT/<task>/labels.csv`` in that task's labels
format, from :func:`wsi_mil.synthetic.bags.iter_task_bags`, whose answer is known: survival
times and regression targets depend on each bag's planted lesion burden (plus noise and, for
survival, censoring), the multilabel bags plant two independent lesion types, the subtype bags
(``luad``/``lusc``) plant their own class's lesion type in every bag (no class is lesion-free).
The sizes are those of ``tests/wsi_mil/mil/test_train_tasks.py``, whose figures these are.

    python scripts/task_bags.py --out tasks [--tasks survival regression multilabel subtypes]
        [--patients]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from wsi_mil.synthetic.bags import TASK_COLUMNS, iter_task_bags, write_planted_bags

#: (bags, tiles per bag (range), features per tile) per task, as the task tests use
SIZES = {
    "survival": (60, (16, 32), 8),
    "regression": (60, (24, 48), 8),
    "multilabel": (60, (16, 32), 8),
    "subtypes": (36, (12, 12), 8),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--tasks", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--patients",
        action="store_true",
        help="two slides per patient sharing the patient's numbers (for --bag-level patient)",
    )
    args = parser.parse_args(argv)
    per_patient = 2 if args.patients else 1
    for task in args.tasks:
        n, tiles, dim = SIZES[task]
        bags = list(
            iter_task_bags(task, n, tiles, dim, seed=args.seed, slides_per_patient=per_patient)
        )
        features, labels = write_planted_bags(
            args.out / task, bags, task=task, with_tile_labels=True, slides_per_patient=2
        )
        print(
            f"{task}: {len(bags)} bags in {features}, labels {labels} "
            f"(columns {', '.join(TASK_COLUMNS[task])})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
