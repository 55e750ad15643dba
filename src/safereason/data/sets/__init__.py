"""The registered prompt sets: one module per benchmark family, each with its citation, pinned source and parser.

This module only imports the sets and registers them, in the order ``safereason list`` shows their families.
"""

from safereason.data.sets import (
    advbench,
    aime2024,
    figstep,
    harmbench,
    humaneval,
    jailbreakbench,
    mm_safetybench,
    rainbow,
    smoke,
    strongreject,
    tars,
    tars_adversarial,
    utility,
    wildjailbreak,
    xstest,
)
from safereason.data.spec import BENCHMARKS

for _spec in (
    smoke.SPEC, *strongreject.SPECS, *harmbench.SPECS, xstest.SPEC, *jailbreakbench.SPECS, advbench.SPEC,
    *utility.SPECS, aime2024.SPEC, humaneval.SPEC, wildjailbreak.SPEC, *figstep.SPECS, *mm_safetybench.SPECS,
    *tars.SPECS, tars_adversarial.SPEC, rainbow.SPEC,
):
    BENCHMARKS.add(_spec.name, _spec)
