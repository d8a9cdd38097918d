"""Everything around the library, a subpackage per job: training, data, evaluation, benchmark, checkpoints, sampling."""
