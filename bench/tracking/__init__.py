"""MLflow: the store, the runs of cells, their dataset inputs and notes; the other stages call
these as `tracking.<name>`."""

from bench.tracking.inputs import (  # noqa: F401
    INPUT_ATTEMPTS,
    ImageSplit,
    dataset_inputs,
    dataset_source,
    log_inputs,
)
from bench.tracking.notes import (  # noqa: F401
    HEADLINE_METRICS,
    SUMMARY_METRICS,
    format_value,
    run_note,
    set_note,
)
from bench.tracking.runs import (  # noqa: F401
    MAX_BATCH,
    create_cell_run,
    describe_cell_run,
    diverged,
    fail,
    finish,
    flatten,
    is_held,
    last_logged_step,
    log_metrics,
    log_model,
    reopen,
    search_parent_run,
    set_tag,
    start_cell_run,
)
from bench.tracking.store import (  # noqa: F401
    DEFAULT_TRACKING_URI,
    SERVER_PROBE_SECONDS,
    TrackingError,
    absolute_uri,
    connect,
    experiment_id,
    experiment_tags,
    failed_run,
    finished_run,
    latest_run,
    resolve_uri,
    resumable,
    running_runs,
    runs_view,
    runs_view_url,
)
