"""The rollout simulator's parts beyond the balanced, independent traffic of bench/simprom.py:
realistic traffic models (:mod:`.traffic`), the scenario families built from them (:mod:`.families`),
the per-interval sums the dispersion estimator reads (:mod:`.bins`) and the report (:mod:`.report`).
The command is still ``bench/simulate.py``."""
