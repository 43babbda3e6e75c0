"""The study: a grid of datasets x label sources x students x training sizes x seeds, run, resumed and summarised.

Everything expensive is kept in the output folder and never redone:

- teacher records go to ``annotations.sqlite`` as they are made (annotate once, train many: every cell that
  needs a teacher's labels reads the same records), and a table per teacher goes to ``teachers/``;
- each finished student run goes to ``runs/<run id>/`` (written to a temporary folder and renamed, so a run
  folder is complete or absent). The run id is a hash of the cell's config (data, split, size, label source,
  student recipe, seed): an unchanged cell is never retrained, a changed one gets a new id.

So a crash or Ctrl-C loses at most the run in progress, and the same command resumes. Runs are trained by an
executor (``local``: one after the other; ``ray``: each run a Ray task); the driver alone writes to the output
folder, so both give the same files and report.

The passes live in one module each: ``grid`` (datasets, label sources, cells and run ids), ``labels`` (teacher
records and each cell's training labels), ``executors`` (local and Ray) and ``runner`` (dry run, run, summary).
"""

from .executors import EXECUTORS, local_executor, ray_executor, train_cell
from .grid import (
    Cell,
    LabelSource,
    Prepared,
    blocked_cells,
    grid_cells,
    is_done,
    label_sources,
    nested_order,
    prepare_all,
    prepare_checked,
    prepare_dataset,
    sizes_for,
    teacher_needs,
)
from .labels import (
    TrainingData,
    annotate,
    check_failures,
    prompt_for,
    teacher_table_path,
    training_data,
)
from .runner import (
    StudyPlan,
    demo_config,
    dry_run,
    run_study,
    training_jobs,
    versions,
    write_run,
)

__all__ = [
    "EXECUTORS", "Cell", "LabelSource", "Prepared", "StudyPlan", "TrainingData", "annotate", "annotate_all",
    "blocked_cells",
    "check_failures", "demo_config", "dry_run", "grid_cells", "is_done", "label_sources", "local_executor",
    "nested_order", "prepare_all", "prepare_checked", "prepare_dataset", "prompt_for", "ray_executor", "run_study",
    "sizes_for", "teacher_needs", "teacher_table_path", "train_cell", "training_data", "training_jobs", "versions",
    "write_run",
]
