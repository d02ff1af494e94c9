"""The process settings every service applies once it is built."""

import gc

from shared.runtime import GC_YOUNG_THRESHOLD, tune_garbage_collector


def test_tuning_freezes_what_exists_and_collects_the_young_generation_less_often() -> None:
    threshold = gc.get_threshold()
    try:
        built_at_start = [{"a": i} for i in range(100)]
        tune_garbage_collector()
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *threshold[1:])
        assert gc.get_freeze_count() >= len(built_at_start)
        # Out of the collector's reach: no longer among the objects it tracks.
        assert not any(o is built_at_start for o in gc.get_objects())
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
