"""The rollout simulator's parts beyond the balanced, independent traffic of bench/simprom.py:
realistic traffic models (:mod:`.traffic`), the scenario families built from them (:mod:`.families`),
the report (:mod:`.report`) and the command line (:mod:`.options`). The command is still
``bench/simulate.py``."""
