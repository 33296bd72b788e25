"""Studies: train models on healthy data, score them on lesion data, write tables, figures and a report.

A study is one concept with one runner (see ``docs/ARCHITECTURE.md``):

- :mod:`~uadlab.studies.spec`: what a study is: :class:`RunSpec` (one run), :class:`DataSource` (one
  data set) and the :class:`Study` protocol (its runs for a seed, scoring one run, collecting).
- :mod:`~uadlab.studies.context`: the rules every study shares: data, train-or-resume,
  evaluate-or-reuse, threshold sources.
- :mod:`~uadlab.studies.bengs2021`, :mod:`~uadlab.studies.lambert2021`,
  :mod:`~uadlab.studies.behrendt2024`, :mod:`~uadlab.studies.zoo` (every model family in 2D and 3D): the
  built-in studies; :mod:`~uadlab.studies.study_file`: the same
  protocols on the data sets of a YAML file.
- :mod:`~uadlab.studies.tables`: tables over seeds, paired intervals, figures.
- :mod:`~uadlab.studies.executors`: where runs execute (here, several at once, SLURM via submitit).
- :mod:`~uadlab.studies.runner`: :func:`run_study` and :func:`plan_study` (``uadlab reproduce``).

Adding a study: one module with a :class:`Study` subclass (constructed as ``Study(sources, experiments,
**options)``), one entry in :data:`~uadlab.studies.study_file.PROTOCOLS` (which makes it a built-in
``--study NAME`` and a study file's ``protocol``, once the file schema's ``protocol`` lists it), its tests.
"""

from uadlab.studies.behrendt2024 import Behrendt2024
from uadlab.studies.bengs2021 import Bengs2021
from uadlab.studies.context import StudyContext
from uadlab.studies.lambert2021 import Lambert2021
from uadlab.studies.runner import PHANTOM_MANIFEST, STUDIES, make_study, plan_study, run_study
from uadlab.studies.spec import DataSource, RunSpec, Study
from uadlab.studies.study_file import PHANTOM_STUDY, check_study, is_study_file, load_study
from uadlab.studies.zoo import Zoo

__all__ = ["run_study", "plan_study", "make_study", "STUDIES", "PHANTOM_MANIFEST", "PHANTOM_STUDY", "Study",
           "RunSpec", "DataSource", "StudyContext", "Bengs2021", "Lambert2021", "Behrendt2024", "Zoo", "load_study",
           "check_study", "is_study_file"]
